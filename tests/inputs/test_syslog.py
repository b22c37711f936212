"""The syslog input's Twisted side: datagrams, framed streams, limits, flow control, TLS."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from twisted.internet import ssl
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport, MemoryReactorClock, StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test import iosim

from obsd.config.loader import parse_config
from obsd.daemon.topology import InputContext
from obsd.delivery.flowcontrol import FlowControl
from obsd.errors import ConfigError
from obsd.inputs import syslog
from obsd.ops.telemetry import Telemetry
from obsd.ops.throttle import ThrottledLogger
from obsd.testing import ListLog
from tests.helpers import success_result_of
from tests.tls_certs import CertificateSet, make_certificates

RFC5424 = b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 - hello"
RFC3164 = b"<34>Oct 11 22:14:15 mymachine su[230]: 'su root' failed for lonvick"
TRACEBACK = (
    b"<11>app: boom\nTraceback (most recent call last):\n"
    b'  File "app.py", line 1, in <module>\nZeroDivisionError: division by zero'
)


class CapturingIngest:
    """Stands in for the ingest logger: records the fields of each event."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def log(self, fields: dict[str, Any]) -> None:
        self.events.append(fields)


@attrs.define
class FakeContext:
    """The parts of InputContext the syslog input uses."""

    reactor: Clock
    telemetry: Telemetry = attrs.Factory(Telemetry)
    flow_control: FlowControl = attrs.Factory(FlowControl)
    ingest: CapturingIngest = attrs.Factory(CapturingIngest)
    log: ListLog = attrs.Factory(ListLog)
    throttle: ThrottledLogger = attrs.field(default=None)

    def __attrs_post_init__(self) -> None:
        self.throttle = ThrottledLogger(self.log, self.reactor, 10.0)

    def counter(self, what: str) -> int:
        return self.telemetry.counter(f"obsd.input.syslog.{what}").value

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.ingest.events


def make_config(**kw: Any) -> syslog.Config:
    return syslog.Config(type="syslog", timezone=kw.pop("timezone", "UTC"), **kw)


@pytest.fixture(name="clock")
def _clock() -> Clock:
    clock = Clock()
    clock.advance(1_700_000_000)
    return clock


@pytest.fixture(name="context")
def _context(clock: Clock) -> FakeContext:
    return FakeContext(clock)


Connect = Callable[..., tuple[syslog.SyslogStreamProtocol, StringTransport]]


@pytest.fixture(name="make_factory")
def _make_factory(context: FakeContext) -> Callable[..., syslog.SyslogStreamFactory]:
    def make(**kw: Any) -> syslog.SyslogStreamFactory:
        config = make_config(**kw)
        receiver = syslog.SyslogReceiver("syslog", config, context)
        return syslog.SyslogStreamFactory(receiver, config, context)

    return make


@pytest.fixture(name="factory")
def _factory(make_factory: Callable[..., syslog.SyslogStreamFactory]) -> syslog.SyslogStreamFactory:
    return make_factory()


def connect(
    factory: syslog.SyslogStreamFactory, port: int = 40000, host: str = "127.0.0.1"
) -> tuple[syslog.SyslogStreamProtocol, StringTransport]:
    """A protocol from ``factory`` on a StringTransport from ``host``:``port``."""
    peer = IPv4Address("TCP", host, port)
    protocol = factory.buildProtocol(peer)
    assert isinstance(protocol, syslog.SyslogStreamProtocol)
    transport = StringTransport(peerAddress=peer)
    protocol.makeConnection(transport)
    return protocol, transport


def lose(protocol: Protocol, transport: StringTransport) -> None:
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure

    transport.disconnecting = True
    protocol.connectionLost(Failure(ConnectionDone()))


def octet(*messages: bytes) -> bytes:
    return b"".join(b"%d %s" % (len(m), m) for m in messages)


FRAMED = [
    ("octet", octet(RFC5424, RFC3164, TRACEBACK)),
    ("lf", RFC5424 + b"\n" + RFC3164 + b"\r\n"),
    ("nul", RFC5424 + b"\0" + RFC3164 + b"\0" + TRACEBACK + b"\n\0"),
]


