"""``[daemon] workers``: the config each worker runs, the shared sockets, the supervisor."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from obsd.config.loader import load_config
from obsd.config.model import ObsdConfig
from obsd.daemon.supervisor import WorkerPlan, WorkerSupervisor, listen_descriptions
from obsd.daemon.workers import RELAY, WorkerRole, for_worker, partials_divert, private_outputs
from obsd.net.endpoints import parse_listener
from obsd.net.shared import bind_for_workers, close_all, key
from obsd.ops.telemetry import Telemetry

CONFIG = """
[daemon]
data_dir = "{data}"
workers = 2
[inputs.statsd]
listen = ["udp:0:interface=127.0.0.1"]
[inputs.agent]
type = "statsd"
listen = ["tcp:0:interface=127.0.0.1"]
mode = "partials"
[inputs.syslog]
listen = ["tcp:0:interface=127.0.0.1"]
[outputs.relay]
urls = ["http://central.example:8080"]
token = "t"
[outputs.file]
"""


@pytest.fixture(name="config")
def _config(tmp_path: Path) -> ObsdConfig:
    path = tmp_path / "obsd.toml"
    path.write_text(CONFIG.format(data=tmp_path / "data"))
    return load_config(str(path))


def role(index: int) -> WorkerRole:
    return WorkerRole(index=index, count=3, ports=(1001, 1002, 1003), token="secret")


class TestForWorker:
    def test_workers_setting_and_auto(self, config: ObsdConfig) -> None:
        assert config.daemon.worker_count == 2
        auto = config.daemon.__class__(workers="auto")
        assert auto.worker_count >= 1

    def test_worker_0_merges_and_takes_the_relay(self, config: ObsdConfig) -> None:
        first = for_worker(config, role(0))
        assert first.inputs["statsd"].merge_partials  # type: ignore[attr-defined]
        assert first.inputs["agent"].mode == "partials"  # type: ignore[attr-defined]
        relay = first.inputs[RELAY]
        assert [t.name for t in relay.tokens] == ["worker-1", "worker-2"]  # type: ignore[attr-defined]
        assert {t.token for t in relay.tokens} == {"secret"}  # type: ignore[attr-defined]
        assert first.data_dir == config.data_dir
        assert "tcp:1001:interface=127.0.0.1" in first.http.listen
        assert private_outputs(first) == frozenset()
        assert partials_divert(first, {}) == (None, frozenset({"statsd"}), frozenset())

    def test_later_workers_send_partials_to_worker_0(self, config: ObsdConfig) -> None:
        second = for_worker(config, role(2))
        assert second.inputs["statsd"].mode == "partials"  # type: ignore[attr-defined]
        assert not second.inputs["statsd"].merge_partials  # type: ignore[attr-defined]
        out = second.outputs[RELAY]
        assert out.urls == ["http://127.0.0.1:1001"]  # type: ignore[attr-defined]
        assert out.buffer.type == "disk"
        assert second.data_dir == config.data_dir / "worker-2"
        assert "tcp:1003:interface=127.0.0.1" in second.http.listen
        assert private_outputs(second) == frozenset({RELAY})
        target, sources, keep = partials_divert(second, {RELAY: "the relay output"})
        assert (target, sources, keep) == ("the relay output", None, frozenset({"agent"}))

    def test_a_central_with_a_relay_input_lets_the_workers_join_it(self, tmp_path: Path) -> None:
        path = tmp_path / "central.toml"
        path.write_text(
            f'[daemon]\ndata_dir = "{tmp_path}"\n[http]\nlisten = ["tcp:0"]\n'
            '[inputs.relay]\ntokens = [{name = "a", token = "ta"}]\n'
            '[inputs.statsd]\nlisten = ["udp:0"]\nmerge_partials = true\n'
        )
        first = for_worker(load_config(str(path)), role(0))
        assert RELAY not in first.inputs
        names = [t.name for t in first.inputs["relay"].tokens]  # type: ignore[attr-defined]
        assert names == ["a", "worker-1", "worker-2"]

    def test_the_role_travels_as_json(self) -> None:
        sent = WorkerRole(1, 2, (5, 6), "t", {"syslog tcp:0": 3}, "console", ("s",), ("a",))
        assert WorkerRole.from_json(sent.to_json()) == sent


class TestSharedSockets:
    def test_tcp_and_udp_get_one_reuseport_socket_per_worker_on_one_port(self) -> None:
        for description in ("tcp:0:interface=127.0.0.1", "udp:0:interface=127.0.0.1"):
            listener = parse_listener(description, frozenset({"tcp", "udp"}))
            sockets = bind_for_workers(listener, 3)
            try:
                assert len({id(s) for s in sockets}) == 3
                assert len({s.getsockname()[1] for s in sockets}) == 1
                assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in sockets)
            finally:
                close_all(sockets)

    def test_a_unix_socket_is_one_socket_for_all(self, tmp_path: Path) -> None:
        listener = parse_listener(f"unix:{tmp_path}/s.sock", frozenset({"unix"}))
        sockets = bind_for_workers(listener, 2)
        assert sockets[0] is sockets[1]
        close_all(sockets)

    def test_two_inputs_on_tcp_0_get_two_ports(self, config: ObsdConfig) -> None:
        plan = WorkerPlan.bind(config, 2)
        try:
            names = [key(owner, d) for owner, d in listen_descriptions(config)]
            ports = {plan.sockets[0][n].getsockname()[1] for n in names}
            assert len(ports) == len(names)
            assert len(plan.ports) == 2
            assert plan.role(1).private_listen == f"tcp:{plan.ports[1]}:interface=127.0.0.1"
        finally:
            for per_worker in plan.sockets:
                close_all(per_worker.values())

    def test_a_port_in_use_ends_the_start_clearly(self, config: ObsdConfig) -> None:
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = attrs_evolve_listen(config, f"tcp:{port}:interface=127.0.0.1")
        with pytest.raises(SystemExit, match=f"cannot listen on 'tcp:{port}"):
            WorkerPlan.bind(busy, 2)
        taken.close()


def attrs_evolve_listen(config: ObsdConfig, description: str) -> ObsdConfig:
    import attrs

    syslog = attrs.evolve(config.inputs["syslog"], listen=[description])
    return attrs.evolve(config, inputs={**config.inputs, "syslog": syslog})


class FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)


class SpawningClock(Clock):
    """A Clock that records spawnProcess calls."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[Any, list[str], dict[str, str], dict[int, Any]]] = []

    def spawnProcess(self, proto: Any, exe: str, args: list[str], env: dict[str, str],
                     childFDs: dict[int, Any]) -> FakeProcess:
        self.spawned.append((proto, args, env, childFDs))
        return FakeProcess(1000 + len(self.spawned))


