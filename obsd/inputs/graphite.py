"""The ``graphite`` input: what programs send to carbon, taken as it is.

uWSGI's ``--carbon``, collectd's ``write_graphite`` and countless scripts write
``path value timestamp`` lines to carbon's port 2003 over TCP or UDP; carbon
relays send pickle frames to port 2004.  With ``format = "plaintext"`` (the
default) each line, with ``format = "pickle"`` each length-prefixed frame (TCP
only), becomes one metric event that goes straight to the metric outputs: no
re-aggregation, as carbon-relay forwards it.  ``event`` is the cleaned path,
``metric`` the same name, ``metric_type`` "gauge", ``stat`` "value", and tags
written into the path (``name;k=v``) are kept as ``tags``.

Parsing is ``obsd.codecs.graphite_plaintext`` (pure).  Bad lines are counted
and logged throttled; a pickle frame that names a class or function is refused,
counted in ``pickle_refused`` and closes that connection.  Work per reactor
turn is bounded by Twisted's read size (64 KiB per connection per turn).
"""

from __future__ import annotations

import struct
from typing import Any, Literal

import attrs
from twisted.application.service import IService
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.python.failure import Failure

from obsd import events
from obsd.codecs import graphite_plaintext as codec
from obsd.config.model import ObsdConfig, StreamInputConfig
from obsd.config.schema import Problems, at_least, setting
from obsd.contracts import InputContext
from obsd.net.endpoints import DATAGRAM_TYPES, STREAM_TYPES, parse_listener
from obsd.net.rcvbuf import tune_receive_buffer
from obsd.net.slots import fair_factory
from obsd.ops.log import get_logger
from obsd.twistedtypes import MultiService

LISTEN_TYPES = STREAM_TYPES | DATAGRAM_TYPES
_LENGTH = struct.Struct("!L")


@attrs.frozen(kw_only=True)
class Config(StreamInputConfig):
    """``[inputs.graphite]``."""

    format: Literal["plaintext", "pickle"] = setting(
        "plaintext",
        help="plaintext lines (carbon's 2003, TCP and UDP) or pickle frames (2004, TCP only)",
    )
    max_line_bytes: int = setting(
        65536,
        check=at_least(64),
        help="a longer plaintext line is refused and counted",
        client_sees="nothing: the line is dropped up to its newline (bad_lines, logged); "
        "the connection stays open",
    )
    max_pickle_frame_bytes: int = setting(
        codec.MAX_PICKLE_FRAME,
        check=at_least(1024),
        help="a longer pickle frame closes the connection (carbon's limit: 1 MiB)",
        client_sees="the connection is closed at the frame's length prefix (bad_frames, logged)",
    )
    receive_buffer_bytes: int = setting(
        8 * 1024 * 1024,
        check=at_least(0),
        help="UDP receive buffer asked of the kernel; 0 leaves it",
        client_sees="nothing: datagrams past a full buffer are lost in the kernel, unseen",
    )


def check_config(name: str, cfg: Config, whole: ObsdConfig, problems: Problems) -> None:
    """Pickle comes over streams only; at least one listener is needed."""
    if not cfg.listen:
        problems.add(f"inputs.{name}.listen", "at least one listen endpoint is needed")
    if cfg.format != "pickle":
        return
    for i, description in enumerate(cfg.listen):
        try:
            listener = parse_listener(description, LISTEN_TYPES)
        except ValueError:
            continue  # reported by the listener checks
        if listener.is_datagram:
            problems.add(
                f"inputs.{name}.listen[{i}]",
                "carbon's pickle protocol is TCP only; use format = \"plaintext\" for UDP",
            )


class GraphiteReceiver:
    """Turns points into metric events and counts what was bad: shared by every listener."""

    def __init__(self, name: str, config: Config, context: InputContext) -> None:
        self.name = name
        self.config = config
        self._clock = context.reactor
        self._metric = context.ingest.metric
        self.throttle = context.throttle
        tel = context.telemetry
        prefix = f"obsd.input.{name}."
        self.points = tel.counter(prefix + "points")
        self.bad_lines = tel.counter(prefix + "bad_lines")
        self.bad_frames = tel.counter(prefix + "bad_frames")
        self.pickle_refused = tel.counter(prefix + "pickle_refused")
        self.connections_total = tel.counter(prefix + "connections")

    def lines(self, data: bytes, peer: str) -> None:
        """Complete plaintext lines (a datagram, or a run of TCP lines)."""
        points, bad = codec.parse_plaintext(data, self._clock.seconds())
        self.emit(points)
        if bad:
            self.bad(bad, peer)

    def frame(self, body: bytes, peer: str) -> None:
        """One pickle frame's body; raises ``GraphiteParseError`` when it is unreadable."""
        points, bad = codec.parse_pickle(body, self._clock.seconds())
        self.emit(points)
        if bad:
            self.bad(bad, peer)

    def emit(self, points: list[codec.GraphitePoint]) -> None:
        metric = self._metric
        for name, value, timestamp, tags in points:
            metric(
                {
                    events.EVENT: name,
                    events.VALUE: value,
                    events.TIMESTAMP: timestamp,
                    events.TAGS: tags,
                    events.METRIC_NAME: name,
                    events.METRIC_TYPE: "gauge",
                    events.STAT: "value",
                }
            )
        self.points.inc(len(points))

    def bad(self, bad: list[tuple[bytes, str]], peer: str) -> None:
        self.bad_lines.inc(len(bad))
        line, reason = bad[0]
        self.throttle.warning(
            f"input:{self.name}:bad_line",
            "bad graphite lines skipped",
            input=self.name,
            peer=peer,
            example=line[:200].decode("utf-8", "replace"),
            reason=reason,
            bad_lines=len(bad),
        )

    def bad_frame(self, exc: codec.GraphiteParseError, peer: str) -> None:
        self.bad_frames.inc()
        if exc.refused_global:
            self.pickle_refused.inc()
        self.throttle.warning(
            f"input:{self.name}:bad_frame",
            "graphite pickle frame refused; closing that connection",
            input=self.name,
            peer=peer,
            reason=str(exc),
        )


