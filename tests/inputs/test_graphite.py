"""The graphite input's Twisted side: UDP, TCP lines, pickle frames, limits and counters."""

from __future__ import annotations

import os
import pickle
import struct
from typing import Any

import attrs
import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from obsd.config.loader import parse_config
from obsd.delivery.flowcontrol import FlowControl
from obsd.errors import ConfigError
from obsd.inputs import graphite
from obsd.ops.telemetry import Telemetry
from obsd.ops.throttle import ThrottledLogger
from obsd.testing import ListLog


class CapturingIngest:
    """Stands in for the ingest logger: records each metric event's fields."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def metric(self, fields: dict[str, Any]) -> None:
        self.events.append(fields)


@attrs.define
class FakeContext:
    """The parts of InputContext the graphite input uses."""

    reactor: Clock
    telemetry: Telemetry = attrs.Factory(Telemetry)
    flow_control: FlowControl = attrs.Factory(FlowControl)
    ingest: CapturingIngest = attrs.Factory(CapturingIngest)
    log: ListLog = attrs.Factory(ListLog)
    throttle: ThrottledLogger = attrs.field(default=None)

    def __attrs_post_init__(self) -> None:
        self.throttle = ThrottledLogger(self.log, self.reactor, 10.0)

    def counter(self, what: str) -> int:
        return self.telemetry.counter(f"obsd.input.graphite.{what}").value


@pytest.fixture(name="context")
def _context() -> FakeContext:
    clock = Clock()
    clock.advance(1_700_000_000)
    return FakeContext(clock)


def make(context: FakeContext, **kw: Any) -> graphite.GraphiteStreamFactory:
    config = graphite.Config(type="graphite", listen=["tcp:0"], **kw)
    return graphite.GraphiteStreamFactory(graphite.GraphiteReceiver("graphite", config, context),
                                          context)


def connect(factory: Any) -> tuple[Any, StringTransport]:
    peer = IPv4Address("TCP", "127.0.0.1", 40000)
    protocol = factory.buildProtocol(peer)
    transport = StringTransport(peerAddress=peer)
    protocol.makeConnection(transport)
    return protocol, transport


def frame(points: Any) -> bytes:
    body = pickle.dumps(points, protocol=2)
    return struct.pack("!L", len(body)) + body


class TestPlaintext:
    def test_udp_datagram_becomes_metric_events(self, context: FakeContext) -> None:
        """Each line of a datagram is one gauge metric event, tags kept."""
        receiver = graphite.GraphiteReceiver("graphite", make(context).receiver.config, context)
        proto = graphite.GraphiteDatagramProtocol(receiver)
        proto.datagramReceived(b"a.b 1 1699999999\nc.d;host=w1 2.5 -1\n", ("127.0.0.1", 5))
        assert context.ingest.events == [
            {"event": "a.b", "value": 1.0, "timestamp": 1699999999.0, "tags": {},
             "metric": "a.b", "metric_type": "gauge", "stat": "value"},
            {"event": "c.d", "value": 2.5, "timestamp": 1_700_000_000.0, "tags": {"host": "w1"},
             "metric": "c.d", "metric_type": "gauge", "stat": "value"},
        ]
        assert context.counter("points") == 2

    @pytest.mark.parametrize("split", [1, 5, 13, 20])
    def test_tcp_lines_split_anywhere(self, context: FakeContext, split: int) -> None:
        """Lines split across reads arrive whole; the unterminated last line at close too."""
        protocol, _ = connect(make(context))
        data = b"a.b 1 10\nc.d 2 20\ne.f 3 30"
        protocol.dataReceived(data[:split])
        protocol.dataReceived(data[split:])
        assert [e["event"] for e in context.ingest.events] == ["a.b", "c.d"]
        protocol.connectionLost(None)
        assert [e["event"] for e in context.ingest.events] == ["a.b", "c.d", "e.f"]

    def test_bad_lines_counted_and_logged_once(self, context: FakeContext) -> None:
        """Bad lines are counted each, and logged throttled."""
        protocol, _ = connect(make(context))
        for _ in range(5):
            protocol.dataReceived(b"nonsense\n")
        assert context.counter("bad_lines") == 5
        assert [l[1] for l in context.log.lines] == ["bad graphite lines skipped"]

    def test_overlong_line_cut(self, context: FakeContext) -> None:
        """A line longer than max_line_bytes is dropped and counted, the next one is read."""
        protocol, _ = connect(make(context, max_line_bytes=64))
        protocol.dataReceived(b"x" * 100)
        protocol.dataReceived(b"yyy\na 1 1\n")
        assert context.counter("bad_lines") == 1  # its tail is dropped with it
        assert [e["event"] for e in context.ingest.events] == ["a"]

    def test_max_connections(self, context: FakeContext) -> None:
        """Past max_connections a connection is closed and counted."""
        from obsd.net.slots import fair_factory

        inner = make(context, max_connections=1)
        factory: Any = fair_factory(inner, "graphite", inner.receiver.config, context)
        connect(factory)
        _, second = connect(factory)
        assert second.disconnecting
        assert context.counter("refused") == 1


class TestPickle:
    def test_frames_split_anywhere(self, context: FakeContext) -> None:
        """Length-prefixed frames arrive whole however the reads split them."""
        protocol, _ = connect(make(context, format="pickle"))
        data = frame([("a", (10, 1.0))]) + frame([("b;k=v", (20, 2)), ("c", (30, 3))])
        for i in range(len(data)):
            protocol.dataReceived(data[i : i + 1])
        assert [(e["event"], e["tags"]) for e in context.ingest.events] == [
            ("a", {}), ("b", {"k": "v"}), ("c", {})
        ]

    def test_malicious_pickle_refused_and_counted(self, context: FakeContext) -> None:
        """A REDUCE of os.system is refused, counted, logged, and the connection closed."""

        class Exploit:
            def __reduce__(self) -> tuple[object, tuple[str]]:
                return (os.system, ("echo pwned",))

        protocol, transport = connect(make(context, format="pickle"))
        protocol.dataReceived(frame([Exploit()]) + frame([("a", (1, 1))]))
        assert context.counter("pickle_refused") == 1
        assert context.counter("bad_frames") == 1
        assert transport.disconnecting
        assert context.ingest.events == []
        assert "refused" in context.log.lines[0][1]

    def test_oversize_frame_closes(self, context: FakeContext) -> None:
        """A frame longer than max_pickle_frame_bytes closes the connection."""
        protocol, transport = connect(make(context, format="pickle", max_pickle_frame_bytes=1024))
        protocol.dataReceived(struct.pack("!L", 4096))
        assert transport.disconnecting
        assert context.counter("bad_frames") == 1


class TestConfig:
    def test_pickle_over_udp_refused(self) -> None:
        """format = "pickle" with a UDP listener is a config problem."""
        with pytest.raises(ConfigError, match="pickle protocol is TCP only"):
            parse_config({"inputs": {"graphite": {"format": "pickle", "listen": ["udp:2004"]}}})

    def test_listen_needed(self) -> None:
        """A graphite input without listeners is a config problem."""
        with pytest.raises(ConfigError, match="at least one listen"):
            parse_config({"inputs": {"graphite": {}}})
