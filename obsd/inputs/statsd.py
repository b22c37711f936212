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

import ipaddress
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import attrs
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.task import LoopingCall

from obsd.aggregation.statsd import AggregatorSettings, StatsdAggregator
from obsd.codecs.graphite import MetricPoint
from obsd.config.model import ListeningInputConfig, ObsdConfig
from obsd.config.schema import Problems, at_least, setting
from obsd.net.endpoints import DATAGRAM_TYPES, STREAM_TYPES
from obsd.ops.log import get_logger

LISTEN_TYPES = STREAM_TYPES | DATAGRAM_TYPES

MiB = 1024 * 1024
#: A TCP line longer than this is a bad line (and the connection's buffer is cut).
MAX_LINE_BYTES = 64 * 1024
#: Linux's SO_RCVBUFFORCE (33), which Python's socket module does not name.
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
#: Repeated TCP data is cut into datagrams of at most this many bytes, on line ends.
REPEAT_DATAGRAM_BYTES = 8192
#: Points handed to the event chain per reactor turn when a flush is large.
EMIT_CHUNK = 2000


@attrs.frozen(kw_only=True)
class HistogramConfig:
    """``[[inputs.statsd.histogram]]``: bins for timers whose name contains ``metric``."""

    metric: str = setting("", help="a substring of the timer name; the first match wins")
    bins: list[float | str] = setting(
        factory=list, help='upper bin edges, ascending; "inf" for the last open bin'
    )


@attrs.frozen(kw_only=True)
class Config(ListeningInputConfig):
    """``[inputs.statsd]``."""

    flush_interval: float = setting(
        10.0, check=at_least(0.01), help="seconds between flushes (Etsy: flushInterval)"
    )
    percentiles: list[float] = setting(
        factory=lambda: [90.0], help="timer percentiles (Etsy: percentThreshold)"
    )
    legacy_namespace: bool = setting(True, help="stats.NAME / stats_counts.NAME names")
    graphite_tags: bool = setting(
        False, help="DogStatsD tags become Graphite tagged series name;k=v (else dropped)"
    )
    delete_idle_stats: bool = setting(False, help="default for the four delete_* options")
    delete_counters: bool | None = setting(
        None, help="drop idle counters (else send 0); unset: delete_idle_stats decides"
    )
    delete_timers: bool | None = setting(
        None, help="drop idle timers (else count 0); unset: delete_idle_stats decides"
    )
    delete_gauges: bool | None = setting(
        None, help="drop idle gauges (else resend); unset: delete_idle_stats decides"
    )
    delete_sets: bool | None = setting(
        None, help="drop idle sets (else count 0); unset: delete_idle_stats decides"
    )
    gauges_max_ttl: int = setting(
        1, check=at_least(1), help="flushes a gauge stays idle before delete_gauges drops it"
    )
    flush_counts: bool = setting(True, help="also send the raw count (stats_counts.NAME)")
    prefix_stats: str = setting("statsd", help="name of statsd's own metrics (prefixStats)")
    global_prefix: str = setting("stats", help="root when legacy_namespace = false")
    prefix_counter: str = setting("counters", help="counter part when legacy_namespace = false")
    prefix_timer: str = setting("timers", help="timer part when legacy_namespace = false")
    prefix_gauge: str = setting("gauges", help="gauge part when legacy_namespace = false")
    prefix_set: str = setting("sets", help="set part when legacy_namespace = false")
    global_suffix: str = setting("", help="appended to every name")
    histogram: list[HistogramConfig] = setting(factory=list, help="timer histogram bins")
    calculated_timer_metrics: list[str] = setting(
        factory=list, help="timer stats to keep (mean, upper, mean_percent...); empty: all"
    )
    receive_buffer_bytes: int = setting(
        8 * MiB, check=at_least(0), help="UDP receive buffer asked of the kernel; 0 leaves it",
        client_sees="nothing (UDP has no answer); a larger buffer means fewer datagrams dropped "
                    "by the kernel in bursts",
    )
    max_metrics: int = setting(
        200_000, check=at_least(1), help="series held at most between flushes (drops counted)",
        client_sees="nothing (UDP has no answer); samples of new series are dropped until the "
                    "next flush and counted (dropped_metrics)",
    )
    max_set_size: int = setting(
        100_000, check=at_least(1), help="members one set holds at most (drops counted)",
        client_sees="nothing; further members are dropped and counted (dropped_set_members), so "
                    "the set's count stops there",
    )
    max_timer_samples: int = setting(
        100_000,
        check=at_least(1),
        help="samples one timer keeps per flush interval (count stays exact; drops counted)",
        client_sees="nothing; count and count_ps stay exact, the other timer stats use the "
                    "samples kept; drops counted (dropped_timer_samples)",
    )
    repeat_to: list[str] = setting(
        factory=list, help='"host:port" StatsD servers that get the raw lines too (UDP)'
    )


