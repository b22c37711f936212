"""The ``graphite`` output: metric points to carbon over persistent TCP connections.

One ``CarbonDestination`` (and so one delivery queue) per configured
destination; with several, each series goes where carbon-relay's consistent
hashing would send it (``obsd.codecs.carbonhash.ConsistentHashRing``), so obsd can front
an existing Graphite cluster.  Each destination keeps one connection open with
``ClientService`` (reconnecting with backoff).  A batch is written while
connected, held while the transport has paused us (its write buffer is full),
and fails while disconnected so the queue keeps it and retries with backoff;
the queue's bounded buffer is what holds points through an outage, and what
overflows is counted.

Names are sanitised and prefixed once; NaN and infinities are never sent;
timestamps are whole seconds.
"""

from __future__ import annotations

import math
import pickle
import struct
from typing import Any, Literal

import attrs
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from obsd import events
from obsd.codecs.carbonhash import ConsistentHashRing
from obsd.codecs.graphite import PICKLE_POINTS_PER_FRAME, format_value, graphite_path
from obsd.config.model import ObsdConfig, OutputConfig
from obsd.config.schema import Problems, at_least, setting
from obsd.ops.log import get_logger
from obsd.outputs.base import Output, OutputContext, SendResult

ACCEPTS = frozenset({events.METRIC})
DEFAULT_KINDS = frozenset({events.METRIC})
_FRAME_LENGTH = struct.Struct("!L")


@attrs.frozen(kw_only=True)
class Config(OutputConfig):
    """``[outputs.graphite]``."""

    destinations: list[str] = setting(
        factory=lambda: ["127.0.0.1:2003"],
        help='carbon receivers, "host:port" or "host:port:instance" (instance: the ring node)',
    )
    protocol: Literal["plaintext", "pickle"] = setting(
        "plaintext", help="carbon's line protocol (port 2003) or pickle protocol (port 2004)"
    )
    hashing: Literal["carbon_ch", "fnv1a_ch"] = setting(
        "carbon_ch", help="consistent hashing across several destinations, as carbon-relay"
    )
    replicas: int = setting(100, check=at_least(1), help="ring positions per destination")
    prefix: str = setting("", help="put before every name, once (not again when present)")
    connect_timeout: float = setting(
        10.0, check=at_least(0.1), help="seconds per connect",
        client_sees="an attempt taking longer is abandoned and retried with backoff; points stay "
                    "queued",
    )
    reconnect_initial: float = setting(
        0.5, check=at_least(0.01), help="first reconnect delay, seconds"
    )
    reconnect_max: float = setting(
        30.0, check=at_least(0.01), help="reconnect delay cap",
        client_sees="carbon coming back is reconnected to within this many seconds",
    )
    batch_size: int = setting(5000, check=at_least(1), help="points per write at most")
    batch_timeout: float = setting(
        0.2, check=at_least(0), help="seconds the first point of a batch waits for more"
    )


def parse_destination(text: str) -> tuple[str, int, str | None]:
    """``host:port[:instance]`` (``[v6]:port`` too) as (host, port, instance)."""
    instance: str | None = None
    rest = text
    if rest.startswith("["):
        host, sep, tail = rest[1:].partition("]")
        if not sep or not tail.startswith(":"):
            raise ValueError(f"expected [host]:port[:instance], got {text!r}")
        parts = tail[1:].split(":")
    else:
        host, *parts = rest.split(":")
    if len(parts) not in (1, 2) or not host or not parts[0].isdigit():
        raise ValueError(f"expected host:port or host:port:instance, got {text!r}")
    port = int(parts[0])
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in {text!r}")
    if len(parts) == 2:
        instance = parts[1] or None
    return host, port, instance