class TestDatagram:
    def test_one_message_per_datagram(self, context: FakeContext) -> None:
        """A UDP datagram becomes one event with the parser's fields and the sender as peer."""
        receiver = syslog.SyslogReceiver("syslog", make_config(), context)
        protocol = syslog.SyslogDatagramProtocol(receiver)
        protocol.makeConnection(FakeDatagramTransport())
        protocol.datagramReceived(RFC5424 + b"\n", ("127.0.0.1", 5140))
        [event] = context.events
        assert event == {
            "event": "hello",
            "level": "info",
            "timestamp": 1065910455.003,
            "facility": "local4",
            "severity": "notice",
            "host": "mymachine.example.com",
            "appname": "evntslog",
            "msgid": "ID47",
            "syslog_format": "rfc5424",
            "peer": "127.0.0.1:5140",
        }
        assert context.counter("received") == 1

    @pytest.mark.parametrize(
        ("address", "peer"),
        [
            (("127.0.0.1", 514), "127.0.0.1:514"),
            (("::1", 514, 0, 0), "[::1]:514"),
            (None, "unix"),
            ("", "unix"),
            (b"/tmp/client.sock", "/tmp/client.sock"),
            (IPv6Address("TCP", "::1", 6514), "[::1]:6514"),
            (UNIXAddress(None), "unix"),
            (UNIXAddress(b"/run/x.sock"), "/run/x.sock"),
        ],
    )
    def test_peer_text(self, address: Any, peer: str) -> None:
        """Each kind of sender address is written as short text."""
        assert syslog.describe_peer(address) == peer

    @pytest.mark.parametrize(
        ("address", "line", "host"),
        [
            (("192.0.2.7", 514), b"<13>app: no host here", "192.0.2.7"),
            (("2001:db8::1", 514, 0, 0), b"<13>app: no host here", "2001:db8::1"),
            (("192.0.2.7", 514), b"<13>Oct 11 22:14:15 named app: x", "named"),
            (("127.0.0.1", 514), b"<13>app: local", None),
            (None, b"<13>app: unix", None),
        ],
    )
    def test_host_falls_back_to_a_remote_sender(
        self, context: FakeContext, address: Any, line: bytes, host: str | None
    ) -> None:
        """A line without HOSTNAME from another machine gets the sender's IP as host."""
        receiver = syslog.SyslogReceiver("syslog", make_config(), context)
        syslog.SyslogDatagramProtocol(receiver).datagramReceived(line, address)
        assert context.events[0].get("host") == host

    def test_unparsed_and_truncated_are_counted(self, context: FakeContext) -> None:
        """A line that is not syslog and one too long are counted, both kept; the first logged."""
        receiver = syslog.SyslogReceiver("syslog", make_config(max_message_size=480), context)
        protocol = syslog.SyslogDatagramProtocol(receiver)
        protocol.datagramReceived(b"<999>garbage", None)
        protocol.datagramReceived(b"<13>" + b"x" * 1000, None)
        assert [e["syslog_format"] for e in context.events] == ["unparsed", "rfc3164"]
        assert context.events[1]["truncated"] is True
        assert (context.counter("parse_fallbacks"), context.counter("truncated")) == (1, 1)
        (warning,) = [f for _, what, f in context.log.lines if "no known format" in what]
        assert warning["line"] == "<999>garbage"

    def test_json_peer_kept_apart(self, context: FakeContext) -> None:
        """A JSON body's own ``peer`` key never hides the real sender."""
        receiver = syslog.SyslogReceiver("syslog", make_config(), context)
        receiver.message(b'<14>app: {"event": "x", "peer": "me"}', "10.0.0.1:5")
        [event] = context.events
        assert (event["peer"], event["data_peer"]) == ("10.0.0.1:5", "me")