def _peer(address: Any) -> str:
    host = getattr(address, "host", None)
    if host is not None:
        return f"{host}:{getattr(address, 'port', '')}"
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address or "unix")


class GraphiteDatagramProtocol(DatagramProtocol):
    """UDP plaintext: one or more lines per datagram."""

    noisy = False

    def __init__(self, receiver: GraphiteReceiver) -> None:
        self.receiver = receiver

    def startProtocol(self) -> None:
        handle = getattr(self.transport, "getHandle", None)
        if handle is not None:
            name = self.receiver.name
            asked = self.receiver.config.receive_buffer_bytes
            tune_receive_buffer(handle(), asked, get_logger(f"obsd.input.{name}"), name)

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.receiver.lines(datagram, _peer(addr))


class GraphiteLineProtocol(Protocol):
    """TCP plaintext: complete lines go to the receiver; an overlong line is cut and counted."""

    factory: GraphiteStreamFactory
    _buffer = b""
    _counted = False
    _skipping = False
    peer = "?"

    def connectionMade(self) -> None:
        self.peer = _peer(self.transport.getPeer())  # type: ignore[union-attr]
        self._counted = self.factory.admit(self)

    def dataReceived(self, data: bytes) -> None:
        if self._skipping:  # the rest of an overlong line: drop it up to its newline
            cut = data.find(b"\n")
            if cut < 0:
                return
            self._skipping = False
            data = data[cut + 1 :]
        if self._buffer:
            data = self._buffer + data
        end = data.rfind(b"\n")
        if end < 0:
            self._buffer = data
        else:
            self._buffer = data[end + 1 :]
            self.factory.receiver.lines(data[: end + 1], self.peer)
        limit = self.factory.receiver.config.max_line_bytes
        if len(self._buffer) > limit:
            self.factory.receiver.bad(
                [(self._buffer, f"line longer than {limit} bytes")], self.peer
            )
            self._buffer = b""
            self._skipping = True

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self._buffer.strip():  # the last line may lack its newline
            self.factory.receiver.lines(self._buffer, self.peer)
        self._buffer = b""
        if self._counted:
            self.factory.release(self)


class GraphitePickleProtocol(Protocol):
    """TCP pickle: 4-byte big-endian length, then the pickled list; a bad frame closes."""

    factory: GraphiteStreamFactory
    _buffer = b""
    _closed = False
    _counted = False
    peer = "?"

    def connectionMade(self) -> None:
        self.peer = _peer(self.transport.getPeer())  # type: ignore[union-attr]
        self._counted = self.factory.admit(self)

    def dataReceived(self, data: bytes) -> None:
        if self._closed:
            return
        buffer = self._buffer + data if self._buffer else data
        receiver = self.factory.receiver
        limit = receiver.config.max_pickle_frame_bytes
        offset = 0
        try:
            while len(buffer) - offset >= 4:
                (length,) = _LENGTH.unpack_from(buffer, offset)
                if length > limit:
                    raise codec.GraphiteParseError(f"frame of {length} bytes, over {limit}")
                if len(buffer) - offset - 4 < length:
                    break
                body = buffer[offset + 4 : offset + 4 + length]
                offset += 4 + length
                receiver.frame(body, self.peer)
        except codec.GraphiteParseError as exc:
            self._closed = True
            self._buffer = b""
            receiver.bad_frame(exc, self.peer)
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        self._buffer = buffer[offset:]

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._buffer = b""
        if self._counted:
            self.factory.release(self)


class GraphiteStreamFactory(Factory):
    """Builds the line or pickle protocol per connection (``FairFactory`` holds the caps)."""

    noisy = False

    def __init__(self, receiver: GraphiteReceiver, context: InputContext) -> None:
        self.receiver = receiver
        pickled = receiver.config.format == "pickle"
        protocol: Any = GraphitePickleProtocol if pickled else GraphiteLineProtocol
        self.protocol = protocol
        self.flow_control = context.flow_control
        self.connections: set[Protocol] = set()

    def admit(self, protocol: Any) -> bool:
        """Register a connection ``FairFactory`` let in (it holds the caps)."""
        self.connections.add(protocol)
        self.receiver.connections_total.inc()
        self.flow_control.register(protocol.transport)
        return True

    def release(self, protocol: Any) -> None:
        self.connections.discard(protocol)
        self.flow_control.unregister(protocol.transport)


def build_input(name: str, config: Config, context: InputContext) -> IService:
    """The graphite input's service: one listener per ``listen`` string."""
    receiver = GraphiteReceiver(name, config, context)
    service = MultiService()
    service.setName(name)
    factory = fair_factory(GraphiteStreamFactory(receiver, context), name, config, context)
    for listener in context.listener_services(
        list(config.listen),
        LISTEN_TYPES,
        factory=factory,
        datagram=GraphiteDatagramProtocol(receiver),
    ):
        listener.setServiceParent(service)
    return service
