"""The statsd input: receiving, flushing on a clock, bad lines, buffers and the repeater."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from obsd.config.loader import parse_config
from obsd.config.model import ObsdConfig
from obsd.daemon.topology import InputContext
from obsd.delivery.flowcontrol import FlowControl
from obsd.errors import ConfigError
from obsd.inputs.statsd import (
    EMIT_CHUNK,
    Config,
    StatsdDatagramProtocol,
    StatsdInput,
    StatsdLineFactory,
    tags_dict,
)
from obsd.inputs.statsd_repeat import _split_lines
from obsd.net.rcvbuf import SO_RCVBUFFORCE, set_receive_buffer
from obsd.ops.telemetry import Telemetry
from obsd.ops.throttle import ThrottledLogger
from obsd.testing import ListLog


class FakeIngest:
    """Collects metric events as the chain would receive them."""

    def __init__(self) -> None:
        self.metrics: list[dict[str, Any]] = []

    def metric(self, fields: dict[str, Any]) -> None:
        self.metrics.append(fields)

    def by_name(self) -> dict[str, Any]:
        return {m["event"]: m["value"] for m in self.metrics}


class FakeSocket:
    """A socket double whose kernel caps the buffer at ``cap`` and doubles it (Linux)."""

    def __init__(self, cap: int, force_allowed: bool = False) -> None:
        self.cap = cap
        self.force_allowed = force_allowed
        self.size = 212992

    def setsockopt(self, level: int, option: int, value: int) -> None:
        if option == SO_RCVBUFFORCE:
            if not self.force_allowed:
                raise PermissionError("not root")
            self.size = 2 * value
        else:
            self.size = 2 * min(value, self.cap)

    def getsockopt(self, level: int, option: int) -> int:
        return self.size


def make_input(
    reactor: MemoryReactorClock, log: ListLog | None = None, **settings: Any
) -> tuple[StatsdInput, FakeIngest, InputContext]:
    settings.setdefault("listen", ["udp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1"])
    ingest = FakeIngest()
    context = InputContext(
        name="statsd",
        reactor=reactor,
        telemetry=Telemetry(),
        flow_control=FlowControl(),
        throttle=ThrottledLogger(log or ListLog(), reactor, 10.0),
        ingest=ingest,  # type: ignore[arg-type]
        http=None,  # type: ignore[arg-type]
        config=ObsdConfig(),
    )
    return StatsdInput("statsd", Config(**settings), context), ingest, context


class FakePort:
    """What listenUDP returns in these tests."""

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.listening = True

    def getHost(self) -> Any:
        return IPv4Address("UDP", "127.0.0.1", 8125)

    def stopListening(self) -> None:
        self.listening = False


class UdpMemoryReactor(MemoryReactorClock):
    """MemoryReactorClock with a listenUDP that records the protocol and starts it."""

    def __init__(self) -> None:
        super().__init__()
        self.udp: list[FakePort] = []

    def listenUDP(
        self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192
    ) -> FakePort:
        fake = FakePort(protocol)
        self.udp.append(fake)
        return fake


@pytest.fixture(name="reactor")
def _reactor() -> MemoryReactorClock:
    return UdpMemoryReactor()


class TestConfig:
    def test_defaults(self) -> None:
        """The contract's defaults: 10 s flushes, 90th percentile, legacy names, 8 MiB buffer."""
        cfg = Config()
        assert (cfg.flush_interval, cfg.percentiles, cfg.legacy_namespace) == (10.0, [90.0], True)
        assert cfg.receive_buffer_bytes == 8 * 1024 * 1024
        assert not cfg.graphite_tags and cfg.repeat_to == []

    def test_loads_from_toml_tables(self) -> None:
        """An [inputs.statsd] table with every kind of key builds."""
        config = parse_config(
            {
                "inputs": {
                    "statsd": {
                        "listen": ["udp:8125:interface=127.0.0.1"],
                        "percentiles": [90, 99.9, -10],
                        "delete_counters": True,
                        "histogram": [{"metric": "api", "bins": [10, 100, "inf"]}],
                        "repeat_to": ["127.0.0.1:9125"],
                    }
                }
            }
        )
        cfg = config.inputs["statsd"]
        assert isinstance(cfg, Config)
        assert cfg.percentiles == [90.0, 99.9, -10.0]
        assert cfg.histogram[0].bins == [10.0, 100.0, "inf"]

    @pytest.mark.parametrize(
        ("key", "value", "problem"),
        [
            ("percentiles", [0], "percentiles[0]"),
            ("percentiles", [101], "percentiles[0]"),
            ("repeat_to", ["nohost"], "repeat_to[0]"),
            ("repeat_to", ["h:99999"], "repeat_to[0]"),
            ("histogram", [{"metric": "x", "bins": ["lots"]}], "histogram[0].bins"),
        ],
    )
    def test_cross_checks(self, key: str, value: Any, problem: str) -> None:
        """Bad percentiles, repeat targets and bins are config problems, not runtime errors."""
        with pytest.raises(ConfigError) as info:
            parse_config({"inputs": {"statsd": {key: value}}})
        assert any(f"inputs.statsd.{problem}" in line for line in info.value.problems)


