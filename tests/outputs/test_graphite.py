"""The graphite output: encoding, routing on carbon's ring, connections, flow control, outages."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import error
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from obsd.codecs.carbonhash import ConsistentHashRing
from obsd.config.loader import parse_config
from obsd.config.model import BufferConfig
from obsd.errors import ConfigError
from obsd.outputs.graphite import (
    CarbonProtocol,
    Config,
    GraphiteOutput,
    encode_pickle_records,
    parse_destination,
)
from obsd.testing import make_output_context
from tests.helpers import assert_no_result


@pytest.fixture(name="reactor")
def _reactor() -> MemoryReactorClock:
    return MemoryReactorClock()


def make(reactor: MemoryReactorClock, tmp_path: Path, **settings: Any) -> GraphiteOutput:
    settings.setdefault("batch_timeout", 0.0)
    config = Config(type="graphite", **settings)
    output = GraphiteOutput("graphite", config, make_output_context(reactor, tmp_path))  # type: ignore[arg-type]
    output.startService()
    return output


def connect(reactor: MemoryReactorClock, index: int = 0) -> tuple[CarbonProtocol, StringTransport]:
    """Complete the index-th pending connection attempt with a StringTransport."""
    host, port, factory, _, _ = reactor.tcpClients[index]
    protocol: Any = factory.buildProtocol(IPv4Address("TCP", host, port))
    transport = StringTransport()
    protocol.makeConnection(transport)
    inner: Any = protocol
    while not isinstance(inner, CarbonProtocol):  # endpoint and ClientService wrappers
        inner = getattr(inner, "_wrappedProtocol", None) or inner._protocol
    return inner, transport


def metric(name: str, value: Any, timestamp: float = 1700000000.9, **tags: str) -> dict[str, Any]:
    return {"kind": "metric", "event": name, "value": value, "timestamp": timestamp, "tags": tags}


class TestConfig:
    @pytest.mark.parametrize(
        ("text", "parsed"),
        [
            ("127.0.0.1:2003", ("127.0.0.1", 2003, None)),
            ("carbon1:2004:a", ("carbon1", 2004, "a")),
            ("[::1]:2003:b", ("::1", 2003, "b")),
        ],
    )
    def test_destinations(self, text: str, parsed: tuple[str, int, str | None]) -> None:
        """host:port and host:port:instance, IPv6 in brackets."""
        assert parse_destination(text) == parsed

    @pytest.mark.parametrize(
        "destinations",
        [["nope"], ["h:0"], ["h:2003", "h:2004"], []],
    )
    def test_bad_destinations(self, destinations: list[str]) -> None:
        """Unparsable, out of range, same-ring-node and empty destination lists are refused."""
        with pytest.raises(ConfigError) as info:
            parse_config({"outputs": {"graphite": {"destinations": destinations}}})
        assert any("outputs.graphite.destinations" in p for p in info.value.problems)

    def test_takes_metrics_only(self) -> None:
        """A route sending logs to graphite is a config problem."""
        with pytest.raises(ConfigError):
            parse_config(
                {
                    "outputs": {"graphite": {}},
                    "routes": [{"match": {"kind": ["log"]}, "outputs": ["graphite"]}],
                }
            )


class TestEncoding:
    def test_plaintext_line(self, reactor: MemoryReactorClock, tmp_path: Path) -> None:
        """Sanitised name, whole-second timestamp, tags as a tagged series."""
        out = make(reactor, tmp_path)
        _, transport = connect(reactor)
        out.accept(metric("web server.req/s", 1.5, env="prod"))
        out.accept(metric("count", 3.0, 1700000001.0))
        reactor.advance(0)
        assert transport.value() == (
            b"web_server.req-s;env=prod 1.5 1700000000\ncount 3 1700000001\n"
        )

    def test_tags_marked_not_series_stay_off_the_path(
        self, reactor: MemoryReactorClock, tmp_path: Path
    ) -> None:
        """A StatsD event from graphite_tags = false keeps its tags out of the series path."""
        out = make(reactor, tmp_path)
        _, transport = connect(reactor)
        event = metric("stats_counts.req", 2.0, env="prod")
        event["_graphite_tags"] = False
        out.accept(event)
        reactor.advance(0)
        assert transport.value() == b"stats_counts.req 2 1700000000\n"

    @pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
    def test_non_finite_never_sent(
        self, reactor: MemoryReactorClock, tmp_path: Path, value: float
    ) -> None:
        """NaN and infinities are counted and skipped, never written."""
        out = make(reactor, tmp_path)
        _, transport = connect(reactor)
        out.accept(metric("bad", value))
        out.accept(metric("good", 1))
        reactor.advance(0)
        assert transport.value() == b"good 1 1700000000\n"
        assert out.context.telemetry.value("obsd.output.graphite.skipped_nonfinite") == 1

    def test_not_a_number_is_an_encode_error(
        self, reactor: MemoryReactorClock, tmp_path: Path
    ) -> None:
        """A value that is not a number is an encode error, counted and dead-lettered.

        Graphite used to have its own copy of ``accept`` that counted the error
        but never wrote the dead letter every other output writes.
        """
        out = make(reactor, tmp_path)
        out.accept(metric("bad", "12"))
        assert out.context.telemetry.value("obsd.output.graphite.encode_errors") == 1
        (letter,) = [
            json.loads(line) for line in (tmp_path / "dead-letter.jsonl").read_text().splitlines()
        ]
        assert letter["output"] == "graphite"
        assert "value is not a number" in letter["reason"]

    @pytest.mark.parametrize(
        ("name", "sent"),
        [
            ("req", "servers.a.req"),
            ("servers.a.req", "servers.a.req"),
            ("servers.ab", "servers.a.servers.ab"),
        ],
    )
    def test_prefix_applied_once(
        self, reactor: MemoryReactorClock, tmp_path: Path, name: str, sent: str
    ) -> None:
        """A point already under the prefix (relayed) is not prefixed again."""
        out = make(reactor, tmp_path, prefix="servers.a")
        _, transport = connect(reactor)
        out.accept(metric(name, 1))
        reactor.advance(0)
        assert transport.value() == f"{sent} 1 1700000000\n".encode()

    def test_pickle_frames(self, reactor: MemoryReactorClock, tmp_path: Path) -> None:
        """The pickle protocol sends length-prefixed frames of (path, (ts, value))."""
        out = make(reactor, tmp_path, protocol="pickle")
        _, transport = connect(reactor)
        out.accept(metric("a.b", 2.5))
        reactor.advance(0)
        data = transport.value()
        (length,) = struct.unpack("!L", data[:4])
        assert pickle.loads(data[4 : 4 + length]) == [("a.b", (1700000000, 2.5))]

    def test_pickle_frame_size(self) -> None:
        """At most 500 points a frame, as carbon-relay sends."""
        data = encode_pickle_records([b"m.%d 1 10\n" % i for i in range(1200)])
        counts = []
        while data:
            (length,) = struct.unpack("!L", data[:4])
            counts.append(len(pickle.loads(data[4 : 4 + length])))
            data = data[4 + length :]
        assert counts == [500, 500, 200]


class TestRouting:
    def test_points_follow_carbons_ring(self, reactor: MemoryReactorClock, tmp_path: Path) -> None:
        """Each series goes to the destination carbon_ch puts it on; one connection each."""
        dests = ["127.0.0.1:2003:a", "127.0.0.1:2103:b", "127.0.0.1:2203:c"]
        out = make(reactor, tmp_path, destinations=dests)
        assert len(reactor.tcpClients) == 3
        transports = {}
        for i, dest in enumerate(dests):
            transports[dest] = connect(reactor, i)[1]
        ring = ConsistentHashRing([("127.0.0.1", "a"), ("127.0.0.1", "b"), ("127.0.0.1", "c")])
        names = [f"host{i}.cpu" for i in range(60)]
        for name in names:
            out.accept(metric(name, 1))
        reactor.advance(0)
        for name in names:
            node = ring.get_node(name)
            dest = next(d for d in dests if d.endswith(":" + str(node[1])))
            assert f"{name} 1 ".encode() in transports[dest].value()
        assert all(t.value() for t in transports.values())


class TestConnection:
    def test_disconnected_batches_wait_and_retry(
        self, reactor: MemoryReactorClock, tmp_path: Path
    ) -> None:
        """Points sent while carbon is down stay queued and go out once it is up."""
        out = make(reactor, tmp_path, retry_initial=1.0)
        out.accept(metric("early", 1))
        reactor.advance(0)
        queue = out.queues["127.0.0.1:2003"]
        assert len(queue.buffer) == 1 and queue.failures_in_row == 1
        _, transport = connect(reactor)
        reactor.advance(2)
        assert transport.value() == b"early 1 1700000000\n"
        assert queue.state == "ok"

    def test_reconnects_with_backoff(self, reactor: MemoryReactorClock, tmp_path: Path) -> None:
        """A refused connection is retried later by ClientService on the injected clock."""
        make(reactor, tmp_path, reconnect_initial=1.0)
        _, _, factory, _, _ = reactor.tcpClients[0]
        connector: Any = None
        factory.clientConnectionFailed(connector, Failure(error.ConnectionRefusedError()))
        assert len(reactor.tcpClients) == 1
        reactor.advance(5)
        assert len(reactor.tcpClients) == 2

    def test_lost_connection_fails_held_batch(
        self, reactor: MemoryReactorClock, tmp_path: Path
    ) -> None:
        """A batch held while paused is retried if the connection drops before resume."""
        out = make(reactor, tmp_path)
        protocol, transport = connect(reactor)
        protocol.pauseProducing()
        out.accept(metric("held", 1))
        reactor.advance(0)
        assert transport.value() == b""
        queue = out.queues["127.0.0.1:2003"]
        protocol.connectionLost(Failure(error.ConnectionLost()))
        assert len(queue.buffer) == 1 and queue.failures_in_row == 1

    def test_pause_holds_and_resume_writes(
        self, reactor: MemoryReactorClock, tmp_path: Path
    ) -> None:
        """While the transport has paused the producer, the batch waits; resume writes it."""
        out = make(reactor, tmp_path)
        protocol, transport = connect(reactor)
        assert transport.producer is protocol
        protocol.pauseProducing()
        out.accept(metric("a", 1))
        out.accept(metric("b", 2))
        reactor.advance(0)
        assert transport.value() == b""
        protocol.resumeProducing()
        reactor.advance(0)
        reactor.advance(0)
        assert transport.value() == b"a 1 1700000000\nb 2 1700000000\n"

    def test_bounded_while_disconnected(self, reactor: MemoryReactorClock, tmp_path: Path) -> None:
        """With carbon down the buffer holds at most its limit; the overflow is counted."""
        out = make(
            reactor,
            tmp_path,
            buffer=BufferConfig(max_events=10, when_full="drop_newest"),
        )
        for i in range(25):
            out.accept(metric(f"m{i}", i))
        telemetry = out.context.telemetry
        assert len(out.queues["127.0.0.1:2003"].buffer) <= 10
        assert telemetry.value("obsd.output.graphite.dropped.full") >= 15

    def test_stop_drains_then_closes(self, reactor: MemoryReactorClock, tmp_path: Path) -> None:
        """Stopping writes what is queued, then stops the connection service."""
        out = make(reactor, tmp_path, batch_timeout=5.0)
        _, transport = connect(reactor)
        out.accept(metric("last", 1))
        d = out.stopService()
        reactor.advance(0)
        assert transport.value() == b"last 1 1700000000\n"
        reactor.advance(1)
        assert transport.disconnecting
        assert_no_result_or_done(d)


def assert_no_result_or_done(d: Any) -> None:
    """The stop Deferred either finished or waits only for the connection to close."""
    results: list[Any] = []
    d.addBoth(results.append)
    if results:
        assert not isinstance(results[0], Failure)
    else:
        assert_no_result(d)
