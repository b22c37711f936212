"""The ``syslog`` input: a drop-in syslog target over UDP, TCP, TLS and unix sockets.

Datagram listeners (``udp:``, ``unixgram:``) take one message per datagram.
Stream listeners (``tcp:``, ``ssl:``, ``unix:``, ``systemd:``) get a framer per
connection (``framing``: octet counting, LF or NUL, detected per connection by
default); a broken octet count closes only that connection, with a throttled
log line.  Each message is parsed by ``obsd.codecs.syslog.parse_syslog`` (which
never raises) and handed to the ingest logger with the sender's address as
``peer``.  Stream transports register with flow control, so a slow output
pauses reading and the kernel pushes back on the senders.
"""

from __future__ import annotations

import ipaddress
import os
import zoneinfo
from pathlib import Path
from typing import Any, Literal

import attrs
from twisted.application.service import IService
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from obsd import events
from obsd.codecs.framing import Framer, make_framer
from obsd.codecs.syslog import parse_syslog
from obsd.config.model import ObsdConfig, StreamInputConfig
from obsd.config.schema import Problems, at_least, setting
from obsd.contracts import InputContext
from obsd.errors import ParseError
from obsd.net.endpoints import DATAGRAM_TYPES, STREAM_TYPES
from obsd.net.peers import describe_peer, peer_key
from obsd.net.slots import ConnectionSlots
from obsd.twistedtypes import MultiService

LISTEN_TYPES = STREAM_TYPES | DATAGRAM_TYPES

Framing = Literal["auto", "octet", "lf", "nul"]


@attrs.frozen(kw_only=True)
class Config(StreamInputConfig):
    """``[inputs.syslog]``."""

    framing: Framing = setting(
        "auto",
        help="stream framing: auto (per connection), octet (RFC 6587 counting), lf, nul",
    )
    timezone: str = setting(
        "", help="IANA zone of stamps that carry none (RFC 3164); '' = the machine's zone"
    )
    max_message_size: int = setting(
        65536, check=at_least(480), help="bytes; longer messages are cut and flagged truncated",
        client_sees="nothing: a longer message is cut there and kept, flagged truncated = true",
    )


