"""``[daemon] workers = N``: what each of the N processes runs, as a config of its own.

Every worker runs the whole pipeline on its share of the traffic: the
listeners are shared (``obsd.daemon.sockets``), each worker has its own output
queues, spools and lock (worker 0 in ``data_dir``, worker N in
``data_dir/worker-N``).  What cannot be split is StatsD: a name's samples may
reach any worker (``SO_REUSEPORT`` spreads by sender), and two workers flushing
the same name would overwrite each other in Graphite.  So, as in the fleet
(``docs/fleet-statsd.rst``), workers 1..N-1 send each interval's *partial
aggregates* to worker 0 over a private relay on 127.0.0.1, and worker 0 merges
them with its own traffic and flushes the one result.  ``for_worker`` turns
the user's config into a worker's: the statsd inputs' modes, the private relay
output (a disk buffer: nothing a worker aggregated is lost while worker 0
restarts) and input, and the private HTTP listener peers use to sum
``/status``, ``/metrics`` and the tail.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from obsd.config.model import ObsdConfig

#: the private relay between workers: the output on workers > 0, the input on worker 0
RELAY = "_workers"
#: the environment variable a worker process reads its role from
ENVIRON = "OBSD_WORKER"


@attrs.frozen
class WorkerRole:
    """Which worker this process is, and how to reach the others."""

    index: int
    count: int
    #: each worker's private HTTP port on 127.0.0.1, by index
    ports: tuple[int, ...]
    #: the bearer token of the private relay (new for every start)
    token: str
    #: listener name (``obsd.net.shared.key``) -> inherited descriptor (workers > 0)
    fds: dict[str, int] = attrs.field(factory=dict)
    #: the parent's log format, so every worker's lines look alike
    log_format: str = "json"
    #: statsd inputs whose samples worker 0 merges (filled in by ``for_worker``)
    merged: tuple[str, ...] = ()
    #: statsd inputs in ``mode = "partials"`` (an agent's): their partials leave as configured
    agents: tuple[str, ...] = ()

    @property
    def private_listen(self) -> str:
        """This worker's private HTTP listener (peers ask it for its numbers)."""
        return f"tcp:{self.ports[self.index]}:interface=127.0.0.1"

    def peer_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports[index]}"

    def to_json(self) -> str:
        return json.dumps(attrs.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerRole:
        raw = json.loads(text)
        for key in ("ports", "merged", "agents"):
            raw[key] = tuple(raw[key])
        return cls(**raw)


def merging_statsd(config: ObsdConfig) -> list[str]:
    """The statsd inputs whose flush needs every worker's samples (all but agent-mode ones)."""
    return sorted(
        name
        for name, cfg in config.inputs.items()
        if cfg.type == "statsd" and getattr(cfg, "mode", "flush") == "flush"
    )


def for_worker(config: ObsdConfig, role: WorkerRole) -> ObsdConfig:
    """The config worker ``role.index`` runs (``config`` as the user wrote it)."""
    from obsd.inputs.relay import AgentToken
    from obsd.inputs.relay import Config as RelayInputConfig
    from obsd.outputs.relay import Config as RelayOutputConfig

    inputs: dict[str, Any] = dict(config.inputs)
    outputs: dict[str, Any] = dict(config.outputs)
    merged = merging_statsd(config)
    agents = sorted(
        n for n, c in config.inputs.items() if c.type == "statsd" and n not in merged
    )
    role = attrs.evolve(role, merged=tuple(merged), agents=tuple(agents))
    for name in merged:
        cfg = inputs[name]
        if role.index == 0:
            inputs[name] = attrs.evolve(cfg, merge_partials=True)
        else:
            inputs[name] = attrs.evolve(cfg, mode="partials", merge_partials=False)
    tokens = [AgentToken(name=f"worker-{i}", token=role.token) for i in range(1, role.count)]
    if role.index == 0:
        relays = [n for n, c in inputs.items() if c.type == "relay"]
        if relays:  # one relay mount per site: the workers join the user's relay input
            cfg = inputs[relays[0]]
            inputs[relays[0]] = attrs.evolve(cfg, tokens=[*cfg.tokens, *tokens])
        else:
            inputs[RELAY] = RelayInputConfig(type="relay", tokens=tokens)
    else:
        from obsd.config.model import BufferConfig

        outputs[RELAY] = RelayOutputConfig(
            type="relay",
            urls=[role.peer_url(0)],
            token=role.token,
            gzip=False,
            batch_timeout=0.05,
            retry_max=2.0,
            buffer=BufferConfig(type="disk"),
        )
    http = attrs.evolve(config.http, listen=[*config.http.listen, role.private_listen])
    return attrs.evolve(config, inputs=inputs, outputs=outputs, http=http, worker=role)


def private_outputs(config: ObsdConfig) -> frozenset[str]:
    """Outputs the router never routes to by kind or route (only diverted partials)."""
    if config.worker is None or RELAY not in config.outputs:
        return frozenset()
    return frozenset({RELAY})


def partials_divert(config: ObsdConfig, outputs: dict[str, Any]) -> Any:
    """``(target, sources, keep)`` for ``Router.divert_partials``, or None for one process.

    On workers > 0 every ``statsd_partial`` (its own, or a central's from agents)
    goes to worker 0 only, except an agent-mode input's, which leave as configured.
    On worker 0 the workers' partials go to the merge only, never to an output.
    """
    role = config.worker
    if role is None:
        return None
    if role.index > 0:
        return outputs[RELAY], None, frozenset(role.agents)
    return None, frozenset(role.merged), frozenset()


__all__ = ["ENVIRON", "RELAY", "WorkerRole", "for_worker", "partials_divert", "private_outputs"]