class TestSupervisor:
    def plan(self) -> WorkerPlan:
        a, b = socket.socket(), socket.socket()
        return WorkerPlan(
            count=2, sockets=[{"syslog tcp:1": a}, {"syslog tcp:1": b}], ports=(7, 8),
            token="t", log_format="json",
        )

    def test_spawns_later_workers_with_their_sockets_and_role(self) -> None:
        clock = SpawningClock()
        plan = self.plan()
        sup = WorkerSupervisor(plan, "/etc/obsd.toml", clock, 5.0, Telemetry(), lambda _: None)
        sup.start()
        (_proto, args, env, fds), = clock.spawned
        assert args[1:] == ["-m", "obsd.daemon.worker_main", "--config", "/etc/obsd.toml"]
        assert fds[3] == plan.sockets[1]["syslog tcp:1"].fileno()
        assert fds[0] == "w"  # the pipe whose end tells the worker its parent is gone
        worker = WorkerRole.from_json(env["OBSD_WORKER"])
        assert (worker.index, worker.fds) == (1, {"syslog tcp:1": 3})
        sup.close_sockets()

    def test_a_worker_that_dies_starts_again_and_its_lines_are_logged(self) -> None:
        clock = SpawningClock()
        lines: list[str] = []
        telemetry = Telemetry()
        sup = WorkerSupervisor(self.plan(), None, clock, 5.0, telemetry, lines.append)
        sup.start()
        proto = clock.spawned[0][0]
        proto.childDataReceived(1, b'{"event": "a"}\n{"event": "b')
        proto.childDataReceived(1, b'"}\n')
        assert lines == ['{"event": "a"}', '{"event": "b"}']
        proto.processEnded(Failure(ProcessTerminated(signal=9)))
        assert telemetry.value("obsd.workers.restarts") == 1
        clock.advance(1.0)
        assert len(clock.spawned) == 2
        sup.close_sockets()

    def test_stop_sends_sigterm_and_waits_for_every_worker(self) -> None:
        clock = SpawningClock()
        sup = WorkerSupervisor(self.plan(), None, clock, 5.0, None, lambda _: None)
        sup.start()
        process = sup.processes[1]
        done = sup.stop()
        assert process.signals == ["TERM"]
        assert not done.called
        clock.spawned[0][0].processEnded(Failure(ProcessDone(0)))
        assert done.called
        clock.advance(60)
        assert process.signals == ["TERM"]  # no SIGKILL once it has exited
        assert len(clock.spawned) == 1  # and no restart
        sup.close_sockets()

    def test_a_worker_that_does_not_exit_is_killed_after_the_grace(self) -> None:
        clock = SpawningClock()
        sup = WorkerSupervisor(self.plan(), None, clock, 5.0, None, lambda _: None)
        sup.start()
        process = sup.processes[1]
        sup.stop()
        clock.advance(5.0 + 10.0)
        assert process.signals == ["TERM", "KILL"]
        sup.close_sockets()
