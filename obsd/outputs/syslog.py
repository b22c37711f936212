"""The ``syslog`` output: log events as RFC 5424 to any syslog server, over TCP or TLS.

Frames use octet counting (RFC 6587 3.4.1; RFC 5425 for TLS), so messages may
hold newlines.  One persistent connection, kept by a ``ClientService`` that
reconnects with capped exponential backoff.  A batch counts as sent once it is
written to the connection: syslog over TCP has no acknowledgement, so what the
kernel held when a connection broke is lost (use the relay output between obsd
instances for at-least-once).  While the connection's send buffer is full the
transport pauses us and sends wait, so a slow server pushes back on the queue.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from obsd import events
from obsd.codecs.rfc5424 import FACILITY_CODES, format_rfc5424, octet_frame
from obsd.config.model import OutputConfig
from obsd.config.schema import Problems, at_least, setting
from obsd.net.tls import check_tls_files, client_tls_options
from obsd.outputs.base import Output, OutputContext, SendResult

ACCEPTS = frozenset({events.LOG, events.ERROR})
DEFAULT_KINDS = frozenset({events.LOG})
#: seconds a closing connection may wait for the peer before it is aborted
CLOSE_GRACE = 2.0


@attrs.frozen(kw_only=True)
class Config(OutputConfig):
    """``[outputs.syslog]``."""

    destination: str = setting(
        "", help='"tcp:HOST:PORT", or "tls:HOST:PORT" (also "ssl:") for syslog over TLS'
    )
    ca_file: str = setting("", help="PEM CA certificates that sign the server's certificate (tls)")
    cert_file: str = setting("", help="PEM client certificate (tls), when the server asks")
    key_file: str = setting("", help="PEM key of cert_file (may be cert_file itself)")
    server_name: str = setting("", help="the name the server's certificate must show; default HOST")
    facility: str = setting("user", help="facility of events that have none (RFC 5424 name)")
    appname: str = setting("obsd", help="APP-NAME of events that have no appname")
    message: Literal["text", "json"] = setting(
        "text", help="MSG: the event text, or the whole event as one JSON object"
    )
    connect_timeout: float = setting(
        10.0, check=at_least(0.1), help="seconds a connection attempt may take",
        client_sees="an attempt taking longer is abandoned and retried with backoff; events stay "
                    "queued",
    )
    reconnect_max: float = setting(
        30.0, check=at_least(0.1), help="cap of the reconnect backoff, seconds",
        client_sees="the server coming back is reconnected to within this many seconds",
    )


def parse_destination(text: str) -> tuple[bool, str, int]:
    """``tcp:HOST:PORT`` / ``tls:HOST:PORT`` to (tls, host, port); ValueError if neither."""
    scheme, _, rest = text.partition(":")
    host, _, port = rest.rpartition(":")
    if scheme not in ("tcp", "tls", "ssl") or not host or not port.isdigit():
        raise ValueError(f'expected "tcp:HOST:PORT" or "tls:HOST:PORT", got {text!r}')
    return scheme != "tcp", host.strip("[]"), int(port)


def check_config(name: str, cfg: Config, whole: Any, problems: Problems) -> None:
    """The destination must parse; TLS files must exist; the facility must be known."""
    path = f"outputs.{name}"
    try:
        tls, _, _ = parse_destination(cfg.destination)
    except ValueError as exc:
        problems.add(f"{path}.destination", str(exc))
        tls = False
    if cfg.facility not in FACILITY_CODES:
        problems.add(f"{path}.facility", f"unknown facility {cfg.facility!r}")
    for key in ("ca_file", "cert_file", "key_file"):
        value = getattr(cfg, key)
        if value and not tls:
            problems.add(f"{path}.{key}", "only used with a tls: destination")
    for key, reason in check_tls_files(cfg.ca_file, cfg.cert_file, cfg.key_file):
        problems.add(f"{path}.{key}", reason)


@implementer(IPushProducer)
class SyslogSender(Protocol):
    """The connection: writes frames, and tells sends to wait while paused."""

    def __init__(self) -> None:
        self.paused = False
        self._waiting: list[defer.Deferred[None]] = []
        self.lost: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(reason)
        if not self.lost.called:
            self.lost.callback(None)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def stopProducing(self) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:
        """Servers send nothing on a syslog connection; whatever comes is ignored."""

    def write(self, data: bytes) -> defer.Deferred[None]:
        """Write ``data``; the Deferred fires once the transport wants more."""
        self.transport.write(data)  # type: ignore[union-attr]
        if not self.paused:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._waiting.append(d)
        return d


class _SenderFactory(Factory):
    """Builds the connection's protocol and tells the output which one is current."""

    protocol = SyslogSender

    def __init__(self, output: SyslogOutput) -> None:
        self.output = output

    def buildProtocol(self, addr: Any) -> Any:
        sender = super().buildProtocol(addr)
        self.output.sender = sender  # type: ignore[assignment]
        return sender


def make_endpoint(reactor: Any, config: Config) -> Any:
    """A client endpoint for the destination, TLS-wrapped for ``tls:``."""
    tls, host, port = parse_destination(config.destination)
    endpoint: Any = HostnameEndpoint(reactor, host, port, timeout=config.connect_timeout)
    if not tls:
        return endpoint
    options = client_tls_options(
        config.server_name or host, config.ca_file, config.cert_file, config.key_file
    )
    return wrapClientTLS(options, endpoint)


class SyslogOutput(Output):
    """RFC 5424 over one persistent TCP or TLS connection."""

    type_name = "syslog"

    def __init__(
        self, name: str, config: Config, context: OutputContext, endpoint: Any = None
    ) -> None:
        self.syslog_config = config
        super().__init__(name, config, context)
        self.endpoint = endpoint or make_endpoint(context.reactor, config)
        self.sender: SyslogSender | None = None
        factory = _SenderFactory(self)
        self.client = ClientService(
            self.endpoint,
            factory,
            retryPolicy=backoffPolicy(
                initialDelay=0.5, maxDelay=config.reconnect_max, jitter=context.random
            ),
            clock=context.clock,
        )
        self._json = config.message == "json"

    def encode(self, event: dict[str, Any]) -> bytes:
        cfg = self.syslog_config
        return octet_frame(
            format_rfc5424(
                event,
                default_facility=cfg.facility,
                default_appname=cfg.appname,
                hostname=self.context.hostname,
                json_message=self._json,
            )
        )

    def decode(self, record: bytes) -> Any:
        return record.decode("utf-8", "replace")

    def startService(self) -> None:
        super().startService()
        self.client.startService()

    def send(self, batch: list[bytes]) -> defer.Deferred[SendResult | None]:
        data = b"".join(batch)
        d: defer.Deferred[Any] = self.client.whenConnected(failAfterFailures=1)
        d.addCallback(lambda sender: sender.write(data))
        return d

    def stopService(self) -> defer.Deferred[Any]:
        d = super().stopService()
        d.addCallback(lambda _: self._stop_client())
        return d

    def _stop_client(self) -> defer.Deferred[Any]:
        """Close the connection; abort it if a TLS peer never answers our close_notify."""
        stopped = self.client.stopService()
        sender = self.sender
        if stopped.called or sender is None or sender.transport is None:
            return stopped
        transport = sender.transport
        abort = self.context.clock.callLater(CLOSE_GRACE, transport.abortConnection)  # type: ignore[attr-defined]

        def done(result: Any) -> Any:
            if abort.active():
                abort.cancel()
            return result

        return stopped.addBoth(done)


def build_output(name: str, config: Config, context: OutputContext) -> SyslogOutput:
    return SyslogOutput(name, config, context)
