"""The ``statsd`` input: StatsD over UDP and TCP, aggregated as Etsy statsd 0.9 does.

Datagrams and TCP lines go straight into one ``StatsdAggregator``; samples never
pass through the event chain one by one.  Every ``flush_interval`` (and once
more when the input stops, before the outputs drain) each flushed point becomes
one ``metric`` event whose ``event`` is its final Graphite name.

The UDP socket asks the kernel for ``receive_buffer_bytes`` of receive buffer:
most UDP loss at real rates is that buffer overflowing while the process is
busy.  Linux caps the grant at ``net.core.rmem_max``; obsd logs what it got.
``repeat_to`` repeats the raw datagrams (and TCP lines) to other StatsD servers
over UDP, as Etsy's repeater backend does, so obsd can sit in front of one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

import attrs
from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.task import LoopingCall

from obsd import events, registry
from obsd.aggregation.partials import PartialAggregator
from obsd.aggregation.statsd import StatsdAggregator, StatsdPoint, StatsdSettings
from obsd.config.model import ObsdConfig, StreamInputConfig
from obsd.config.schema import Problems, at_least, setting
from obsd.contracts import InputContext
from obsd.inputs.statsd_fleet import FleetMode, make_fleet_mode
from obsd.inputs.statsd_repeat import Repeater, parse_host_port
from obsd.net.endpoints import DATAGRAM_TYPES, STREAM_TYPES
from obsd.net.rcvbuf import tune_receive_buffer
from obsd.net.slots import fair_factory
from obsd.ops.log import get_logger
from obsd.twistedtypes import MultiService

LISTEN_TYPES = STREAM_TYPES | DATAGRAM_TYPES

MiB = 1024 * 1024
#: A TCP line longer than this is a bad line (and the connection's buffer is cut).
MAX_LINE_BYTES = 64 * 1024
#: Points handed to the event chain per reactor turn when a flush is large.
EMIT_CHUNK = 2000


@attrs.frozen(kw_only=True)
class Config(StreamInputConfig, StatsdSettings):
    """``[inputs.statsd]``: the aggregation settings (``StatsdSettings``) and the input's own."""

    receive_buffer_bytes: int = setting(
        8 * MiB, check=at_least(0), help="UDP receive buffer asked of the kernel; 0 leaves it",
        client_sees="nothing (UDP has no answer); a larger buffer means fewer datagrams dropped "
                    "by the kernel in bursts",
    )
    repeat_to: list[str] = setting(
        factory=list, help='"host:port" StatsD servers that get the raw lines too (UDP)'
    )
    mode: Literal["flush", "partials"] = setting(
        "flush",
        help="flush: aggregate here and send points; partials: send each interval's "
        "partial aggregates (statsd_partial events) for a central obsd to merge",
    )
    merge_partials: bool = setting(
        False,
        help="central: merge the agents' statsd_partial events with this input's own "
        "traffic and flush them as one statsd would (fleet-wide StatsD)",
    )
    late_partials_grace: float = setting(
        5.0,
        check=at_least(0),
        help="merge_partials: seconds an interval stays open after its end for partials",
    )
    late_partials: Literal["merge", "drop"] = setting(
        "merge",
        help="merge_partials: a partial for an interval already flushed is merged into the "
        "open interval, or dropped (both counted as late)",
    )


def _partials_leave(whole: ObsdConfig) -> bool:
    """Whether some output takes statsd_partial events (by default, or by a route)."""
    for out_name, out in whole.outputs.items():
        module = registry.output_module(out.type)
        if module is None or events.STATSD_PARTIAL not in module.ACCEPTS:
            continue
        if not whole.routes:
            if events.STATSD_PARTIAL in module.DEFAULT_KINDS:
                return True
        elif any(
            out_name in route.outputs
            and (not route.match.kind or events.STATSD_PARTIAL in route.match.kind)
            for route in whole.routes
        ):
            return True
    return False