class TestStreamFraming:
    @pytest.mark.parametrize(("framing", "data"), FRAMED)
    @pytest.mark.parametrize("forced", [True, False])
    def test_every_split_point(
        self,
        make_factory: Callable[..., syslog.SyslogStreamFactory],
        context: FakeContext,
        framing: str,
        data: bytes,
        forced: bool,
    ) -> None:
        """Cut anywhere into two chunks, the stream gives the same events."""
        factory = make_factory(framing=framing if forced else "auto")
        expected: list[str] | None = None
        for cut in range(len(data) + 1):
            context.events.clear()
            protocol, transport = connect(factory)
            protocol.dataReceived(data[:cut])
            protocol.dataReceived(data[cut:])
            lose(protocol, transport)
            got = [e["event"] for e in context.events]
            if expected is None:
                expected = got
            assert got == expected, f"cut at {cut}"
        assert expected is not None and len(expected) >= 2
        assert all(e["peer"] == "127.0.0.1:40000" for e in context.events)

    def test_auto_detects_per_connection(
        self, factory: syslog.SyslogStreamFactory, context: FakeContext
    ) -> None:
        """One connection octet-counted and one LF-framed, open at once, both read right."""
        first, _ = connect(factory, 1)
        second, _ = connect(factory, 2)
        first.dataReceived(octet(b"<13>a: one\nstill one"))
        second.dataReceived(b"<13>b: two\n<13>b: three\n")
        assert [(e["peer"], e["event"]) for e in context.events] == [
            ("127.0.0.1:1", "one\nstill one"),
            ("127.0.0.1:2", "two"),
            ("127.0.0.1:2", "three"),
        ]

    def test_nul_framing_keeps_a_traceback_whole(
        self, factory: syslog.SyslogStreamFactory, context: FakeContext
    ) -> None:
        """SysLogHandler's NUL-ended message with a multi-line traceback is one event."""
        protocol, _ = connect(factory)
        protocol.dataReceived(TRACEBACK + b"\0")
        [event] = context.events
        assert event["event"] == TRACEBACK.split(b": ", 1)[1].decode()
        assert event["appname"] == "app"
        assert event["level"] == "error"

    def test_unterminated_last_message_at_close(
        self, factory: syslog.SyslogStreamFactory, context: FakeContext
    ) -> None:
        """A last message without its LF is handed on when the sender closes."""
        protocol, transport = connect(factory)
        protocol.dataReceived(b"<13>a: one\n<13>a: two")
        assert len(context.events) == 1
        lose(protocol, transport)
        assert [e["event"] for e in context.events] == ["one", "two"]

    def test_too_long_stream_message_is_cut_and_flagged(
        self, make_factory: Callable[..., syslog.SyslogStreamFactory], context: FakeContext
    ) -> None:
        """An LF-framed message over max_message_size is cut, flagged and counted."""
        factory = make_factory(max_message_size=500)
        protocol, _ = connect(factory)
        protocol.dataReceived(b"<13>a: " + b"x" * 2000 + b"\n<13>a: next\n")
        assert [len(e["event"]) <= 500 for e in context.events] == [True, True]
        assert [e.get("truncated", False) for e in context.events] == [True, False]
        assert context.counter("truncated") == 1


