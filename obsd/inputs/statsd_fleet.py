"""The statsd input's fleet modes: agents send partials, central merges them.

``mode = "partials"`` (an agent): samples fold into per-interval partials
(``obsd.aggregation.partials``) instead of Graphite points.  The flush runs on
the wall-clock boundaries of ``flush_interval`` (interval ``k`` is
``[k * I, (k + 1) * I)``), so every agent's interval ``k`` covers the same
seconds; each series then leaves as one ``statsd_partial`` event that the relay
(or Kafka) output carries to central.  The agent's own StatsD numbers (bad
lines, packets, lines) still leave as metric points, named by host:
``stats.statsd.<host>.packets_received`` and so on.

``merge_partials = true`` (central): the router hands this input every
``statsd_partial`` event; ``obsd.aggregation.merge`` merges them per series and
interval with central's own raw traffic, and ``late_partials_grace`` seconds
after an interval ends it is flushed, stamped with the interval's end, by
central's settings (namespaces, percentiles, tags), as one Etsy statsd would
have flushed everyone's raw traffic.  Central's own numbers are named by its
host too.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
from twisted.python.failure import Failure

from obsd import events
from obsd.aggregation.ledger import ORIGIN
from obsd.aggregation.merge import PartialMerger, fold_into
from obsd.aggregation.partials import PartialAggregator
from obsd.aggregation.partials_wire import PartialError, partial_event
from obsd.aggregation.statsd import StatsdAggregator, StatsdPoint
from obsd.codecs.graphite import sanitise_name

if TYPE_CHECKING:
    from obsd.inputs.statsd import StatsdInput

_OWN_COUNTERS = ("bad_lines_seen", "packets_received", "metrics_received")


def host_prefix(prefix_stats: str, host: str) -> str:
    """``statsd`` + ``web1.example.com`` -> ``statsd.web1_example_com``: one node per host."""
    node = sanitise_name(host).replace(".", "_") or "unknown"
    return f"{prefix_stats}.{node}"


class AlignedLoop:
    """Calls ``fn`` at ``offset`` seconds after each multiple of ``interval`` (epoch time).

    Each call schedules the next from the clock, so a late call (a busy
    reactor) does not shift the ones after it off the boundaries.
    """

    def __init__(self, reactor: Any, interval: float, offset: float, fn: Callable[[], None]):
        self.reactor = reactor
        self.interval = interval
        self.offset = offset
        self.fn = fn
        self._call: Any = None

    def _schedule(self) -> None:
        now = self.reactor.seconds()
        slot = math.floor((now - self.offset) / self.interval + 1e-6) + 1
        self._call = self.reactor.callLater(slot * self.interval + self.offset - now, self._run)

    def _run(self) -> None:
        self._call = None
        try:
            self.fn()
        finally:
            self._schedule()

    def start(self) -> None:
        self._schedule()

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


class _Mode:
    """What both fleet modes share: the local partials and the host-named own numbers."""

    def __init__(self, statsd: StatsdInput, perf_counter: Callable[[], float]) -> None:
        self.statsd = statsd
        config = statsd.config
        self.interval = config.flush_interval
        self.clock = statsd.context.reactor.seconds
        host = statsd.context.hostname
        self.local = PartialAggregator(config, self.clock, host=host)
        worker = statsd.context.config.worker
        # with [daemon] workers each worker counts its own share: one node each
        node = host if worker is None else f"{host}-worker{worker.index}"
        own = attrs.evolve(config, prefix_stats=host_prefix(config.prefix_stats, node))
        self.own = StatsdAggregator(own, self.clock, perf_counter)
        self.loops: list[AlignedLoop] = []

    def interval_now(self) -> int:
        """The interval the clock is in (a loop firing on a boundary is in the new one)."""
        return math.floor(float(self.clock()) / self.interval + 1e-6)

    def safely(self, fn: Callable[[], Any]) -> Callable[[], None]:
        def call() -> None:
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - the loop must keep running
                self.statsd.flush_error("fleet flush failed", exc)

        return call

    def count_local(self) -> None:
        """Export the local interval's counts; they become the host's statsd.* numbers."""
        bad, packets, lines = self.local.take_counts()
        self.statsd.count_interval(bad, packets, lines)
        self.own.bad_lines_seen += bad
        self.own.packets_received += packets
        self.own.metrics_received += lines

    def start(self) -> None:
        for loop in self.loops:
            loop.start()

    def stop_loops(self) -> None:
        for loop in self.loops:
            loop.stop()


class PartialsForwarder(_Mode):
    """``mode = "partials"``: each interval's partials leave as ``statsd_partial`` events."""

    def __init__(self, statsd: StatsdInput, perf_counter: Callable[[], float]) -> None:
        super().__init__(statsd, perf_counter)
        self._sent = statsd.context.telemetry.counter(f"obsd.input.{statsd.name}.partials_sent")
        self.loops = [AlignedLoop(statsd.context.reactor, self.interval, 0.0, self._tick)]

    def _tick(self) -> None:
        self.safely(lambda: self.flush(spread=True))()

    def flush(self, spread: bool = False, interval: int | None = None) -> int:
        """Send the partials of ``interval`` (default: the one that just ended)."""
        k = self.interval_now() - 1 if interval is None else interval
        partials = self.local.take()
        self.count_local()
        found = [partial_event(key, part, k, self.interval) for key, part in partials.items()]
        self.statsd.send(self._emit, found, spread)
        own = [p for p in self.own.flush(now=(k + 1) * self.interval) if _own_counter(p)]
        self.statsd.send_points(own, spread=False)
        return len(found)

    def _emit(self, partials: list[dict[str, Any]]) -> None:
        send = self.statsd.context.ingest.statsd_partial
        for fields in partials:
            try:
                send(fields)
                self._sent.inc()
            except Exception as exc:  # noqa: BLE001 - one partial must not stop the others
                self.statsd.flush_error("cannot emit a partial", exc, metric=fields["metric"])

    def stop(self) -> None:
        """The unfinished interval's partials leave too: central merges them with the rest."""
        self.stop_loops()
        self.flush(spread=False, interval=self.interval_now())