def check_config(name: str, cfg: Config, whole: ObsdConfig, problems: Problems) -> None:
    """Cross checks: percentiles in range, repeat_to addresses, histogram bins."""
    path = f"inputs.{name}"
    for i, pct in enumerate(cfg.percentiles):
        if pct == 0 or not -100 <= pct <= 100:
            problems.add(f"{path}.percentiles[{i}]", f"must be in -100..100 and not 0, got {pct}")
    for i, target in enumerate(cfg.repeat_to):
        try:
            parse_host_port(target)
        except ValueError as exc:
            problems.add(f"{path}.repeat_to[{i}]", str(exc))
    if cfg.mode == "partials" and cfg.merge_partials:
        problems.add(
            f"{path}.merge_partials",
            'an input in mode = "partials" sends partials; it cannot also merge them',
        )
    if cfg.mode == "partials" and not _partials_leave(whole):
        problems.add(
            f"{path}.mode",
            'mode = "partials" but no output takes statsd_partial events: add an output '
            "that carries them to central ([outputs.relay]) or route them to one",
        )
    for i, hist in enumerate(cfg.histogram):
        for edge in hist.bins:
            if isinstance(edge, str) and edge != "inf":
                problems.add(f"{path}.histogram[{i}].bins", f'bins are numbers or "inf": {edge!r}')


def tags_dict(tags: tuple[str, ...]) -> dict[str, str]:
    """``("k:v", "flag")`` as ``{"k": "v", "flag": "true"}`` (carbon's form of a bare tag)."""
    out: dict[str, str] = {}
    for tag in tags:
        key, colon, value = tag.partition(":")
        out[key] = value if colon else "true"
    return out


class StatsdDatagramProtocol(DatagramProtocol):
    """One datagram, one call into the input; sets the receive buffer once listening."""

    def __init__(self, statsd: StatsdInput) -> None:
        self.statsd = statsd
        self.datagramReceived = statsd.receive  # type: ignore[method-assign,assignment]

    def startProtocol(self) -> None:
        handle = getattr(self.transport, "getHandle", None)
        if handle is not None:
            self.statsd.tune_socket(handle())


class StatsdLineProtocol(Protocol):
    """Newline-delimited StatsD over a stream; complete lines go in as one chunk."""

    def __init__(self, statsd: StatsdInput) -> None:
        self.statsd = statsd
        self._buffer = b""
        #: the rest of an over-long line is still arriving: drop up to its newline
        self._discarding = False

    def connectionMade(self) -> None:
        self.statsd.context.flow_control.register(self.transport)
        self.statsd.connections += 1

    def connectionLost(self, reason: Any = None) -> None:
        self.statsd.context.flow_control.unregister(self.transport)
        self.statsd.connections -= 1
        if self._buffer.strip():
            self.statsd.receive(self._buffer)
        self._buffer = b""
        self._discarding = False

    def dataReceived(self, data: bytes) -> None:
        if self._discarding:
            start = data.find(b"\n")
            if start < 0:
                return
            self._discarding = False
            data = data[start + 1 :]
        if self._buffer:
            data = self._buffer + data
        end = data.rfind(b"\n")
        if end < 0:
            self._buffer = data
        else:
            self._buffer = data[end + 1 :]
            self.statsd.receive(data[: end + 1])
        if len(self._buffer) > MAX_LINE_BYTES:
            # one bad line however long it is: its tail is dropped as it arrives
            self.statsd.line_too_long(self._buffer)
            self._buffer = b""
            self._discarding = True


class StatsdLineFactory(Factory):
    """Builds a line protocol per TCP connection."""

    def __init__(self, statsd: StatsdInput) -> None:
        self.statsd = statsd

    def buildProtocol(self, addr: Any) -> StatsdLineProtocol:
        return StatsdLineProtocol(self.statsd)


# -- the input ----------------------------------------------------------------------