class TestFlushing:
    def test_flush_loop_emits_metric_events(self, reactor: MemoryReactorClock) -> None:
        """Each flush_interval the aggregated points go out as metric events with whole stamps."""
        statsd, ingest, _ = make_input(reactor, flush_interval=10.0)
        statsd.startService()
        reactor.advance(1000)
        ingest.metrics.clear()
        statsd.receive(b"gorets:1|c\ngorets:2|c\nglork:320|ms\ngaugor:333|g")
        reactor.advance(10)
        values = ingest.by_name()
        assert values["stats.gorets"] == 0.3
        assert values["stats_counts.gorets"] == 3
        assert values["stats.timers.glork.upper_90"] == 320
        assert values["stats.gauges.gaugor"] == 333
        assert {m["timestamp"] for m in ingest.metrics} == {1010.0}
        statsd.stopService()

    def test_stop_flushes_once_more(self, reactor: MemoryReactorClock) -> None:
        """Samples received after the last tick are flushed when the input stops."""
        statsd, ingest, context = make_input(reactor)
        statsd.startService()
        statsd.receive(b"late:5|c")
        statsd.stopService()
        assert ingest.by_name()["stats_counts.late"] == 5
        assert context.telemetry.value("obsd.input.statsd.flushes") == 1
        reactor.advance(100)
        assert context.telemetry.value("obsd.input.statsd.flushes") == 1

    def test_tags_become_a_dict(self, reactor: MemoryReactorClock) -> None:
        """With graphite_tags, DogStatsD tags travel on the event as a dict."""
        statsd, ingest, _ = make_input(reactor, graphite_tags=True)
        statsd.receive(b"req:1|c|#env:prod,canary")
        statsd.flush()
        tagged = [m for m in ingest.metrics if m["event"] == "stats_counts.req"]
        assert tagged[0]["tags"] == {"env": "prod", "canary": "true"}

    def test_events_carry_metric_type_stat_and_tags(self, reactor: MemoryReactorClock) -> None:
        """Flushed events hold the base name, type, stat and tags even when Graphite tags are off."""
        statsd, ingest, _ = make_input(reactor)
        statsd.receive(b"req:1|c|#env:prod\nplain:1|c")
        statsd.flush()
        by_name = {m["event"]: m for m in ingest.metrics}
        req = by_name["stats_counts.req"]
        assert (req["metric"], req["metric_type"], req["stat"]) == ("req", "counter", "count")
        assert req["tags"] == {"env": "prod"}
        assert req["_graphite_tags"] is False
        assert by_name["stats_counts.plain"]["tags"] == {}
        assert "_graphite_tags" not in by_name["stats_counts.plain"]

    def test_h_and_d_are_timers(self, reactor: MemoryReactorClock) -> None:
        """DogStatsD histograms and distributions aggregate as timers (a deliberate difference)."""
        statsd, ingest, _ = make_input(reactor)
        statsd.receive(b"backlog:3|h\nsize:7|d")
        statsd.flush()
        values = ingest.by_name()
        assert values["stats.timers.backlog.upper"] == 3
        assert values["stats.timers.size.count"] == 1

    def test_a_failing_chain_does_not_stop_the_flush(self, reactor: MemoryReactorClock) -> None:
        """A point the chain refuses is counted; the others still go out."""
        statsd, ingest, context = make_input(reactor)
        calls: list[str] = []

        def metric(fields: dict[str, Any]) -> None:
            calls.append(fields["event"])
            if len(calls) == 1:
                raise RuntimeError("boom")

        ingest.metric = metric  # type: ignore[method-assign]
        statsd.receive(b"a:1|c")
        assert statsd.flush() == len(calls)
        assert context.telemetry.value("obsd.input.statsd.flush_errors") == 1

    def test_large_flush_is_spread_over_reactor_turns(self, reactor: MemoryReactorClock) -> None:
        """A large flush goes to the chain a chunk per reactor turn; stop finishes it at once."""
        statsd, ingest, _ = make_input(reactor)
        statsd.startService()
        statsd.receive(b"\n".join(b"c%d:1|c" % i for i in range(3000)))
        statsd.flush(spread=True)
        assert ingest.metrics == []
        sizes = []
        calls: list[Any] = reactor.calls
        while (turn := [c for c in calls if c.getTime() == 0.0]) != []:
            calls.remove(turn[0])  # one reactor turn at a time
            turn[0].func()
            sizes.append(len(ingest.metrics))
        assert sizes == [EMIT_CHUNK, 2 * EMIT_CHUNK, 3 * EMIT_CHUNK, 2 * 3000 + 8]
        statsd.receive(b"\n".join(b"c%d:1|c" % i for i in range(3000)))
        statsd.flush(spread=True)
        statsd.stopService()
        assert len(ingest.metrics) == 2 * (2 * 3000 + 8) + 2 * 3000 + 8
        assert not reactor.getDelayedCalls()