def check_config(name: str, cfg: Config, whole: ObsdConfig, problems: Problems) -> None:
    """Destinations parse, and no two are the same ring node (carbon ignores the port)."""
    path = f"outputs.{name}.destinations"
    if not cfg.destinations:
        problems.add(path, "at least one destination is needed")
    nodes: dict[tuple[str, str | None], str] = {}
    for i, text in enumerate(cfg.destinations):
        try:
            host, _, instance = parse_destination(text)
        except ValueError as exc:
            problems.add(f"{path}[{i}]", str(exc))
            continue
        node = (host, instance)
        if node in nodes:
            problems.add(
                f"{path}[{i}]",
                f"{text!r} is the same hash-ring node as {nodes[node]!r} (carbon ignores the "
                "port); give each an instance: host:port:instance",
            )
        nodes[node] = text


def encode_pickle_records(batch: list[bytes]) -> bytes:
    """Plaintext records (``path value ts\\n``) as pickle frames of at most 500 points."""
    points = []
    for record in batch:
        path, value, timestamp = record.split()
        points.append((path.decode("utf-8"), (int(timestamp), float(value))))
    frames = []
    for start in range(0, len(points), PICKLE_POINTS_PER_FRAME):
        body = pickle.dumps(points[start : start + PICKLE_POINTS_PER_FRAME], protocol=2)
        frames.append(_FRAME_LENGTH.pack(len(body)) + body)
    return b"".join(frames)


@implementer(IPushProducer)
class CarbonProtocol(Protocol):
    """One connection to carbon; a streaming producer registered with its transport.

    The transport pauses us when its write buffer fills and resumes us when it
    drains: that is how a slow carbon pushes back on obsd.
    """

    def __init__(self, destination: CarbonDestination) -> None:
        self.destination = destination
        self.paused = False

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        self.destination.connected(self)

    def connectionLost(self, reason: Any = None) -> None:
        self.destination.disconnected(self, reason)

    def dataReceived(self, data: bytes) -> None:
        """carbon says nothing on these ports; anything it sends is ignored."""

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.destination.resumed(self)

    def stopProducing(self) -> None:
        self.paused = True


class _CarbonFactory(Factory):
    def __init__(self, destination: CarbonDestination) -> None:
        self.destination = destination

    def buildProtocol(self, addr: Any) -> CarbonProtocol:
        return CarbonProtocol(self.destination)


class CarbonDestination:
    """One carbon receiver: a persistent connection and the send that one queue calls."""

    def __init__(self, text: str, config: Config, context: OutputContext, output_name: str) -> None:
        self.key = text
        self.host, self.port, self.instance = parse_destination(text)
        self.node = (self.host, self.instance)
        self.pickle = config.protocol == "pickle"
        self.context = context
        self.protocol: CarbonProtocol | None = None
        self._held: tuple[bytes, defer.Deferred[SendResult | None]] | None = None
        self._log = get_logger(f"obsd.output.{output_name}")
        self.output_name = output_name
        host = self.host.replace(":", "\\:")
        endpoint = clientFromString(
            context.reactor,
            f"tcp:host={host}:port={self.port}:timeout={config.connect_timeout:g}",
        )
        self.service = ClientService(
            endpoint,
            _CarbonFactory(self),
            retryPolicy=backoffPolicy(
                initialDelay=config.reconnect_initial, maxDelay=config.reconnect_max
            ),
            clock=context.reactor,
        )
        self.connects = context.telemetry.counter(f"obsd.output.{output_name}.connects")
        self.bytes_written = context.telemetry.counter(f"obsd.output.{output_name}.bytes_written")

    # -- connection state ---------------------------------------------------------

    def connected(self, protocol: CarbonProtocol) -> None:
        self.protocol = protocol
        self.connects.inc()
        self._log.info("connected to carbon", output=self.output_name, destination=self.key)

    def disconnected(self, protocol: CarbonProtocol, reason: Any) -> None:
        if protocol is not self.protocol:
            return
        self.protocol = None
        held, self._held = self._held, None
        if held is not None:
            held[1].errback(ConnectionError(f"connection to {self.key} lost"))
        self.context.throttle.warning(
            f"{self.output_name}/{self.key}:disconnected",
            "carbon connection lost; reconnecting with backoff",
            output=self.output_name,
            destination=self.key,
            reason=reason.getErrorMessage() if hasattr(reason, "getErrorMessage") else str(reason),
        )

    def resumed(self, protocol: CarbonProtocol) -> None:
        held, self._held = self._held, None
        if held is not None and protocol is self.protocol:
            self._write(protocol, held[0])
            held[1].callback(None)

    # -- sending ------------------------------------------------------------------

    def send(self, batch: list[bytes]) -> defer.Deferred[SendResult | None]:
        """Write the batch now, hold it while paused, or fail it while disconnected."""
        protocol = self.protocol
        if protocol is None:
            return defer.fail(ConnectionError(f"not connected to carbon at {self.key}"))
        data = encode_pickle_records(batch) if self.pickle else b"".join(batch)
        if protocol.paused:
            d: defer.Deferred[SendResult | None] = defer.Deferred()
            self._held = (data, d)
            return d
        self._write(protocol, data)
        return defer.succeed(None)

    def _write(self, protocol: CarbonProtocol, data: bytes) -> None:
        protocol.transport.write(data)  # type: ignore[union-attr]
        self.bytes_written.inc(len(data))

    def start(self) -> None:
        self.service.startService()

    def stop(self) -> defer.Deferred[None]:
        held, self._held = self._held, None
        if held is not None:
            held[1].errback(ConnectionError("stopping"))
        return self.service.stopService()


