"""The TLS handshake deadline on ``ssl:`` listeners, with real TLS sessions in memory."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import ssl
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test import iosim

from obsd.net.handshake import HandshakeDeadlineFactory
from obsd.ops.telemetry import Telemetry
from tests.tls_certs import CertificateSet, make_certificates

PEER = IPv4Address("TCP", "127.0.0.2", 40000)


class Throttle:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def warning(self, key: str, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))


class Received(Protocol):
    def __init__(self) -> None:
        self.data = b""

    def dataReceived(self, data: bytes) -> None:
        self.data += data


@pytest.fixture(scope="module")
def certificates() -> CertificateSet:
    return make_certificates()


class Listener:
    def __init__(self, certificates: CertificateSet) -> None:
        self.clock = Clock()
        self.telemetry = Telemetry()
        self.throttle = Throttle()
        self.received: list[Received] = []
        inner = Factory.forProtocol(self._make)
        self.deadline = HandshakeDeadlineFactory(
            inner, owner="syslog", timeout=10.0, reactor=self.clock,
            telemetry=self.telemetry, throttle=self.throttle,
        )
        server = ssl.PrivateCertificate.loadPEM(certificates.server_key + certificates.server_cert)
        self.tls = TLSMemoryBIOFactory(server.options(), False, self.deadline, self.clock)
        self.certificates = certificates

    def _make(self) -> Received:
        protocol = Received()
        self.received.append(protocol)
        return protocol

    @property
    def timeouts(self) -> int:
        return self.telemetry.counters()["obsd.tls.handshake_timeouts"]


def test_a_finished_handshake_keeps_the_connection(certificates: CertificateSet) -> None:
    listener = Listener(certificates)
    client_options = ssl.optionsForClientTLS(
        "localhost", trustRoot=ssl.Certificate.loadPEM(certificates.ca_cert)
    )
    client_tls = TLSMemoryBIOFactory(
        client_options, True, Factory.forProtocol(Protocol), listener.clock
    )
    client, server, pump = iosim.connectedServerAndClient(
        lambda: listener.tls.buildProtocol(PEER),
        lambda: client_tls.buildProtocol(PEER),
        clock=listener.clock,
    )
    client.wrappedProtocol.transport.write(b"hello")
    pump.flush()
    listener.clock.advance(3600)
    pump.flush()
    assert listener.received[0].data == b"hello"
    assert listener.timeouts == 0
    assert not server.transport.disconnecting


def test_a_client_that_never_finishes_the_handshake_is_aborted(
    certificates: CertificateSet,
) -> None:
    """A TCP connection to an ssl: port that sends nothing, or half a ClientHello."""
    listener = Listener(certificates)
    server = listener.tls.buildProtocol(PEER)
    transport = StringTransport(peerAddress=PEER)
    server.makeConnection(transport)
    server.dataReceived(b"\x16\x03\x01\x00")  # the start of a TLS record, and no more
    listener.clock.advance(9.9)
    assert not transport.disconnected
    listener.clock.advance(0.1)
    assert transport.disconnected  # aborted: StringTransport marks abortConnection so
    assert listener.timeouts == 1
    ((event, fields),) = listener.throttle.lines
    assert fields["peer"] == "127.0.0.2:40000" and fields["input"] == "syslog"
    assert "handshake" in event
    server.connectionLost(None)
    assert listener.clock.getDelayedCalls() == []


def test_the_daemon_wraps_ssl_factories_unless_the_timeout_is_zero() -> None:
    from obsd.config.loader import parse_config
    from obsd.daemon.topology import tls_handshake_deadline

    inner = Factory.forProtocol(Protocol)
    args = (Clock(), Telemetry(), Throttle())
    on = parse_config({"daemon": {"tls_handshake_timeout": 3.0}})
    wrapped = tls_handshake_deadline(inner, "http", on, *args)
    assert isinstance(wrapped, HandshakeDeadlineFactory)
    assert (wrapped.wrappedFactory, wrapped.timeout) == (inner, 3.0)
    off = parse_config({"daemon": {"tls_handshake_timeout": 0}})
    assert tls_handshake_deadline(inner, "http", off, *args) is inner