class TestBadInput:
    def test_bad_lines_are_counted_and_logged_throttled(self, reactor: MemoryReactorClock) -> None:
        """Many bad lines cost one log line with an example; good lines beside them count."""
        log = ListLog()
        statsd, ingest, context = make_input(reactor, log=log)
        for _ in range(50):
            statsd.receive(b"good:1|c\nbad line\nworse:1|@ 0.5")
        statsd.flush()
        values = ingest.by_name()
        assert values["stats_counts.good"] == 50
        assert values["stats_counts.statsd.bad_lines_seen"] == 100
        assert context.telemetry.value("obsd.input.statsd.bad_lines_seen") == 100
        warnings = [line for line in log.lines if line[1] == "bad statsd lines skipped"]
        assert len(warnings) == 1
        assert warnings[0][2]["example"] == "bad line"

    def test_overlong_tcp_line_is_a_bad_line(self, reactor: MemoryReactorClock) -> None:
        """A stream that never sends a newline cannot grow memory without bound."""
        statsd, _, _ = make_input(reactor)
        proto = StatsdLineFactory(statsd).buildProtocol(None)
        proto.makeConnection(StringTransport())
        proto.dataReceived(b"x" * 70_000)
        assert statsd.aggregator.bad_lines_seen == 1
        assert proto._buffer == b""

    def test_overlong_tcp_line_tail_is_discarded(self, reactor: MemoryReactorClock) -> None:
        """After an over-long line is cut, the rest of it up to its newline is dropped too."""
        statsd, ingest, _ = make_input(reactor)
        proto = StatsdLineFactory(statsd).buildProtocol(None)
        proto.makeConnection(StringTransport())
        proto.dataReceived(b"x" * 70_000)
        proto.dataReceived(b"y" * 70_000)
        proto.dataReceived(b"tail:1|c\nok:1|c\n")
        statsd.flush()
        values = ingest.by_name()
        assert values["stats_counts.statsd.bad_lines_seen"] == 1
        assert values["stats_counts.ok"] == 1
        assert not [name for name in values if "tail" in name or "yy" in name]

    def test_ten_megabyte_line_is_one_bad_line(self, reactor: MemoryReactorClock) -> None:
        """A 10 MB line sent in 64 KiB reads is one bad line and never becomes a series."""
        statsd, ingest, _ = make_input(reactor)
        proto = StatsdLineFactory(statsd).buildProtocol(None)
        proto.makeConnection(StringTransport())
        for _ in range(160):
            proto.dataReceived(b"z" * 65536)
        proto.dataReceived(b":1|c\nafter:2|c\n")
        proto.connectionLost(None)
        statsd.flush()
        values = ingest.by_name()
        assert values["stats_counts.statsd.bad_lines_seen"] == 1
        assert {name for name in values if not name.startswith(("stats.statsd", "statsd."))} >= {
            "stats_counts.after"
        }
        assert not [name for name in values if "zz" in name]

    def test_bounds_export_drops(self, reactor: MemoryReactorClock) -> None:
        """max_metrics and max_set_size drops reach the telemetry counters at flush."""
        statsd, _, context = make_input(reactor, max_metrics=2, max_set_size=1)
        statsd.receive(b"a:1|c\nb:1|s\nb:2|s\nc:1|c\nd:1|g")
        statsd.flush()
        assert context.telemetry.value("obsd.input.statsd.dropped_metrics") == 2
        assert context.telemetry.value("obsd.input.statsd.dropped_set_members") == 1


