"""SIGHUP: re-read the config and apply route and output changes without dropping events.

A reload builds the outputs that are new or changed, starts them, switches the
router to the new outputs and routes in one step (``Router.configure``), and
only then drains the outputs it replaced, within ``shutdown_timeout``.  All of
this happens in one reactor turn up to the switch, so every event is routed
either by the old tables into an old queue (which drains) or by the new ones.
Outputs whose config did not change keep running, queue and all.

What a running process cannot change in place (``[daemon]``, ``[http]``,
``[pipeline]``, ``[derived_metrics]``, ``[inputs.*]``: listeners and the
chain) is not applied: the reload logs which parts need a restart and keeps
running on the old config entirely.  A config with problems is refused the
same way, its problems logged.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from twisted.internet import defer

from obsd.config.loader import load_config
from obsd.config.model import ObsdConfig
from obsd.daemon.topology import ObsdService, build_output
from obsd.errors import ConfigError
from obsd.ops.log import get_logger
from obsd.twistedtypes import Service

#: the parts of a config that only a restart can change
RESTART_PARTS = ("daemon", "http", "pipeline", "derived_metrics", "inputs")


def restart_parts(old: ObsdConfig, new: ObsdConfig) -> list[str]:
    """Which parts changed that a reload cannot apply (``inputs.NAME`` for inputs)."""
    changed = [p for p in RESTART_PARTS if p != "inputs" and getattr(old, p) != getattr(new, p)]
    for name in sorted(set(old.inputs) | set(new.inputs)):
        if old.inputs.get(name) != new.inputs.get(name):
            changed.append(f"inputs.{name}")
    return changed


class Reloader(Service):
    """Reloads one ObsdService's config; on SIGHUP when ``install_signal`` is set."""

    name = "reloader"

    def __init__(
        self, service: ObsdService, load: Callable[[str], ObsdConfig] = load_config
    ) -> None:
        self.service = service
        self.load = load
        self.install_signal = False
        #: called on each SIGHUP too (the first of ``[daemon] workers`` passes it on)
        self.on_signal: list[Callable[[], None]] = []
        self._previous: Any = None
        self._log = get_logger("obsd.reload")

    def startService(self) -> None:
        super().startService()
        if self.install_signal:
            self._previous = signal.signal(signal.SIGHUP, self._on_signal)

    def stopService(self) -> None:
        super().stopService()
        if self.install_signal and self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None

    def _on_signal(self, signum: int, frame: Any) -> None:
        # a signal handler runs between two bytecodes: hand over to the reactor
        self.service.reactor.callFromThread(self.reload)
        for call in self.on_signal:
            self.service.reactor.callFromThread(call)

    def reload(self) -> defer.Deferred[bool]:
        """Re-read the config file; fires True when applied (once replaced outputs drained)."""
        service = self.service
        old: ObsdConfig = service.config
        if old.path is None:
            self._log.warning("reload: obsd runs the embedded default config; nothing to re-read")
            return defer.succeed(False)
        try:
            new = self.load(old.path)
        except ConfigError as exc:
            self._log.error(
                "reload refused: the config has problems; still running on the old config",
                config=old.path,
                problems=exc.problems,
            )
            return defer.succeed(False)
        parts = restart_parts(old, new)
        if parts:
            self._log.warning(
                "reload refused: these changes need a restart; still running on the old config",
                config=old.path,
                needs_restart=parts,
            )
            return defer.succeed(False)
        return self.apply(new)

    def apply(self, new: ObsdConfig) -> defer.Deferred[bool]:
        """Switch to ``new``'s outputs and routes; drain the outputs it replaces."""
        service = self.service
        old: ObsdConfig = service.config
        current = dict(service.outputs)
        kept = {n: out for n, out in current.items() if new.outputs.get(n) == old.outputs[n]}
        outputs: dict[str, Any] = {}
        built = []
        for name, out_config in new.outputs.items():
            if name in kept:
                outputs[name] = kept[name]
                continue
            assert service.output_context is not None  # build_service made it
            try:
                output = build_output(name, out_config, service.output_context)
            except Exception as exc:  # noqa: BLE001 - nothing is switched yet: keep the old
                self._log.error(
                    "reload refused: cannot build an output; still running on the old config",
                    output=name,
                    error=repr(exc),
                )
                return defer.succeed(False)
            outputs[name] = output
            built.append(name)
        retired = {n: out for n, out in current.items() if n not in kept}
        # a changed output with a disk buffer shares its spool with its successor: the old
        # one stops at once (its spool keeps what it held) and the new one starts, and
        # replays that spool, only once the old one has closed it; meanwhile the router
        # hands that output's events to a holder
        handover = {
            n: _Holder(n, new.outputs[n].buffer.max_events, service.telemetry)
            for n in built
            if n in retired and (_on_disk(old.outputs[n]) or _on_disk(new.outputs[n]))
        }
        for name in handover:
            retired[name].drain_timeout = 0.0
        # stop (start draining) the replaced outputs first, so a new one may take the
        # name; nothing is routed between here and the switch (one reactor turn)
        stopped = {n: defer.maybeDeferred(out.disownServiceParent) for n, out in retired.items()}
        for name in built:
            if name not in handover:
                outputs[name].setServiceParent(service.outputs_group)
        routed: dict[str, Any] = {**outputs, **handover}
        # the switch: from here on every event goes by the new tables
        service.switch(new, outputs, routed)
        self._log.info(
            "config reloaded",
            config=new.path,
            started=built,
            draining=sorted(retired),
            handed_over=sorted(handover),
            kept=sorted(kept),
            routes=len(new.routes),
        )

        def take_over(_: Any, name: str) -> None:
            if service.outputs.get(name) is not outputs[name]:
                return  # a later reload replaced it already
            successor = outputs[name]
            successor.setServiceParent(service.outputs_group)  # opens and replays the spool
            routed[name] = successor
            service.reroute(new, routed)
            handover[name].release(successor)

        for name in handover:
            stopped[name].addBoth(take_over, name)
        done: defer.Deferred[bool] = defer.gatherResults(
            list(stopped.values()), consumeErrors=True
        ).addCallback(lambda _: True)
        return done


def _on_disk(config: Any) -> bool:
    return bool(config.buffer.type != "memory")


class _Holder:
    """Takes an output's events while its predecessor closes the spool they share."""

    def __init__(self, name: str, limit: int, telemetry: Any) -> None:
        self.name = name
        self.limit = limit
        self.held: list[dict[str, Any]] = []
        self._dropped = telemetry.counter(f"obsd.output.{name}.dropped.reload")

    def accept(self, event: dict[str, Any]) -> None:
        if len(self.held) >= self.limit:
            self._dropped.inc()
            return
        self.held.append(event)

    def release(self, successor: Any) -> None:
        held, self.held = self.held, []
        for event in held:
            successor.accept(event)
