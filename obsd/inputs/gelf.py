"""The ``gelf`` input: Graylog's GELF over UDP, TCP and HTTP, as Graylog takes it.

UDP datagrams may be zlib- or gzip-compressed and chunked; chunks are put back
together by ``obsd.codecs.gelf.ChunkAssembler`` (bounded in messages, bytes and
5 s), and sets still incomplete when they time out are counted in
``obsd.input.NAME.incomplete``.  TCP carries uncompressed messages, each ended
by a NUL byte.  HTTP is ``POST /gelf`` on the shared ``[http]`` site (path set
by ``http_path``), answered ``202 Accepted`` as Graylog does, ``400`` for a bad
message, ``413`` past ``max_message_bytes`` and ``503`` while outputs are
congested.  Docker's ``gelf`` log driver and graypy speak these.

Each message becomes one ``log`` event (see ``obsd.codecs.gelf.parse_gelf``);
bad ones are counted in ``bad_messages`` and logged throttled.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from twisted.application.service import IService
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from twisted.web.server import Request

from obsd import events
from obsd.codecs import gelf as codec
from obsd.config.model import ObsdConfig, StreamInputConfig
from obsd.config.schema import Problems, at_least, setting
from obsd.contracts import InputContext
from obsd.net.endpoints import DATAGRAM_TYPES, STREAM_TYPES
from obsd.net.rcvbuf import tune_receive_buffer
from obsd.net.slots import fair_factory
from obsd.ops.log import get_logger
from obsd.twistedtypes import MultiService, Resource

LISTEN_TYPES = STREAM_TYPES | DATAGRAM_TYPES
MiB = 1024 * 1024


@attrs.frozen(kw_only=True)
class Config(StreamInputConfig):
    """``[inputs.gelf]``."""

    http_path: str = setting(
        "/gelf", help='where GELF HTTP is mounted on [http]; "" = no HTTP'
    )
    max_message_bytes: int = setting(
        codec.MAX_MESSAGE_BYTES,
        check=at_least(1024),
        help="a message (after decompression) or HTTP body past this is refused",
        client_sees="HTTP: 413 with a reason; UDP and TCP: nothing, the message is dropped "
        "(bad_messages, logged)",
    )
    max_pending_messages: int = setting(
        1000,
        check=at_least(1),
        help="chunked UDP messages held incomplete at most",
        client_sees="nothing: the oldest incomplete message is dropped (incomplete)",
    )
    max_pending_bytes: int = setting(
        64 * MiB,
        check=at_least(1024),
        help="bytes of chunks held at most",
        client_sees="nothing: the oldest incomplete messages are dropped (incomplete)",
    )
    chunk_timeout: float = setting(
        codec.CHUNK_TIMEOUT,
        check=at_least(0.1),
        help="seconds a chunked message may take to arrive whole (Graylog: 5)",
        client_sees="nothing: a message still missing chunks is dropped (incomplete)",
    )
    receive_buffer_bytes: int = setting(
        8 * MiB,
        check=at_least(0),
        help="UDP receive buffer asked of the kernel; 0 leaves it",
        client_sees="nothing: datagrams past a full buffer are lost in the kernel, unseen",
    )


def check_config(name: str, cfg: Config, whole: ObsdConfig, problems: Problems) -> None:
    """The HTTP path is absolute and not shared; something must listen."""
    path = cfg.http_path
    if path and (not path.startswith("/") or path == "/" or "//" in path):
        problems.add(f"inputs.{name}.http_path", f'an absolute path such as "/gelf", not {path!r}')
    if not cfg.listen and not (path and whole.http.listen):
        problems.add(
            f"inputs.{name}.listen",
            "no listen endpoints and no HTTP (http_path empty or [http] listen empty)",
        )
    for other, other_cfg in whole.inputs.items():
        if other < name and isinstance(other_cfg, Config) and path and other_cfg.http_path == path:
            problems.add(f"inputs.{name}.http_path", f"inputs.{other} is mounted at {path}")


class GelfReceiver:
    """Turns payloads into log events and counts everything: shared by every listener."""

    def __init__(self, name: str, config: Config, context: InputContext) -> None:
        self.name = name
        self.config = config
        self.context = context
        self._clock = context.reactor
        self._log = context.ingest.log
        self.throttle = context.throttle
        self.assembler = codec.ChunkAssembler(
            config.max_pending_messages, config.max_pending_bytes, config.chunk_timeout
        )
        tel = context.telemetry
        prefix = f"obsd.input.{name}."
        self.messages = tel.counter(prefix + "messages")
        self.bad_messages = tel.counter(prefix + "bad_messages")
        self.chunks = tel.counter(prefix + "chunks")
        self.bad_chunks = tel.counter(prefix + "bad_chunks")
        self.incomplete = tel.counter(prefix + "incomplete")
        self.id_dropped = tel.counter(prefix + "id_fields_dropped")
        self.connections_total = tel.counter(prefix + "connections")
        tel.gauge(prefix + "pending_chunked", lambda: len(self.assembler))

    # -- the three ways in ----------------------------------------------------------

    def datagram(self, data: bytes, peer: str) -> None:
        """One UDP datagram: a chunk, or a whole (maybe compressed) message."""
        if data[:2] == codec.CHUNK_MAGIC:
            assembler = self.assembler
            self.chunks.inc()
            now = self._clock.seconds()
            assembler.expire(now)
            try:
                payload = assembler.add(data, now)
            except codec.GelfParseError as exc:
                assembler.bad_chunks += 1
                self.bad(exc, peer)
                return
            finally:
                self._sync()
            if payload is None:
                return
            data = payload
        try:
            self.message(codec.decompress(data, self.config.max_message_bytes), peer)
        except codec.GelfParseError as exc:
            self.bad_messages.inc()
            self.bad(exc, peer)

    def message(self, data: bytes, peer: str) -> None:
        """One uncompressed message; raises ``GelfParseError`` when it is not GELF."""
        fields, dropped_id = codec.parse_gelf(data)
        if dropped_id:
            self.id_dropped.inc()
        if "peer" in fields:  # a sender's own "peer" never hides the real one
            fields[events.COLLISION_PREFIX + "peer"] = fields.pop("peer")
        fields["peer"] = peer
        self.messages.inc()
        self._log(fields)

    # -- bookkeeping ----------------------------------------------------------------

    def _sync(self) -> None:
        """The assembler's own tallies, mirrored into the counters."""
        self.incomplete.value = self.assembler.incomplete
        self.bad_chunks.value = self.assembler.bad_chunks

    def expire(self) -> None:
        """Drop chunk sets older than ``chunk_timeout`` (runs every second)."""
        self.assembler.expire(self._clock.seconds())
        self._sync()

    def bad(self, exc: codec.GelfParseError, peer: str) -> None:
        self.throttle.warning(
            f"input:{self.name}:bad",
            "bad GELF message skipped",
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


class GelfDatagramProtocol(DatagramProtocol):
    """GELF UDP: a datagram is a message or one chunk of one."""

    noisy = False

    def __init__(self, receiver: GelfReceiver) -> None:
        self.receiver = receiver

    def startProtocol(self) -> None:
        handle = getattr(self.transport, "getHandle", None)
        if handle is not None:
            name = self.receiver.name
            asked = self.receiver.config.receive_buffer_bytes
            tune_receive_buffer(handle(), asked, get_logger(f"obsd.input.{name}"), name)

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.receiver.datagram(datagram, _peer(addr))


class GelfStreamProtocol(Protocol):
    """GELF TCP: messages ended by NUL; an overlong one is skipped up to its NUL."""

    factory: GelfStreamFactory
    _buffer = b""
    _skipping = False
    _counted = False
    peer = "?"

    def connectionMade(self) -> None:
        self.peer = _peer(self.transport.getPeer())  # type: ignore[union-attr]
        self._counted = self.factory.admit(self)

    def dataReceived(self, data: bytes) -> None:
        receiver = self.factory.receiver
        limit = receiver.config.max_message_bytes
        if self._skipping:
            cut = data.find(b"\0")
            if cut < 0:
                return
            self._skipping = False
            data = data[cut + 1 :]
        buffer = self._buffer + data if self._buffer else data
        *frames, rest = buffer.split(b"\0")
        for frame in frames:
            self._frame(frame)
        if len(rest) > limit:
            receiver.bad_messages.inc()
            receiver.bad(
                codec.GelfParseError(f"message over {limit} bytes", too_large=True), self.peer
            )
            rest = b""
            self._skipping = True
        self._buffer = rest

    def _frame(self, frame: bytes) -> None:
        if not frame.strip():
            return
        receiver = self.factory.receiver
        try:
            receiver.message(frame, self.peer)
        except codec.GelfParseError as exc:
            receiver.bad_messages.inc()
            receiver.bad(exc, self.peer)

    def connectionLost(self, reason: Failure | None = None) -> None:
        rest, self._buffer = self._buffer, b""
        if rest.strip() and not self._skipping:  # the last message may lack its NUL
            self._frame(rest)
        if self._counted:
            self.factory.release(self)


class GelfStreamFactory(Factory):
    """Builds a ``GelfStreamProtocol`` per connection (``FairFactory`` holds the caps)."""

    protocol = GelfStreamProtocol  # type: ignore[assignment]
    noisy = False

    def __init__(self, receiver: GelfReceiver) -> None:
        self.receiver = receiver
        self.flow_control = receiver.context.flow_control
        self.connections: set[Protocol] = set()

    def admit(self, protocol: GelfStreamProtocol) -> bool:
        """Register a connection ``FairFactory`` let in (it holds the caps)."""
        self.connections.add(protocol)
        self.receiver.connections_total.inc()
        self.flow_control.register(protocol.transport)
        return True

    def release(self, protocol: GelfStreamProtocol) -> None:
        self.connections.discard(protocol)
        self.flow_control.unregister(protocol.transport)


class GelfHttpResource(Resource):
    """``POST /gelf``: one message per request, compressed or not (graypy sends zlib)."""

    isLeaf = True

    def __init__(self, receiver: GelfReceiver) -> None:
        super().__init__()
        self.receiver = receiver
        tel = receiver.context.telemetry
        self._prefix = f"obsd.input.{receiver.name}.http."
        self._requests = tel.counter(self._prefix + "requests")
        self._telemetry = tel

    def max_body_bytes(self, path: bytes, headers: Any) -> int:
        """The HTTP site refuses a larger body before reading it."""
        return self.receiver.config.max_message_bytes

    def _answer(self, request: Request, status: int, message: str = "") -> bytes:
        request.setResponseCode(status)
        if status >= 300:
            self._telemetry.counter(f"{self._prefix}rejected.{status}").inc()
            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"type": "GelfError", "message": message}).encode()
        return b""

    def render_POST(self, request: Request) -> bytes:
        receiver = self.receiver
        self._requests.inc()
        flow = receiver.context.flow_control
        if flow.congested:
            request.setHeader(b"retry-after", str(flow.retry_after).encode())
            return self._answer(request, 503, "obsd is shedding load")
        limit = receiver.config.max_message_bytes
        length = request.getHeader(b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > limit:
            return self._answer(request, 413, f"body over {limit} bytes")
        body = b""
        if request.content is not None:
            request.content.seek(0)
            body = request.content.read(limit + 1)
        if len(body) > limit:
            return self._answer(request, 413, f"body over {limit} bytes")
        peer = _peer(request.getClientAddress())
        try:
            receiver.message(codec.decompress(body, limit), peer)
        except codec.GelfParseError as exc:
            receiver.bad_messages.inc()
            receiver.bad(exc, peer)
            return self._answer(request, 413 if exc.too_large else 400, str(exc))
        return self._answer(request, 202)

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"allow", b"POST")
        return self._answer(request, 405, "POST GELF messages here")


class GelfInput(MultiService):
    """The listeners of one GELF input and the timer that expires chunk sets."""

    def __init__(self, receiver: GelfReceiver) -> None:
        super().__init__()
        self.receiver = receiver
        self._loop: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self.receiver.expire)
        self._loop.clock = self.receiver.context.reactor
        self._loop.start(1.0, now=False)

    def stopService(self) -> Any:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        return super().stopService()


def build_input(name: str, config: Config, context: InputContext) -> IService:
    """The GELF input: UDP and TCP listeners, and ``POST http_path`` on ``[http]``."""
    receiver = GelfReceiver(name, config, context)
    service = GelfInput(receiver)
    service.setName(name)
    factory = fair_factory(GelfStreamFactory(receiver), name, config, context)
    # the largest UDP datagram: chunks are at most 8192 bytes, whole messages up to 64 KiB
    for listener in context.listener_services(
        list(config.listen),
        LISTEN_TYPES,
        factory=factory,
        datagram=GelfDatagramProtocol(receiver),
        max_packet_size=65536,
    ):
        listener.setServiceParent(service)
    if config.http_path:
        segments = tuple(s for s in config.http_path.split("/") if s)
        context.http.mount(segments, GelfHttpResource(receiver))
    return service