class TestTcp:
    def test_lines_split_across_reads(self, reactor: MemoryReactorClock) -> None:
        """A line cut between two reads is joined; a last unterminated line counts on close."""
        statsd, ingest, context = make_input(reactor)
        proto = StatsdLineFactory(statsd).buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        assert transport in context.flow_control._producers
        proto.dataReceived(b"a:1|c\nb:")
        proto.dataReceived(b"2|c\nc:3")
        proto.dataReceived(b"|c")
        proto.connectionLost(None)
        assert transport not in context.flow_control._producers
        statsd.flush()
        values = ingest.by_name()
        assert (values["stats_counts.a"], values["stats_counts.b"]) == (1, 2)
        assert values["stats_counts.c"] == 3

    def test_paused_while_congested(self, reactor: MemoryReactorClock) -> None:
        """A congested output pauses the TCP transport (flow control)."""
        statsd, _, context = make_input(reactor)
        proto = StatsdLineFactory(statsd).buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        context.flow_control.report("q", True)
        assert transport.producerState == "paused"
        context.flow_control.report("q", False)
        assert transport.producerState == "producing"


class TestReceiveBuffer:
    @pytest.mark.parametrize(
        ("cap", "force", "granted", "capped"),
        [
            (16 * 1024 * 1024, False, 8 * 1024 * 1024, False),
            (212992, False, 212992, True),
            (212992, True, 8 * 1024 * 1024, False),
        ],
    )
    def test_granted_against_asked(self, cap: int, force: bool, granted: int, capped: bool) -> None:
        """The grant is read back (Linux doubles it) and compared with the size asked."""
        sock = FakeSocket(cap, force_allowed=force)
        assert set_receive_buffer(sock, 8 * 1024 * 1024, "linux") == (granted, capped)

    def test_capped_grant_logs_the_sysctl(self, reactor: MemoryReactorClock) -> None:
        """When the kernel caps the buffer, the warning names net.core.rmem_max."""
        statsd, _, _ = make_input(reactor)
        log = ListLog()
        statsd._log = log
        statsd.tune_socket(FakeSocket(212992))
        ((level, _, fields),) = log.lines
        assert level == "warning"
        assert fields["hint"] == "sysctl -w net.core.rmem_max=8388608"
        assert fields["asked_bytes"] == 8388608

    def test_listening_sets_the_buffer(self, reactor: MemoryReactorClock) -> None:
        """The datagram protocol tunes the socket it is given when it starts."""
        statsd, _, _ = make_input(reactor)
        sock = FakeSocket(1 << 30)

        class Transport:
            def getHandle(self) -> FakeSocket:
                return sock

        proto = StatsdDatagramProtocol(statsd)
        proto.transport = Transport()  # type: ignore[assignment]
        proto.startProtocol()
        assert sock.size == 2 * 8 * 1024 * 1024


class TestRepeater:
    def test_raw_data_is_repeated(self, reactor: MemoryReactorClock) -> None:
        """Datagrams go on, unchanged, to every repeat_to target over UDP."""
        statsd, _, context = make_input(reactor, repeat_to=["127.0.0.1:9125", "[::1]:9126"])
        statsd.startService()
        repeater = statsd.repeater
        assert repeater is not None
        written: list[tuple[bytes, Any]] = []

        class Transport:
            def write(self, data: bytes, addr: Any) -> None:
                written.append((data, addr))

        repeater.transport = Transport()  # type: ignore[assignment]
        statsd.receive(b"a:1|c\nb:2|g")
        assert written == [
            (b"a:1|c\nb:2|g", ("127.0.0.1", 9125)),
            (b"a:1|c\nb:2|g", ("::1", 9126)),
        ]
        statsd.flush()
        assert context.telemetry.value("obsd.input.statsd.repeated") == 2
        statsd.stopService()

    def test_send_errors_are_counted(self, reactor: MemoryReactorClock) -> None:
        """A datagram the kernel refuses is counted, never raised into the reactor."""
        statsd, _, context = make_input(reactor, repeat_to=["127.0.0.1:9125"])
        statsd.startService()
        assert statsd.repeater is not None

        class Transport:
            def write(self, data: bytes, addr: Any) -> None:
                raise BlockingIOError(11, "EAGAIN")

        statsd.repeater.transport = Transport()  # type: ignore[assignment]
        statsd.receive(b"a:1|c")
        assert context.telemetry.value("obsd.input.statsd.repeat_errors") == 1
        statsd.stopService()

    def test_large_tcp_runs_are_split_at_line_ends(self) -> None:
        """Repeated TCP data longer than a datagram is cut only between lines."""
        data = b"".join(b"metric.%05d:1|c\n" % i for i in range(2000))
        chunks = _split_lines(data)
        assert b"".join(chunks) == data
        assert all(c.endswith(b"\n") and len(c) <= 8192 for c in chunks)


class TestTags:
    def test_tags_dict(self) -> None:
        """A bare DogStatsD tag becomes ``true``, as carbon wants every tag to have a value."""
        assert tags_dict(("k:v", "flag", "a:b:c")) == {"k": "v", "flag": "true", "a": "b:c"}