def parse_host_port(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` as (host, port); ValueError when it is not."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected host:port, got {text!r}")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in {text!r}")
    return host.strip("[]"), port


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
    for i, hist in enumerate(cfg.histogram):
        for edge in hist.bins:
            if isinstance(edge, str) and edge != "inf":
                problems.add(f"{path}.histogram[{i}].bins", f'bins are numbers or "inf": {edge!r}')


def aggregator_settings(cfg: Config) -> AggregatorSettings:
    """The aggregator's settings from the input's config."""
    return AggregatorSettings(
        flush_interval=cfg.flush_interval,
        percentiles=tuple(cfg.percentiles),
        legacy_namespace=cfg.legacy_namespace,
        graphite_tags=cfg.graphite_tags,
        delete_idle_stats=cfg.delete_idle_stats,
        delete_counters=cfg.delete_counters,
        delete_timers=cfg.delete_timers,
        delete_gauges=cfg.delete_gauges,
        delete_sets=cfg.delete_sets,
        gauges_max_ttl=cfg.gauges_max_ttl,
        flush_counts=cfg.flush_counts,
        prefix_stats=cfg.prefix_stats,
        global_prefix=cfg.global_prefix,
        prefix_counter=cfg.prefix_counter,
        prefix_timer=cfg.prefix_timer,
        prefix_gauge=cfg.prefix_gauge,
        prefix_set=cfg.prefix_set,
        global_suffix=cfg.global_suffix,
        histogram=tuple((h.metric, tuple(h.bins)) for h in cfg.histogram),
        calculated_timer_metrics=tuple(cfg.calculated_timer_metrics),
        max_metrics=cfg.max_metrics,
        max_set_size=cfg.max_set_size,
        max_timer_samples=cfg.max_timer_samples,
    )


def tags_dict(tags: tuple[str, ...]) -> dict[str, str]:
    """``("k:v", "flag")`` as ``{"k": "v", "flag": "true"}`` (carbon's form of a bare tag)."""
    out: dict[str, str] = {}
    for tag in tags:
        key, colon, value = tag.partition(":")
        out[key] = value if colon else "true"
    return out


# -- receiving ----------------------------------------------------------------------


def set_receive_buffer(sock: Any, asked: int, platform: str = sys.platform) -> tuple[int, bool]:
    """Ask for ``asked`` bytes of receive buffer; return (bytes granted, capped?).

    ``SO_RCVBUFFORCE`` (root) passes ``net.core.rmem_max``; otherwise Linux caps
    ``SO_RCVBUF`` at it.  Linux reports twice the usable size it granted.
    """
    options = [socket.SO_RCVBUF]
    if platform.startswith("linux"):
        options.insert(0, SO_RCVBUFFORCE)
    for option in options:
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, asked)
            break
        except OSError:
            continue
    reported = int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
    granted = reported // 2 if platform.startswith("linux") else reported
    return granted, granted < asked


def tune_receive_buffer(sock: Any, asked: int, log: Any, input_name: str) -> None:
    """Ask for ``asked`` bytes (0: leave it); log the grant, with the sysctl when capped.

    Every UDP input does this: most UDP loss at real rates is this buffer
    overflowing while the process is busy for a moment.
    """
    if not asked:
        return
    try:
        granted, capped = set_receive_buffer(sock, asked)
    except OSError as exc:
        log.warning("cannot set the UDP receive buffer", input=input_name, error=str(exc))
        return
    if capped:
        log.warning(
            "UDP receive buffer smaller than asked; raise the kernel cap",
            input=input_name,
            asked_bytes=asked,
            granted_bytes=granted,
            hint=f"sysctl -w net.core.rmem_max={asked}",
        )
    else:
        log.info(
            "UDP receive buffer set", input=input_name, asked_bytes=asked, granted_bytes=granted
        )


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

    def connectionMade(self) -> None:
        self.statsd.context.flow_control.register(self.transport)
        self.statsd.connections += 1

    def connectionLost(self, reason: Any = None) -> None:
        self.statsd.context.flow_control.unregister(self.transport)
        self.statsd.connections -= 1
        if self._buffer.strip():
            self.statsd.receive(self._buffer)
        self._buffer = b""

    def dataReceived(self, data: bytes) -> None:
        if self._buffer:
            data = self._buffer + data
        end = data.rfind(b"\n")
        if end < 0:
            self._buffer = data
        else:
            self._buffer = data[end + 1 :]
            self.statsd.receive(data[: end + 1])
        if len(self._buffer) > MAX_LINE_BYTES:
            self.statsd.line_too_long(self._buffer)
            self._buffer = b""


class StatsdLineFactory(Factory):
    """Builds a line protocol per TCP connection."""

    def __init__(self, statsd: StatsdInput) -> None:
        self.statsd = statsd

    def buildProtocol(self, addr: Any) -> StatsdLineProtocol:
        return StatsdLineProtocol(self.statsd)


# -- repeating ----------------------------------------------------------------------


class Repeater(DatagramProtocol):
    """Sends raw StatsD data on to other servers over UDP, never blocking.

    A datagram the kernel will not take now (``EAGAIN``, no route) is counted
    and dropped, as a UDP sender would lose it anyway.
    """

    def __init__(
        self, targets: list[tuple[str, int]], reactor: Any, on_error: Callable[[str], None]
    ) -> None:
        self.targets = targets
        self.reactor = reactor
        self.on_error = on_error
        self.addresses: list[tuple[str, int]] = []
        self.port: Any = None
        self.sent = 0
        self.errors = 0

    def start(self) -> defer.Deferred[None]:
        """Bind an ephemeral UDP port and resolve the targets (without blocking)."""
        v6 = False
        resolved: list[defer.Deferred[Any]] = []
        for host, port in self.targets:
            try:
                ip = ipaddress.ip_address(host)
                v6 = v6 or ip.version == 6
                resolved.append(defer.succeed((str(ip), port)))
            except ValueError:
                d = self.reactor.resolve(host)
                d.addCallback(lambda addr, port=port: (addr, port))
                resolved.append(d)
        self.port = self.reactor.listenUDP(0, self, interface="::" if v6 else "0.0.0.0")
        d = defer.gatherResults(resolved, consumeErrors=True)

        def done(addresses: list[tuple[str, int]]) -> None:
            self.addresses = addresses
            return None

        def failed(failure: Any) -> None:
            self.on_error(f"cannot resolve a repeat_to host: {failure.getErrorMessage()}")

        return d.addCallbacks(done, failed)

    def stop(self) -> Any:
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None

    def repeat(self, data: bytes) -> None:
        if self.transport is None:
            return
        chunks = [data] if len(data) <= REPEAT_DATAGRAM_BYTES else _split_lines(data)
        for address in self.addresses:
            for chunk in chunks:
                try:
                    self.transport.write(chunk, address)
                    self.sent += 1
                except OSError as exc:  # EAGAIN, ENETUNREACH...: a lost datagram
                    self.errors += 1
                    self.on_error(f"repeat to {address[0]}:{address[1]} failed: {exc}")


def _split_lines(data: bytes, size: int = REPEAT_DATAGRAM_BYTES) -> list[bytes]:
    """Cut ``data`` into pieces of about ``size`` bytes at line ends."""
    chunks: list[bytes] = []
    start = 0
    while start < len(data):
        end = data.rfind(b"\n", start, start + size)
        end = start + size if end <= start else end + 1
        chunks.append(data[start:end])
        start = end
    return chunks


# -- the input ----------------------------------------------------------------------


class StatsdInput(MultiService):
    """Listeners, the aggregator, the flush loop and the repeater of one statsd input."""

    def __init__(
        self,
        name: str,
        config: Config,
        context: Any,
        perf_counter: Callable[[], float] = time.perf_counter,
    ) -> None:
        super().__init__()
        self.name = name
        self.config = config
        self.context = context
        self.aggregator = StatsdAggregator(
            aggregator_settings(config), context.reactor.seconds, perf_counter
        )
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
        self._pending: list[list[MetricPoint]] = []
        self._emit_call: Any = None
        for service in context.listener_services(
            config.listen,
            LISTEN_TYPES,
            factory=StatsdLineFactory(self),
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

    def flush(self, spread: bool = False) -> int:
        """Close the interval: one metric event per point; returns the number of points.

        With ``spread``, a large flush hands its points to the event chain
        ``EMIT_CHUNK`` at a time, one chunk per reactor turn (as txstatsd's
        cooperative flush does), so 100,000 series do not stop the reactor for
        seconds while UDP datagrams pile up in the socket buffer.
        """
        agg = self.aggregator
        self._packets.inc(agg.packets_received)
        self._metrics.inc(agg.metrics_received)
        self._bad.inc(agg.bad_lines_seen)
        self._dropped_metrics.inc(agg.dropped_metrics - self._dropped_metrics.value)
        self._dropped_members.inc(agg.dropped_set_members - self._dropped_members.value)
        self._dropped_samples.inc(agg.dropped_timer_samples - self._dropped_samples.value)
        if self.repeater is not None:
            self._repeated.inc(self.repeater.sent - self._repeated.value)
        points = agg.flush()
        self._flushes.inc()
        self._points.inc(len(points))
        self._pending.append(points)
        if spread and len(points) > EMIT_CHUNK:
            if self._emit_call is None:
                self._emit_call = self.context.reactor.callLater(0, self._emit_some)
        else:
            self._emit_all()
        return len(points)

    def _emit_some(self) -> None:
        """One reactor turn's share of the pending points."""
        self._emit_call = None
        budget = EMIT_CHUNK
        while self._pending and budget > 0:
            points = self._pending[0]
            chunk, rest = points[:budget], points[budget:]
            self._emit(chunk)
            budget -= len(chunk)
            if rest:
                self._pending[0] = rest
            else:
                self._pending.pop(0)
        if self._pending:
            self._emit_call = self.context.reactor.callLater(0, self._emit_some)

    def _emit_all(self) -> None:
        if self._emit_call is not None and self._emit_call.active():
            self._emit_call.cancel()
        self._emit_call = None
        pending, self._pending = self._pending, []
        for points in pending:
            self._emit(points)

    def _emit(self, points: list[MetricPoint]) -> None:
        metric = self.context.ingest.metric
        for name, value, timestamp, tags in points:
            try:
                metric(
                    {
                        "event": name,
                        "value": value,
                        "timestamp": float(timestamp),
                        "tags": tags_dict(tags) if tags else {},
                    }
                )
            except Exception as exc:  # noqa: BLE001 - one point must not stop the flush
                self._flush_errors.inc()
                self.context.throttle.error(
                    f"{self.name}:flush", "cannot emit a flushed point", point=name, error=repr(exc)
                )

    def _flush_safely(self, spread: bool = True) -> None:
        try:
            self.flush(spread)
        except Exception as exc:  # noqa: BLE001 - the loop must keep running
            self._flush_errors.inc()
            self.context.throttle.error(f"{self.name}:flush", "flush failed", error=repr(exc))

    def startService(self) -> None:
        super().startService()
        if self.repeater is not None:
            self.repeater.start()
        self._loop = LoopingCall(self._flush_safely)
        self._loop.clock = self.context.reactor
        self._loop.start(self.config.flush_interval, now=False)

    def stopService(self) -> defer.Deferred[None]:
        """Close the listeners, then flush what they brought in one last time."""
        d = defer.maybeDeferred(super().stopService)

        def last_flush(_: Any) -> None:
            if self._loop is not None and self._loop.running:
                self._loop.stop()
            self._loop = None
            self._flush_safely(spread=False)
            if self.repeater is not None:
                self.repeater.stop()

        d.addBoth(last_flush)
        return d


def build_input(name: str, config: Config, context: Any) -> StatsdInput:
    return StatsdInput(name, config, context)