class TestLimits:
    def test_framing_error_closes_only_that_connection(
        self, factory: syslog.SyslogStreamFactory, context: FakeContext
    ) -> None:
        """A broken count closes its connection (messages before it kept), logs why; others go on."""
        good, good_transport = connect(factory, 1)
        bad, bad_transport = connect(factory, 2)
        good.dataReceived(octet(b"<13>a: one"))
        bad.dataReceived(octet(b"<13>b: fine") + b"12x <13>b: broken")
        bad.dataReceived(octet(b"<13>b: after the error"))
        good.dataReceived(octet(b"<13>a: two"))
        assert bad_transport.disconnecting and not good_transport.disconnecting
        assert [e["event"] for e in context.events] == ["one", "fine", "two"]
        assert context.counter("framing_errors") == 1
        [(level, what, fields)] = context.log.lines
        assert (level, what) == ("warning", "syslog framing error; closing that connection")
        assert fields["peer"] == "127.0.0.1:2" and "octet count" in fields["reason"]
        lose(bad, bad_transport)
        assert [e["event"] for e in context.events] == ["one", "fine", "two"]

    def test_max_connections_refuses_more(
        self, make_factory: Callable[..., syslog.SyslogStreamFactory], context: FakeContext
    ) -> None:
        """Past max_connections a new connection is closed at once; after a close one fits."""
        factory = make_factory(max_connections=2)
        first = connect(factory, 1)
        connect(factory, 2)
        third, third_transport = connect(factory, 3)
        assert third_transport.disconnecting
        third.dataReceived(b"<13>a: refused\n<13>a: refused too\n")
        lose(third, third_transport)
        assert context.counter("refused") == 1
        # what the refused sender wrote before the reset is counted, not silently lost
        assert context.counter("refused_lines") == 2
        assert context.counter("refused_bytes") == len(b"<13>a: refused\n<13>a: refused too\n")
        assert len(factory.connections) == 2
        lose(*first)
        _, fourth_transport = connect(factory, 4)
        assert not fourth_transport.disconnecting
        assert context.counter("connections") == 3
        assert context.events == []

    def test_one_sender_cannot_take_every_slot(
        self, make_factory: Callable[..., syslog.SyslogStreamFactory], context: FakeContext
    ) -> None:
        """An attacker at 127.0.0.2 holding its share leaves room for the honest 127.0.0.1."""
        factory = make_factory(max_connections=10, max_connections_per_peer=3)
        attacker = [connect(factory, 100 + i, "127.0.0.2") for i in range(4)]
        assert [t.disconnecting for _, t in attacker] == [False, False, False, True]
        honest, honest_transport = connect(factory, 200, "127.0.0.1")
        assert not honest_transport.disconnecting
        honest.dataReceived(b"<13>app: honest line\n")
        assert [e["event"] for e in context.events] == ["honest line"]
        assert context.counter("refused") == 1
        (warning,) = [f for lvl, what, f in context.log.lines if "refused" in what]
        assert warning["peer"].startswith("127.0.0.2:")
        lose(*attacker[0])
        _, again = connect(factory, 300, "127.0.0.2")
        assert not again.disconnecting

    def test_unix_peers_keyed_by_uid(self, tmp_path: Any) -> None:
        """A unix-socket peer is its user, read with SO_PEERCRED."""
        import os
        import socket as sockets

        left, right = sockets.socketpair(sockets.AF_UNIX)
        with left, right:
            transport = type("T", (), {"socket": left})()
            assert syslog.peer_key(None, transport) == f"uid:{os.getuid()}"

    def test_idle_timeout(
        self,
        make_factory: Callable[..., syslog.SyslogStreamFactory],
        context: FakeContext,
        clock: Clock,
    ) -> None:
        """A connection silent for idle_timeout is closed, its last message handed on."""
        factory = make_factory(idle_timeout=30.0)
        protocol, transport = connect(factory)
        clock.advance(20)
        protocol.dataReceived(b"<13>a: partial")
        clock.advance(29)
        assert not transport.disconnecting
        clock.advance(1)
        assert transport.disconnecting
        assert [e["event"] for e in context.events] == ["partial"]
        assert context.counter("idle_timeouts") == 1
        lose(protocol, transport)
        assert not clock.getDelayedCalls()

    def test_no_idle_timeout_when_zero(
        self,
        make_factory: Callable[..., syslog.SyslogStreamFactory],
        clock: Clock,
    ) -> None:
        """idle_timeout = 0 leaves quiet connections open and schedules nothing."""
        _, transport = connect(make_factory(idle_timeout=0))
        assert not clock.getDelayedCalls()
        clock.advance(10**6)
        assert not transport.disconnecting


class TestFlowControl:
    def test_slow_output_pauses_and_resumes_reading(
        self, factory: syslog.SyslogStreamFactory, context: FakeContext
    ) -> None:
        """A congested queue pauses every open connection and new ones; relief resumes them."""
        _, first = connect(factory, 1)
        context.flow_control.report("file", True)
        _, second = connect(factory, 2)
        assert (first.producerState, second.producerState) == ("paused", "paused")
        context.flow_control.report("file", False)
        assert (first.producerState, second.producerState) == ("producing", "producing")

    def test_closed_connection_leaves_flow_control(
        self, factory: syslog.SyslogStreamFactory, context: FakeContext
    ) -> None:
        """A closed transport is no longer paused or resumed."""
        protocol, transport = connect(factory)
        lose(protocol, transport)
        context.flow_control.report("file", True)
        assert transport.producerState == "producing"