class PartialsMerge(_Mode):
    """``merge_partials = true``: agents' partials and local traffic, flushed as one statsd."""

    def __init__(self, statsd: StatsdInput, perf_counter: Callable[[], float]) -> None:
        super().__init__(statsd, perf_counter)
        config = statsd.config
        self.central = self.own
        self.merger = PartialMerger(
            config, config.late_partials_grace, config.late_partials, now=self.clock()
        )
        reactor = statsd.context.reactor
        offset = config.late_partials_grace % self.interval
        self.loops = [
            AlignedLoop(reactor, self.interval, 0.0, self.safely(self.take_local)),
            AlignedLoop(reactor, self.interval, offset, self.safely(lambda: self.flush(True))),
        ]
        self._stop_consuming: Callable[[], None] | None = None
        self.ledger = statsd.context.merge_ledger
        tel = statsd.context.telemetry
        prefix = f"obsd.input.{statsd.name}.partials"
        merger = self.merger
        self._refused = tel.counter(f"{prefix}_refused")
        tel.gauge(f"{prefix}_merged", lambda: merger.merged)
        tel.gauge(f"{prefix}_late_merged", lambda: merger.late_merged)
        tel.gauge(f"{prefix}_late_dropped", lambda: merger.late_dropped)
        tel.gauge(f"{prefix}_misaligned", lambda: merger.misaligned)
        tel.gauge(f"{prefix}_forgotten", lambda: merger.forgotten)
        tel.gauge(f"{prefix}_open_intervals", lambda: len(merger.open_intervals()))

    def received(self, event: dict[str, Any]) -> None:
        """One ``statsd_partial`` event from the router."""
        try:
            outcome = self.merger.add(event, event.get(ORIGIN))
        except PartialError as exc:
            self.ledger.merged_into(-math.inf)  # nothing held: its offset may be committed
            self._refused.inc()
            self.statsd.context.throttle.warning(
                f"{self.statsd.name}:partial",
                "statsd partial refused",
                input=self.statsd.name,
                host=event.get(events.HOST),
                reason=str(exc),
            )
            return
        target = self.merger.last_target
        self.ledger.merged_into(-math.inf if target is None else target)
        if outcome != "merged":
            self.statsd.context.throttle.warning(
                f"{self.statsd.name}:late",
                "statsd partial for an interval already flushed",
                input=self.statsd.name,
                host=event.get(events.HOST),
                interval=event.get("interval"),
                outcome=outcome,
            )

    def take_local(self, interval: int | None = None) -> None:
        """This process's own raw traffic of the interval that just ended, into the merge."""
        k = self.interval_now() - 1 if interval is None else interval
        self.merger.add_local(self.local.take(), k, origin="local")
        self.count_local()

    def flush(self, spread: bool = False, everything: bool = False, settle: bool = True) -> int:
        """Flush every interval due (all open ones with ``everything``); returns the points.

        Once an interval's points are emitted, the ledger hears it was flushed,
        and (``settle``) once they are on disk, that it is settled: the Kafka
        input then commits the partials it held for it.
        """
        merger = self.merger
        due = merger.open_intervals() if everything else merger.due(self.clock())
        sent = 0
        for k in due:
            fold_into(self.central, merger.close(k))
            points = self.central.flush(now=(k + 1) * self.interval)
            self.statsd.send_points(points, spread)
            self.statsd.after_sent(functools.partial(self._flushed, k, settle))
            sent += len(points)
        return sent

    def _flushed(self, interval: int, settle: bool) -> None:
        self.ledger.flushed(interval)
        if settle:
            durable = self.statsd.context.wait_durable()
            durable.addCallbacks(lambda _: self.ledger.settled(interval), self._not_durable)

    def _not_durable(self, failure: Failure) -> None:
        """The interval stays unsettled: its partials are read again if this process goes."""
        self.statsd.flush_error("flushed points not on disk", failure.value or Exception())

    def start(self) -> None:
        consume = self.statsd.context.consume
        if consume is not None:
            self._stop_consuming = consume(events.STATSD_PARTIAL, self.received)
        self.ledger.attach(self.merger)
        super().start()

    def stop(self) -> None:
        """Merge the local traffic, then flush every open interval before the outputs drain.

        Partials from a Kafka partition are let go instead: their offsets are
        not committed, so whichever process reads the partition next merges
        them (flushing them here too would count them twice).
        """
        self.stop_loops()
        if self._stop_consuming is not None:
            self._stop_consuming()
            self._stop_consuming = None
        self.ledger.let_go()
        self.take_local(self.interval_now())
        self.flush(spread=False, everything=True, settle=False)
        self.ledger.detach(self.merger)


def _own_counter(point: StatsdPoint) -> bool:
    return point.metric.rsplit(".", 1)[-1] in _OWN_COUNTERS


FleetMode = PartialsForwarder | PartialsMerge


def make_fleet_mode(
    statsd: StatsdInput, perf_counter: Callable[[], float] = time.perf_counter
) -> FleetMode:
    """The engine for the input's ``mode`` / ``merge_partials``."""
    if statsd.config.merge_partials:
        return PartialsMerge(statsd, perf_counter)
    return PartialsForwarder(statsd, perf_counter)


__all__ = ["AlignedLoop", "PartialsForwarder", "PartialsMerge", "host_prefix", "make_fleet_mode"]
