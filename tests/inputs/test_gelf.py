"""The GELF input's Twisted side: UDP chunks, NUL-framed TCP, POST /gelf, counters."""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import attrs
import pytest
from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from obsd.config.loader import parse_config
from obsd.delivery.flowcontrol import FlowControl
from obsd.errors import ConfigError
from obsd.inputs import gelf
from obsd.net.web import HttpRoot
from obsd.ops.telemetry import Telemetry
from obsd.ops.throttle import ThrottledLogger
from obsd.testing import ListLog
from tests.helpers import success_result_of

MESSAGE = json.dumps(
    {"version": "1.1", "host": "web1", "short_message": "hello", "level": 6, "_app": "shop"}
).encode()


class CapturingIngest:
    """Stands in for the ingest logger: records each log event's fields."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def log(self, fields: dict[str, Any]) -> None:
        self.events.append(fields)


@attrs.define
class FakeContext:
    """The parts of InputContext the GELF input uses."""

    reactor: Clock = attrs.Factory(Clock)
    telemetry: Telemetry = attrs.Factory(Telemetry)
    flow_control: FlowControl = attrs.Factory(FlowControl)
    ingest: CapturingIngest = attrs.Factory(CapturingIngest)
    log: ListLog = attrs.Factory(ListLog)
    http: HttpRoot = attrs.Factory(HttpRoot)
    throttle: ThrottledLogger = attrs.field(default=None)

    def __attrs_post_init__(self) -> None:
        self.throttle = ThrottledLogger(self.log, self.reactor, 10.0)

    def counter(self, what: str) -> int:
        return self.telemetry.counter(f"obsd.input.gelf.{what}").value

    def listener_services(self, *args: Any, **kw: Any) -> list[Any]:
        return []


@pytest.fixture(name="context")
def _context() -> FakeContext:
    return FakeContext()


def receiver(context: FakeContext, **kw: Any) -> gelf.GelfReceiver:
    return gelf.GelfReceiver("gelf", gelf.Config(type="gelf", **kw), context)


def chunked(payload: bytes, size: int, message_id: bytes = b"12345678") -> list[bytes]:
    parts = [payload[i : i + size] for i in range(0, len(payload), size)]
    return [b"\x1e\x0f" + message_id + bytes([n, len(parts)]) + p for n, p in enumerate(parts)]


class TestUdp:
    @pytest.mark.parametrize("pack", [zlib.compress, gzip.compress, lambda b: b])
    def test_datagram_becomes_log_event(self, context: FakeContext, pack: Any) -> None:
        """A whole datagram, compressed or not, is one log event with the sender as peer."""
        proto = gelf.GelfDatagramProtocol(receiver(context))
        proto.datagramReceived(pack(MESSAGE), ("10.0.0.7", 5000))
        assert context.ingest.events == [
            {"event": "hello", "host": "web1", "level": "info", "gelf_version": "1.1",
             "app": "shop", "peer": "10.0.0.7:5000"}
        ]
        assert context.counter("messages") == 1

    def test_chunked_message(self, context: FakeContext) -> None:
        """Chunks of one message give one event when the last arrives."""
        proto = gelf.GelfDatagramProtocol(receiver(context))
        for part in chunked(gzip.compress(MESSAGE), 20):
            proto.datagramReceived(part, ("10.0.0.7", 5000))
        assert [e["event"] for e in context.ingest.events] == ["hello"]
        assert context.counter("chunks") > 1

    def test_incomplete_set_counted_after_timeout(self, context: FakeContext) -> None:
        """A set missing a chunk is dropped after 5 s by the input's timer, and counted."""
        service = gelf.build_input("gelf", gelf.Config(type="gelf", listen=["udp:0"]), context)
        service.startService()
        rec = service.receiver  # type: ignore[attr-defined]
        rec.datagram(chunked(MESSAGE, 20)[0], "10.0.0.7:5000")
        context.reactor.advance(5.0)
        assert context.counter("incomplete") == 0
        context.reactor.advance(1.0)
        assert context.counter("incomplete") == 1
        service.stopService()
        assert context.reactor.getDelayedCalls() == []

    def test_bad_datagrams_counted_and_logged_once(self, context: FakeContext) -> None:
        """Bad messages are counted each and logged throttled."""
        rec = receiver(context)
        for _ in range(3):
            rec.datagram(b"{not json", "p")
        rec.datagram(b"\x1e\x0fXXXXXXXX\x09\x02body", "p")
        assert context.counter("bad_messages") == 3
        assert context.counter("bad_chunks") == 1
        assert [l[1] for l in context.log.lines] == ["bad GELF message skipped"]


def connect(factory: Any) -> tuple[Any, StringTransport]:
    peer = IPv4Address("TCP", "127.0.0.1", 40000)
    protocol = factory.buildProtocol(peer)
    transport = StringTransport(peerAddress=peer)
    protocol.makeConnection(transport)
    return protocol, transport