class TestStop:
    def test_drain_reads_until_quiet_then_closes(
        self, factory: syslog.SyslogStreamFactory, context: FakeContext, clock: Clock
    ) -> None:
        """At stop, a busy connection is read on; once quiet it is closed and flushed."""
        protocol, transport = connect(factory)
        d = factory.drain(quiet=0.2, limit=2.0)
        protocol.dataReceived(b"<13>a: one\n<13>a: two")
        clock.advance(0.1)
        assert not transport.disconnecting
        clock.pump([0.05] * 6)
        assert transport.disconnecting
        success_result_of(d)
        assert [e["event"] for e in context.events] == ["one", "two"]

    def test_drain_without_connections_is_immediate(
        self, factory: syslog.SyslogStreamFactory
    ) -> None:
        """With nothing open, stopping waits for nothing."""
        assert success_result_of(factory.drain()) is None


class TestConfig:
    def test_defaults(self) -> None:
        """The documented defaults."""
        config = syslog.Config(type="syslog")
        assert (
            config.framing,
            config.timezone,
            config.max_message_size,
            config.max_connections,
            config.idle_timeout,
        ) == ("auto", "", 65536, 1024, 600.0)

    @pytest.mark.parametrize(
        ("section", "problem"),
        [
            ({"framing": "crlf"}, "inputs.syslog.framing"),
            ({"timezone": "Mars/Olympus"}, "inputs.syslog.timezone: unknown IANA time zone"),
            ({"max_message_size": 10}, "inputs.syslog.max_message_size: must be at least"),
            ({"listen": ["http:80"]}, "inputs.syslog.listen[0]"),
        ],
    )
    def test_bad_values_are_reported(self, section: dict[str, Any], problem: str) -> None:
        """Each bad key is named in the config error."""
        with pytest.raises(ConfigError) as info:
            parse_config({"inputs": {"syslog": section}})
        assert any(line.startswith(problem) for line in info.value.problems), info.value

    def test_every_listen_type(self) -> None:
        """udp, unixgram, tcp, ssl, unix and systemd listeners are all accepted."""
        assert {"udp", "unixgram", "tcp", "ssl", "unix", "systemd"} <= syslog.LISTEN_TYPES

    def test_timezone_names_a_zone(self) -> None:
        """A configured zone is used; empty means the machine's own."""
        zone = syslog.resolve_timezone("Europe/Berlin")
        assert datetime.datetime(2024, 1, 1, tzinfo=zone).utcoffset() == datetime.timedelta(hours=1)
        assert syslog.resolve_timezone("") is not None

    @pytest.mark.parametrize(("zone", "offset"), [("Europe/Berlin", 0), ("UTC", 3600)])
    def test_rfc3164_read_in_configured_zone(
        self, context: FakeContext, clock: Clock, zone: str, offset: int
    ) -> None:
        """A zone-less stamp is read in ``timezone`` (the clock is 22:13:20 UTC)."""
        receiver = syslog.SyslogReceiver("syslog", make_config(timezone=zone), context)
        receiver.message(b"<13>Nov 14 23:13:20 host app: x", "p")
        assert context.events[0]["timestamp"] == clock.seconds() + offset


@pytest.fixture(name="certificates", scope="module")
def _certificates() -> CertificateSet:
    """A throw-away CA and localhost server certificate."""
    return make_certificates()