class StatsdInput(MultiService):
    """Listeners, the aggregator, the flush loop and the repeater of one statsd input."""

    def __init__(
        self,
        name: str,
        config: Config,
        context: InputContext,
        perf_counter: Callable[[], float] = time.perf_counter,
    ) -> None:
        super().__init__()
        self.name = name
        self.config = config
        self.context = context
        self.aggregator: StatsdAggregator | PartialAggregator
        #: the partials (agent) or merge (central) engine; None in plain flush mode
        self.fleet: FleetMode | None = None
        if config.mode == "partials" or config.merge_partials:
            self.fleet = make_fleet_mode(self, perf_counter)
            self.aggregator = self.fleet.local
        else:
            self.aggregator = StatsdAggregator(config, context.reactor.seconds, perf_counter)
        self.connections = 0
        self._log = get_logger(f"obsd.input.{name}")
        tel = context.telemetry
        prefix = f"obsd.input.{name}"
        self._packets = tel.counter(f"{prefix}.packets_received")
        self._metrics = tel.counter(f"{prefix}.metrics_received")
        self._bad = tel.counter(f"{prefix}.bad_lines_seen")
        self._dropped_metrics = tel.counter(f"{prefix}.dropped_metrics")
        self._dropped_members = tel.counter(f"{prefix}.dropped_set_members")
        self._dropped_samples = tel.counter(f"{prefix}.dropped_timer_samples")
        self._flushes = tel.counter(f"{prefix}.flushes")
        self._points = tel.counter(f"{prefix}.points_flushed")
        self._repeated = tel.counter(f"{prefix}.repeated")
        self._repeat_errors = tel.counter(f"{prefix}.repeat_errors")
        self._flush_errors = tel.counter(f"{prefix}.flush_errors")
        tel.gauge(f"{prefix}.connections", lambda: self.connections)
        self.bad_lines_total = 0
        self.repeater: Repeater | None = None
        if config.repeat_to:
            self.repeater = Repeater(
                [parse_host_port(t) for t in config.repeat_to], context.reactor, self._repeat_error
            )
        self._loop: LoopingCall | None = None
        self._pending: list[tuple[Callable[[list[Any]], None], list[Any]]] = []
        self._emit_call: Any = None
        for service in context.listener_services(
            config.listen,
            LISTEN_TYPES,
            factory=fair_factory(StatsdLineFactory(self), name, config, context),
            datagram=StatsdDatagramProtocol(self),
        ):
            service.setServiceParent(self)

    # -- the hot path -------------------------------------------------------------

    def receive(self, data: bytes, address: Any = None) -> None:
        """One datagram (or run of complete TCP lines): aggregate, repeat, count bad lines."""
        bad = self.aggregator.ingest(data)
        if self.repeater is not None:
            self.repeater.repeat(data)
        if bad:
            self._bad_lines(bad)

    def _bad_lines(self, bad: list[tuple[bytes, str]]) -> None:
        self.bad_lines_total += len(bad)
        line, reason = bad[0]
        self.context.throttle.warning(
            f"{self.name}:bad_line",
            "bad statsd lines skipped",
            input=self.name,
            example=line[:200].decode("utf-8", "replace"),
            reason=reason,
            bad_lines_total=self.bad_lines_total,
        )

    def line_too_long(self, data: bytes) -> None:
        self.aggregator.count_bad_line()
        self._bad_lines([(data, f"line longer than {MAX_LINE_BYTES} bytes")])

    def tune_socket(self, sock: Any) -> None:
        """Ask for ``receive_buffer_bytes``; log the grant, with the sysctl when capped."""
        tune_receive_buffer(sock, self.config.receive_buffer_bytes, self._log, str(self.name))

    def _repeat_error(self, message: str) -> None:
        self._repeat_errors.inc()
        self.context.throttle.warning(
            f"{self.name}:repeat", "statsd repeat failed", input=self.name, error=message
        )

    # -- flushing -----------------------------------------------------------------

    def count_interval(self, bad: int, packets: int, lines: int) -> None:
        """Export one interval's receive counts and the aggregator's drop totals."""
        agg = self.aggregator
        self._packets.inc(packets)
        self._metrics.inc(lines)
        self._bad.inc(bad)
        self._dropped_metrics.inc(agg.dropped_metrics - self._dropped_metrics.value)
        self._dropped_members.inc(agg.dropped_set_members - self._dropped_members.value)
        self._dropped_samples.inc(agg.dropped_timer_samples - self._dropped_samples.value)
        if self.repeater is not None:
            self._repeated.inc(self.repeater.sent - self._repeated.value)
        self._flushes.inc()

    def flush(self, spread: bool = False) -> int:
        """Close the interval: one metric event per point; returns the number of points.

        With ``spread``, a large flush hands its points to the event chain
        ``EMIT_CHUNK`` at a time, one chunk per reactor turn (as txstatsd's
        cooperative flush does), so 100,000 series do not stop the reactor for
        seconds while UDP datagrams pile up in the socket buffer.  In the fleet
        modes the mode's engine decides what leaves (``statsd_fleet``).
        """
        if self.fleet is not None:
            return self.fleet.flush(spread)
        agg = self.aggregator
        assert isinstance(agg, StatsdAggregator)
        self.count_interval(agg.bad_lines_seen, agg.packets_received, agg.metrics_received)
        points = agg.flush()
        self.send_points(points, spread)
        return len(points)

    def send_points(self, points: list[StatsdPoint], spread: bool) -> None:
        """Flushed points on to the chain as metric events (spread over turns if asked)."""
        self._points.inc(len(points))
        self.send(self._emit, points, spread)

    def send(self, emit: Callable[[list[Any]], None], items: list[Any], spread: bool) -> None:
        """``emit(items)`` now, or ``EMIT_CHUNK`` items per reactor turn with ``spread``."""
        self._pending.append((emit, items))
        if spread and len(items) > EMIT_CHUNK:
            if self._emit_call is None:
                self._emit_call = self.context.reactor.callLater(0, self._emit_some)
        else:
            self._emit_all()

    def after_sent(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` once everything ``send`` was given so far is emitted."""
        if not self._pending:
            fn()
        else:
            self._pending.append((lambda _: fn(), [None]))

    def _emit_some(self) -> None:
        """One reactor turn's share of the pending points."""
        self._emit_call = None
        budget = EMIT_CHUNK
        while self._pending and budget > 0:
            emit, items = self._pending[0]
            chunk, rest = items[:budget], items[budget:]
            emit(chunk)
            budget -= len(chunk)
            if rest:
                self._pending[0] = (emit, rest)
            else:
                self._pending.pop(0)
        if self._pending:
            self._emit_call = self.context.reactor.callLater(0, self._emit_some)

    def _emit_all(self) -> None:
        if self._emit_call is not None and self._emit_call.active():
            self._emit_call.cancel()
        self._emit_call = None
        pending, self._pending = self._pending, []
        for emit, items in pending:
            emit(items)

    def _emit(self, points: list[StatsdPoint]) -> None:
        metric = self.context.ingest.metric
        series_tags = self.config.graphite_tags
        for name, value, timestamp, tags, base, metric_type, stat in points:
            try:
                event = {
                    events.EVENT: name,
                    events.VALUE: value,
                    events.TIMESTAMP: float(timestamp),
                    events.TAGS: tags_dict(tags) if tags else {},
                    events.METRIC_NAME: base,
                    events.METRIC_TYPE: metric_type,
                    events.STAT: stat,
                }
                if tags and not series_tags:
                    event[events.GRAPHITE_TAGS] = False
                metric(event)
            except Exception as exc:  # noqa: BLE001 - one point must not stop the flush
                self.flush_error("cannot emit a flushed point", exc, point=name)

    def flush_error(self, message: str, exc: BaseException, **fields: Any) -> None:
        """Count and log (throttled) a failure while flushing."""
        self._flush_errors.inc()
        self.context.throttle.error(f"{self.name}:flush", message, error=repr(exc), **fields)

    def _flush_safely(self, spread: bool = True) -> None:
        try:
            self.flush(spread)
        except Exception as exc:  # noqa: BLE001 - the loop must keep running
            self.flush_error("flush failed", exc)

    def startService(self) -> None:
        super().startService()
        if self.repeater is not None:
            self.repeater.start()
        if self.fleet is not None:
            self.fleet.start()
            return
        self._loop = LoopingCall(self._flush_safely)
        self._loop.clock = self.context.reactor
        self._loop.start(self.config.flush_interval, now=False)

    def stopService(self) -> defer.Deferred[None]:
        """Close the listeners, then flush what they brought in one last time."""
        d: defer.Deferred[Any] = defer.maybeDeferred(super().stopService)

        def last_flush(_: Any) -> None:
            if self._loop is not None and self._loop.running:
                self._loop.stop()
            self._loop = None
            if self.fleet is not None:
                try:
                    self.fleet.stop()
                except Exception as exc:  # noqa: BLE001 - stopping must go on
                    self.flush_error("last fleet flush failed", exc)
                self._emit_all()
            else:
                self._flush_safely(spread=False)
            if self.repeater is not None:
                self.repeater.stop()

        d.addBoth(last_flush)
        return d


def build_input(name: str, config: Config, context: InputContext) -> StatsdInput:
    return StatsdInput(name, config, context)