class GraphiteOutput(Output):
    """Metric events as carbon lines, one queue per destination."""

    type_name = "graphite"

    def __init__(self, name: str, config: Config, context: OutputContext) -> None:
        self.graphite_config = config
        self.destinations = [
            CarbonDestination(d, config, context, name) for d in config.destinations
        ]
        self.ring = ConsistentHashRing(
            (d.node for d in self.destinations), config.replicas, config.hashing
        )
        self._by_node = {d.node: d.key for d in self.destinations}
        self.prefix = config.prefix
        super().__init__(name, config, context)
        self._nonfinite = context.telemetry.counter(f"obsd.output.{name}.skipped_nonfinite")

    def make_destinations(self) -> list[CarbonDestination]:
        return self.destinations

    def point(self, event: dict[str, Any]) -> tuple[str, bytes] | None:
        """(series path, plaintext line) for an event; None for a value that is not finite."""
        value = event[events.VALUE]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"value is not a number: {value!r}")
        if not math.isfinite(value):
            return None
        timestamp = event.get(events.TIMESTAMP)
        if timestamp is None:
            timestamp = self.context.clock.seconds()
        tags = event.get(events.TAGS) or {}
        tag_list = tuple(f"{k}:{v}" for k, v in tags.items()) if isinstance(tags, dict) else ()
        series = event.get(events.GRAPHITE_TAGS, True) is not False
        path = graphite_path(str(event[events.EVENT]), tag_list, self.prefix, series)
        line = f"{path} {format_value(value)} {int(timestamp)}\n"
        return path, line.encode("utf-8")

    def encode(self, event: dict[str, Any]) -> bytes:
        point = self.point(event)
        if point is None:
            raise ValueError("value is not finite")
        return point[1]

    def route(self, event: dict[str, Any]) -> tuple[str, bytes] | None:
        """Encode once; skip non-finite values (counted); the ring's destination for the path."""
        point = self.point(event)
        if point is None:
            self._nonfinite.inc()
            return None
        path, record = point
        if self._single is not None:
            return self.destinations[0].key, record
        return self._by_node[self.ring.get_node(path)], record

    def decode(self, record: bytes) -> Any:
        return record.decode("utf-8", "replace").rstrip("\n")

    def startService(self) -> None:
        super().startService()
        for destination in self.destinations:
            destination.start()

    def stopService(self) -> defer.Deferred[Any]:
        d = super().stopService()

        def close(result: Any) -> defer.Deferred[Any]:
            stops = [defer.maybeDeferred(dest.stop) for dest in self.destinations]
            return defer.gatherResults(stops, consumeErrors=True).addBoth(lambda _: result)

        return d.addBoth(close)


def build_output(name: str, config: Config, context: OutputContext) -> GraphiteOutput:
    return GraphiteOutput(name, config, context)