def check_config(name: str, cfg: Config, whole: ObsdConfig, problems: Problems) -> None:
    """The timezone must be a zone this machine knows."""
    if cfg.timezone:
        try:
            zoneinfo.ZoneInfo(cfg.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            problems.add(f"inputs.{name}.timezone", f"unknown IANA time zone {cfg.timezone!r}")


def local_timezone() -> zoneinfo.ZoneInfo:
    """The machine's zone, as rsyslog uses it: ``TZ``, else ``/etc/localtime``, else UTC."""
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        try:
            return zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    localtime = Path("/etc/localtime")
    try:
        with localtime.open("rb") as handle:
            return zoneinfo.ZoneInfo.from_file(handle, key="localtime")
    except (OSError, ValueError):
        return zoneinfo.ZoneInfo("UTC")


def resolve_timezone(name: str) -> zoneinfo.ZoneInfo:
    """The configured zone, or the machine's when ``name`` is empty."""
    return zoneinfo.ZoneInfo(name) if name else local_timezone()


def sender_host(address: Any) -> str | None:
    """The sender's IP when it is another machine: the host of lines that name none."""
    if isinstance(address, IPv4Address | IPv6Address):
        host = address.host
    elif isinstance(address, tuple) and address and isinstance(address[0], str):
        host = address[0]
    else:
        return None
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return None
    return None if ip.is_loopback else host


class SyslogReceiver:
    """Turns one message into an event: the part datagram and stream protocols share."""

    def __init__(self, name: str, config: Config, context: InputContext) -> None:
        self.name = name
        self.max_message_size = config.max_message_size
        self.timezone = resolve_timezone(config.timezone)
        self._clock = context.reactor
        self._log = context.ingest.log
        # an ingest without a list call (a test's) gets the events one by one
        self._log_many = getattr(context.ingest, "log_many", None) or self._each
        self._throttle = context.throttle
        telemetry = context.telemetry
        prefix = f"obsd.input.{name}."
        self.received = telemetry.counter(prefix + "received")
        self.parse_fallbacks = telemetry.counter(prefix + "parse_fallbacks")
        self.truncated = telemetry.counter(prefix + "truncated")

    def message(
        self, data: bytes, peer: str, truncated: bool = False, sender: str | None = None
    ) -> None:
        """Parse one message and hand the event on; ``sender``: a remote sender's IP."""
        self._log(self.fields(data, peer, truncated, sender))

    def messages(self, frames: list[Any], peer: str, sender: str | None = None) -> None:
        """A TCP read's messages: parsed one by one, handed on as one list."""
        if len(frames) == 1:
            frame = frames[0]
            self._log(self.fields(frame.message, peer, frame.truncated, sender))
            return
        fields = self.fields
        self._log_many([fields(f.message, peer, f.truncated, sender) for f in frames])

    def _each(self, batch: list[dict[str, Any]]) -> None:
        for fields in batch:
            self._log(fields)

    def fields(
        self, data: bytes, peer: str, truncated: bool = False, sender: str | None = None
    ) -> dict[str, Any]:
        """One message as an event's fields."""
        fields = parse_syslog(
            data,
            received_at=self._clock.seconds(),
            timezone=self.timezone,
            max_message_size=self.max_message_size,
            truncated=truncated,
        )
        self.received.value += 1
        if fields.get("syslog_format") == "unparsed":
            self.parse_fallbacks.value += 1
            self._throttle.warning(
                f"input:{self.name}:unparsed",
                "syslog line in no known format; kept whole in the event's raw field",
                input=self.name,
                peer=peer,
                line=data[:200].decode("utf-8", "replace"),
            )
        if fields.get("truncated"):
            self.truncated.value += 1
        if "peer" in fields:  # a JSON body's own "peer" never hides the real sender
            fields[events.COLLISION_PREFIX + "peer"] = fields["peer"]
        fields["peer"] = peer
        if sender is not None and events.HOST not in fields:
            fields[events.HOST] = sender  # as rsyslog: a line without HOSTNAME is the sender's
        return fields


class SyslogDatagramProtocol(DatagramProtocol):
    """UDP (RFC 5426) and unix datagrams: one message per datagram."""

    noisy = False  # obsd logs its own "listening" line

    def __init__(self, receiver: SyslogReceiver) -> None:
        self.receiver = receiver

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.receiver.message(datagram, describe_peer(addr), False, sender_host(addr))


class SyslogStreamProtocol(Protocol, TimeoutMixin):
    """One stream connection: frame, parse, hand on; closes itself on a framing error."""

    factory: SyslogStreamFactory
    transport: Any  # a TCP, TLS or unix transport: also a push producer
    framer: Framer | None = None
    peer = "unix"
    sender: str | None = None
    _refused = False
    _finished = False

    def callLater(self, period: float, func: Any) -> Any:
        """Run the idle timeout on the injected reactor, never the global one."""
        return self.factory.reactor.callLater(period, func)

    def connectionMade(self) -> None:
        factory = self.factory
        address = self.transport.getPeer()
        self.peer = describe_peer(address)
        self.sender = sender_host(address)
        self.peer_key = peer_key(address, self.transport)
        why = factory.slots.refusal(self.peer_key)
        if why is not None:
            self._refused = True
            factory.refused.value += 1
            factory.throttle.warning(
                f"input:{factory.name}:refused",
                f"syslog connection refused: {why}",
                input=factory.name,
                peer=self.peer,
                max_connections=factory.max_connections,
                max_connections_per_peer=factory.max_per_peer,
            )
            # a reset, not a close: the sender's next write fails instead of vanishing
            self.transport.abortConnection()
            return
        factory.connections.add(self)
        factory.slots.take(self.peer_key)
        factory.connections_total.value += 1
        self.framer = make_framer(factory.framing, factory.receiver.max_message_size)
        if factory.idle_timeout > 0:
            self.setTimeout(factory.idle_timeout)  # type: ignore[no-untyped-call]
        factory.flow_control.register(self.transport)

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            # what a refused sender wrote before the reset: counted, never silently lost
            self.factory.refused_bytes.value += len(data)
            self.factory.refused_lines.value += data.count(b"\n")
            return
        if self._finished or self.framer is None:
            return
        factory = self.factory
        factory.last_data = factory.reactor.seconds()
        if self.timeOut:
            self.resetTimeout()  # type: ignore[no-untyped-call]
        receiver = factory.receiver
        try:
            frames = self.framer.feed(data)
        except ParseError as exc:
            complete = list(getattr(exc, "frames", ()))  # complete before the error
            if complete:
                receiver.messages(complete, self.peer, self.sender)
            self._framing_error(exc)
            return
        if frames:
            receiver.messages(frames, self.peer, self.sender)

    def _framing_error(self, exc: ParseError) -> None:
        factory = self.factory
        self._finished = True
        factory.framing_errors.value += 1
        factory.throttle.warning(
            f"input:{factory.name}:framing",
            "syslog framing error; closing that connection",
            input=factory.name,
            peer=self.peer,
            reason=str(exc),
        )
        self.transport.loseConnection()

    def finish(self) -> None:
        """Hand on what the framer still holds (the last, unterminated message)."""
        if self._finished or self.framer is None:
            return
        self._finished = True
        message = self.factory.receiver.message
        for frame in self.framer.flush():
            message(frame.message, self.peer, frame.truncated, self.sender)

    def timeoutConnection(self) -> None:
        self.factory.idle_timeouts.value += 1
        self.finish()
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self._refused:
            return
        self.setTimeout(None)  # type: ignore[no-untyped-call]
        self.finish()
        factory = self.factory
        if self in factory.connections:
            factory.connections.discard(self)
            factory.slots.give_back(self.peer_key)
        self.factory.flow_control.unregister(self.transport)


class SyslogStreamFactory(Factory):
    """Builds a ``SyslogStreamProtocol`` per connection and keeps count of them."""

    protocol = SyslogStreamProtocol  # type: ignore[assignment]
    noisy = False  # obsd logs its own "listening" line

    def __init__(self, receiver: SyslogReceiver, config: Config, context: InputContext) -> None:
        self.name = receiver.name
        self.receiver = receiver
        self.framing = config.framing
        self.max_connections = config.max_connections
        self.max_per_peer = config.max_connections_per_peer
        #: the caps; refused connections are reset here (not by ``FairFactory``) so that
        #: what they wrote before the reset is counted
        self.slots = ConnectionSlots(config.max_connections, config.max_connections_per_peer)
        self.idle_timeout = config.idle_timeout
        self.reactor = context.reactor
        self.flow_control = context.flow_control
        self.throttle = context.throttle
        self.connections: set[SyslogStreamProtocol] = set()
        self.last_data = 0.0
        telemetry = context.telemetry
        prefix = f"obsd.input.{self.name}."
        self.connections_total = telemetry.counter(prefix + "connections")
        self.refused = telemetry.counter(prefix + "refused")
        self.refused_bytes = telemetry.counter(prefix + "refused_bytes")
        self.refused_lines = telemetry.counter(prefix + "refused_lines")
        self.framing_errors = telemetry.counter(prefix + "framing_errors")
        self.idle_timeouts = telemetry.counter(prefix + "idle_timeouts")

    def drain(self, quiet: float = 0.2, limit: float = 2.0) -> defer.Deferred[None]:
        """At stop: read on until the senders close or go quiet, then close what is left.

        The reactor still reads while the daemon stops, so a sender that wrote
        and closed just before SIGTERM is read in full before the outputs drain.
        """
        done: defer.Deferred[None] = defer.Deferred()
        start = self.reactor.seconds()

        def check() -> None:
            now = self.reactor.seconds()
            if self.connections and now - start < limit and now - self.last_data < quiet:
                self.reactor.callLater(0.05, check)
                return
            for protocol in list(self.connections):
                protocol.finish()
                protocol.transport.loseConnection()
            done.callback(None)

        if not self.connections:
            done.callback(None)
        else:
            self.reactor.callLater(0.05, check)
        return done


class SyslogInput(MultiService):
    """The listeners of one syslog input; on stop, open connections are read to the end."""

    def __init__(self, factory: SyslogStreamFactory) -> None:
        super().__init__()
        self.factory = factory

    def stopService(self) -> defer.Deferred[None]:
        d: defer.Deferred[Any] = defer.maybeDeferred(super().stopService)
        d.addCallback(lambda _: self.factory.drain())
        return d


def build_input(name: str, config: Config, context: InputContext) -> IService:
    """The syslog input's service: one listener per ``listen`` string."""
    receiver = SyslogReceiver(name, config, context)
    factory = SyslogStreamFactory(receiver, config, context)
    service = SyslogInput(factory)
    # A datagram read of max_message_size + 1 bytes shows that a datagram was longer.
    packet = max(65536, config.max_message_size + 1)
    for description in config.listen:
        for listener in context.listener_services(
            [description],
            LISTEN_TYPES,
            factory=factory,
            datagram=SyslogDatagramProtocol(receiver),
            max_packet_size=packet,
        ):
            listener.setServiceParent(service)
    return service
