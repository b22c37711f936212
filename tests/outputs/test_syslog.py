"""The syslog output: RFC 5424 lines, octet counting, one reconnecting connection."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.error import ConnectionRefusedError as Refused
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from obsd.codecs.framing import OctetCountingFramer
from obsd.codecs.rfc5424 import format_rfc5424, octet_frame, priority, structured_data
from obsd.codecs.syslog import parse_syslog
from obsd.config.loader import parse_config
from obsd.config.schema import Problems
from obsd.outputs.syslog import SyslogOutput, parse_destination
from obsd.testing import make_output_context
from tests.helpers import assert_no_result, success_result_of


class FakeEndpoint:
    """A client endpoint that connects to StringTransports, or fails, as scripted."""

    def __init__(self) -> None:
        self.transports: list[StringTransport] = []
        self.protocols: list[Any] = []
        self.refuse = 0

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        if self.refuse:
            self.refuse -= 1
            return defer.fail(Refused())
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.transports.append(transport)
        self.protocols.append(protocol)
        return defer.succeed(protocol)


@pytest.fixture(name="endpoint")
def _endpoint() -> FakeEndpoint:
    return FakeEndpoint()


def make(clock: Clock, tmp_path: Path, endpoint: FakeEndpoint, **settings: Any) -> SyslogOutput:
    raw = {"destination": "tcp:127.0.0.1:514", "batch_timeout": 0.0, **settings}
    config = parse_config({"outputs": {"syslog": raw}}).outputs["syslog"]
    out = SyslogOutput("syslog", config, make_output_context(clock, tmp_path), endpoint)  # type: ignore[arg-type]
    out.startService()
    return out


def event(i: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"e{i}", "kind": "log", "event": f"line {i}", "level": "info",
            "timestamp": 1700000000.5, "host": "web1", "appname": "app", **extra}


def frames(data: bytes) -> list[bytes]:
    """The messages in an octet-counted stream, cut by obsd's own framer."""
    return [f.message for f in OctetCountingFramer().feed(data)]


def parse(message: bytes) -> dict[str, Any]:
    return parse_syslog(message, received_at=0.0, timezone=datetime.UTC)


class TestFormat:
    def test_round_trips_through_obsds_parser(self) -> None:
        """Every field obsd's syslog parser reads comes back from what the output writes."""
        sent = event(1, procid="42", msgid="ID7", facility="local3", severity="notice",
                     sd={"ex@32473": {"a": 'q"]\\x', "b": "2"}}, event="héllo\nworld")
        got = parse(format_rfc5424(sent))
        for key in ("event", "host", "appname", "procid", "msgid", "facility", "severity", "sd"):
            assert got[key] == sent[key], key
        assert got["timestamp"] == 1700000000.5
        assert got["syslog_format"] == "rfc5424"

    def test_exact_bytes(self) -> None:
        """The header is PRI VERSION TIMESTAMP HOST APP PROCID MSGID SD, and no BOM."""
        line = format_rfc5424({"event": "hi", "timestamp": 0.0, "level": "error"},
                              hostname="h", default_facility="local0")
        assert line == b"<131>1 1970-01-01T00:00:00.000000Z h obsd - - - hi"

    @pytest.mark.parametrize(("fields", "pri"), [
        ({"level": "debug"}, 15),
        ({"level": "warning"}, 12),
        ({"level": "critical", "facility": "kern"}, 2),
        ({"severity": "notice", "level": "info"}, 13),
        ({"level": "bogus"}, 14),
        ({"level": 40, "facility": "nope"}, 11),
    ])
    def test_priority(self, fields: dict[str, Any], pri: int) -> None:
        """PRI comes from facility (else the default) and severity (else the level)."""
        assert priority(fields, "user") == pri

    def test_header_fields_are_made_safe(self) -> None:
        """Spaces and non-ASCII in header fields cannot break the header; lengths are cut."""
        line = format_rfc5424({"event": "m", "host": "a b", "appname": "x" * 60,
                               "procid": "ü", "timestamp": 0.0})
        parts = line.split(b" ")
        assert parts[2] == b"a_b"
        assert parts[3] == b"x" * 48
        assert parts[4] == b"_"

    def test_no_sd_is_nil(self) -> None:
        """Without sd the field is '-'."""
        assert structured_data({}) == "-"
        assert structured_data(None) == "-"

    def test_json_message(self) -> None:
        """message = json puts the whole public event in MSG."""
        line = format_rfc5424(event(1, _private=1), json_message=True)
        assert b'"event":"line 1"' in line
        assert b"_private" not in line

    def test_octet_frame(self) -> None:
        """A frame is the byte length, a space and the message."""
        assert octet_frame("é".encode()) == b"2 \xc3\xa9"