class TestTLS:
    def test_octet_counted_messages_over_tls(
        self,
        factory: syslog.SyslogStreamFactory,
        context: FakeContext,
        clock: Clock,
        certificates: CertificateSet,
    ) -> None:
        """RFC 5425: octet-counted messages through an in-memory TLS session become events."""
        server = ssl.PrivateCertificate.loadPEM(certificates.server_key + certificates.server_cert)
        server_tls = TLSMemoryBIOFactory(server.options(), False, factory, clock)
        client_options = ssl.optionsForClientTLS(
            "localhost", trustRoot=ssl.Certificate.loadPEM(certificates.ca_cert)
        )
        client_tls = TLSMemoryBIOFactory(
            client_options, True, Factory.forProtocol(Protocol), clock
        )
        peer = IPv4Address("TCP", "127.0.0.1", 6514)
        client, _server, pump = iosim.connectedServerAndClient(
            lambda: server_tls.buildProtocol(peer),
            lambda: client_tls.buildProtocol(peer),
            clock=clock,
        )
        sender: Any = client.wrappedProtocol
        sender.transport.write(octet(RFC5424, TRACEBACK))
        pump.flush(advanceClock=True)
        assert [e["event"] for e in context.events] == ["hello", TRACEBACK.split(b": ", 1)[1].decode()]
        assert len(factory.connections) == 1
        sender.transport.loseConnection()
        pump.flush(advanceClock=True)
        assert factory.connections == set()


class DatagramMemoryReactor(MemoryReactorClock):
    """A MemoryReactorClock that also records UDP and unix datagram listens."""

    def __init__(self) -> None:
        super().__init__()
        self.datagram_ports: list[tuple[Any, DatagramProtocol, int]] = []

    def _datagram(self, where: Any, protocol: DatagramProtocol, size: int) -> Any:
        self.datagram_ports.append((where, protocol, size))
        port = FakeDatagramTransport()
        protocol.makeConnection(port)  # type: ignore[arg-type]
        return _FakeDatagramPort(where)

    def listenUDP(
        self, port: int, protocol: DatagramProtocol, interface: str = "", maxPacketSize: int = 8192
    ) -> Any:
        return self._datagram((interface, port), protocol, maxPacketSize)

    def listenUNIXDatagram(
        self, address: str, protocol: DatagramProtocol, maxPacketSize: int = 8192, mode: int = 0o666
    ) -> Any:
        return self._datagram(address, protocol, maxPacketSize)


@attrs.define
class _FakeDatagramPort:
    where: Any

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", "127.0.0.1", 5514)

    def stopListening(self) -> None:
        return None


class TestBuildInput:
    def test_one_listener_per_endpoint_and_drain_on_stop(self, tmp_path: Any) -> None:
        """Each listen string gets a listener (datagram ones their own protocol); stop drains."""
        reactor = DatagramMemoryReactor()
        raw = {
            "daemon": {"data_dir": str(tmp_path)},
            "inputs": {"syslog": {"listen": [
                "udp:5514:interface=127.0.0.1",
                f"unixgram:{tmp_path / 'log'}",
                "tcp:5514:interface=127.0.0.1",
            ], "max_message_size": 100_000}},
        }
        obsd_config = parse_config(raw)
        context = InputContext(
            name="syslog", reactor=reactor, telemetry=Telemetry(), flow_control=FlowControl(),
            throttle=ThrottledLogger(ListLog(), reactor, 10.0), ingest=CapturingIngest(),  # type: ignore[arg-type]
            http=None, config=obsd_config,  # type: ignore[arg-type]
        )
        service = syslog.build_input("syslog", obsd_config.inputs["syslog"], context)  # type: ignore[arg-type]
        service.startService()
        (udp, first, size), (path, second, _) = reactor.datagram_ports
        assert (udp, path, size) == (("127.0.0.1", 5514), str(tmp_path / "log"), 100_001)
        assert first is not second
        [(port, factory, _, interface)] = reactor.tcpServers
        assert (port, interface, type(factory)) == (5514, "127.0.0.1", syslog.SyslogStreamFactory)
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        assert isinstance(protocol, syslog.SyslogStreamProtocol)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 1))
        protocol.makeConnection(transport)
        protocol.dataReceived(b"<13>a: unterminated")
        d = service.stopService()
        reactor.advance(0.3)
        success_result_of(d)
        assert transport.disconnecting
        assert [e["event"] for e in context.ingest.events] == ["unterminated"]  # type: ignore[attr-defined]