class TestTcp:
    @pytest.mark.parametrize("split", [1, 10, 40, 80])
    def test_nul_framed(self, context: FakeContext, split: int) -> None:
        """NUL-ended messages split anywhere arrive whole; the last one even without NUL."""
        protocol, _ = connect(gelf.GelfStreamFactory(receiver(context)))
        data = MESSAGE + b"\0" + MESSAGE.replace(b"hello", b"again")
        protocol.dataReceived(data[:split])
        protocol.dataReceived(data[split:])
        protocol.connectionLost(None)
        assert [e["event"] for e in context.ingest.events] == ["hello", "again"]

    def test_overlong_message_skipped(self, context: FakeContext) -> None:
        """A message past max_message_bytes is skipped to its NUL and counted."""
        protocol, _ = connect(gelf.GelfStreamFactory(receiver(context, max_message_bytes=1024)))
        protocol.dataReceived(b"x" * 2000)
        protocol.dataReceived(b"yyy\0" + MESSAGE + b"\0")
        assert context.counter("bad_messages") == 1
        assert [e["event"] for e in context.ingest.events] == ["hello"]

    def test_max_connections(self, context: FakeContext) -> None:
        """Past max_connections a connection is refused and counted."""
        from obsd.net.slots import fair_factory

        taker = receiver(context, max_connections=1)
        factory: Any = fair_factory(gelf.GelfStreamFactory(taker), "gelf", taker.config, context)
        connect(factory)
        _, second = connect(factory)
        assert second.disconnecting and context.counter("refused") == 1


def post(context: FakeContext, body: bytes, **headers: str) -> tuple[int, bytes]:
    stub = StubTreq(context.http)
    d = stub.post("http://obsd/gelf", data=body, headers=headers)
    stub.flush()
    response = success_result_of(d)
    content = stub.content(response)
    stub.flush()
    return response.code, success_result_of(content)


class TestHttp:
    @pytest.fixture(name="mounted")
    def _mounted(self, context: FakeContext) -> FakeContext:
        gelf.build_input("gelf", gelf.Config(type="gelf", max_message_bytes=4096), context)
        return context

    def test_accepted(self, mounted: FakeContext) -> None:
        """POST /gelf answers 202 and the message becomes an event (graypy's zlib too)."""
        assert post(mounted, MESSAGE)[0] == 202
        assert post(mounted, zlib.compress(MESSAGE), **{"Content-Encoding": "gzip,deflate"})[0] == 202
        assert [e["event"] for e in mounted.ingest.events] == ["hello", "hello"]

    def test_bad_message_400(self, mounted: FakeContext) -> None:
        """A body that is not GELF is 400 with the reason, counted."""
        code, body = post(mounted, b'{"host":"h"}')
        assert code == 400
        assert b"short_message" in body
        assert mounted.counter("http.rejected.400") == 1

    def test_oversize_413(self, mounted: FakeContext) -> None:
        """A body or an inflated body past max_message_bytes is 413."""
        assert post(mounted, b"x" * 5000)[0] == 413
        assert post(mounted, zlib.compress(b"{" + b" " * 100_000))[0] == 413

    def test_congested_503(self, mounted: FakeContext) -> None:
        """While outputs are congested, 503 with Retry-After."""
        mounted.flow_control.report("q", True)
        assert post(mounted, MESSAGE)[0] == 503
        assert mounted.ingest.events == []


class TestConfig:
    def test_bad_http_path(self) -> None:
        """http_path must be an absolute path."""
        with pytest.raises(ConfigError, match="http_path"):
            parse_config({"inputs": {"gelf": {"listen": ["udp:0"], "http_path": "gelf"}}})

    def test_needs_a_way_in(self) -> None:
        """No listeners and no [http] is a problem."""
        with pytest.raises(ConfigError, match="no listen endpoints"):
            parse_config({"inputs": {"gelf": {}}})


class TestWiring:
    def test_daemon_with_the_three_new_inputs(self, tmp_path: Any) -> None:
        """A daemon with graphite, gelf and otlp inputs binds each listener and mounts /gelf."""
        from obsd.daemon.topology import build_service
        from tests.inputs.test_statsd import UdpMemoryReactor

        reactor = UdpMemoryReactor()
        config = parse_config({
            "daemon": {"data_dir": str(tmp_path)},
            "http": {"listen": ["tcp:9000:interface=127.0.0.1"]},
            "inputs": {
                "graphite": {"listen": ["tcp:2003:interface=127.0.0.1",
                                        "udp:2003:interface=127.0.0.1"]},
                "gelf": {"listen": ["udp:12201:interface=127.0.0.1",
                                    "tcp:12201:interface=127.0.0.1"]},
                "otlp": {},
            },
            "outputs": {"file": {}},
        })
        service = build_service(config, reactor)
        service.privilegedStartService()
        service.startService()
        assert sorted(port for port, *_ in reactor.tcpServers) == [2003, 4318, 9000, 12201]
        assert len(reactor.udp) == 2
        assert ("gelf",) in service.http_root.mounted
        success_result_of(service.stopService())
        assert reactor.getDelayedCalls() == []