class TestConnection:
    def test_batch_written_with_octet_counting(
        self, clock: Clock, tmp_path: Path, endpoint: FakeEndpoint
    ) -> None:
        """Events go out as octet-counted RFC 5424 frames on one connection."""
        out = make(clock, tmp_path, endpoint)
        for i in range(3):
            out.accept(event(i))
        clock.advance(0)
        (transport,) = endpoint.transports
        got = [parse(f)["event"] for f in frames(transport.value())]
        assert got == ["line 0", "line 1", "line 2"]
        out.accept(event(3))
        clock.advance(0)
        assert len(endpoint.transports) == 1
        assert out.context.telemetry.value("obsd.output.syslog.sent") == 4

    def test_reconnects_with_backoff_and_resends(
        self, clock: Clock, tmp_path: Path, endpoint: FakeEndpoint
    ) -> None:
        """A refused connection keeps the batch; it goes out once a reconnect succeeds."""
        endpoint.refuse = 2
        out = make(clock, tmp_path, endpoint, retry_initial=1.0)
        out.accept(event(1))
        for _ in range(4):  # the first attempt fails at start, the next at 1.25 s
            clock.advance(0.5)
        assert endpoint.transports == []
        assert out.health()["state"] == "degraded"
        for _ in range(10):
            clock.advance(1.0)
        (transport,) = endpoint.transports
        assert [parse(f)["event"] for f in frames(transport.value())] == ["line 1"]

    def test_lost_connection_is_replaced(
        self, clock: Clock, tmp_path: Path, endpoint: FakeEndpoint
    ) -> None:
        """After the server closes the connection, the next batch uses a new one."""
        out = make(clock, tmp_path, endpoint)
        out.accept(event(1))
        clock.advance(0)
        endpoint.protocols[0].connectionLost(Failure(ConnectionDone()))
        for _ in range(5):
            clock.advance(1.0)
        out.accept(event(2))
        for _ in range(5):
            clock.advance(1.0)
        assert len(endpoint.transports) == 2
        assert [parse(f)["event"] for f in frames(endpoint.transports[1].value())] == ["line 2"]

    def test_paused_transport_holds_sends(
        self, clock: Clock, tmp_path: Path, endpoint: FakeEndpoint
    ) -> None:
        """While the transport is paused a send stays in flight; resume completes it."""
        out = make(clock, tmp_path, endpoint)
        out.accept(event(1))
        clock.advance(0)
        protocol = endpoint.protocols[0]
        protocol.pauseProducing()
        out.accept(event(2))
        clock.advance(0)
        sent = "obsd.output.syslog.sent"
        assert out.context.telemetry.value(sent) == 1
        protocol.resumeProducing()
        assert out.context.telemetry.value(sent) == 2

    def test_stop_drains_then_disconnects(
        self, clock: Clock, tmp_path: Path, endpoint: FakeEndpoint
    ) -> None:
        """stopService sends what is queued, then closes the connection."""
        out = make(clock, tmp_path, endpoint, batch_timeout=10.0)
        out.accept(event(1))
        d = out.stopService()
        clock.advance(0)
        transport = endpoint.transports[0]
        assert frames(transport.value())
        assert transport.disconnecting
        endpoint.protocols[0].connectionLost(Failure(ConnectionDone()))
        success_result_of(d)


class TestConfig:
    @pytest.mark.parametrize(("text", "parsed"), [
        ("tcp:127.0.0.1:514", (False, "127.0.0.1", 514)),
        ("tls:logs.example.com:6514", (True, "logs.example.com", 6514)),
        ("ssl:[::1]:6514", (True, "::1", 6514)),
    ])
    def test_destination(self, text: str, parsed: tuple[bool, str, int]) -> None:
        """tcp:, tls: and ssl: destinations parse to (tls, host, port)."""
        assert parse_destination(text) == parsed

    @pytest.mark.parametrize(("raw", "problem"), [
        ({"destination": "udp:h:514"}, "expected"),
        ({"destination": "tcp:h:514", "facility": "nope"}, "unknown facility"),
        ({"destination": "tcp:h:514", "ca_file": "/nonexistent"}, "only used with a tls"),
    ])
    def test_problems(self, raw: dict[str, Any], problem: str) -> None:
        """Bad destinations, facilities and misplaced TLS files are reported."""
        from obsd.outputs.syslog import check_config

        config = parse_config({"outputs": {"syslog": {"destination": "tcp:h:1"}}})
        cfg = type(config.outputs["syslog"])(type="syslog", **raw)
        problems = Problems()
        check_config("syslog", cfg, config, problems)  # type: ignore[arg-type]
        assert any(problem in line for line in problems.lines)

    def test_stop_aborts_a_peer_that_never_closes(
        self, clock: Clock, tmp_path: Path, endpoint: FakeEndpoint
    ) -> None:
        """A peer that never answers the close (TLS close_notify) is aborted after a grace period."""
        from obsd.outputs.syslog import CLOSE_GRACE

        out = make(clock, tmp_path, endpoint)
        out.accept(event(1))
        clock.advance(0)
        transport = endpoint.transports[0]
        aborted: list[bool] = []
        transport.abortConnection = lambda: aborted.append(True)  # type: ignore[method-assign]
        d = out.stopService()
        clock.advance(0)
        assert_no_result(d)
        clock.advance(CLOSE_GRACE)
        assert aborted == [True]
        endpoint.protocols[0].connectionLost(Failure(ConnectionDone()))
        success_result_of(d)
