"""The statsd input's fleet modes on a controlled clock: agents send partials, central merges."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock

from obsd.aggregation.ledger import ORIGIN
from obsd.config.loader import parse_config
from obsd.config.model import DaemonConfig, ObsdConfig
from obsd.daemon.topology import InputContext
from obsd.delivery.flowcontrol import FlowControl
from obsd.errors import ConfigError
from obsd.inputs.statsd import Config, StatsdInput
from obsd.inputs.statsd_fleet import host_prefix
from obsd.ops.telemetry import Telemetry
from obsd.ops.throttle import ThrottledLogger
from obsd.testing import ListLog

K = 170_000_000
START = K * 10.0


class Ingest:
    """Collects what the input hands the chain, by kind."""

    def __init__(self) -> None:
        self.metrics: list[dict[str, Any]] = []
        self.partials: list[dict[str, Any]] = []

    def metric(self, fields: dict[str, Any]) -> None:
        self.metrics.append(fields)

    def statsd_partial(self, fields: dict[str, Any]) -> None:
        self.partials.append(fields)


class Consumers:
    """Stands in for the router's ``consume``: records the handler per kind."""

    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}

    def __call__(self, kind: str, handler: Any) -> Any:
        self.handlers[kind] = handler
        return lambda: self.handlers.pop(kind)


def make(host: str, **settings: Any) -> tuple[StatsdInput, Ingest, MemoryReactorClock, Consumers]:
    reactor = MemoryReactorClock()
    reactor.advance(START + 1)
    ingest = Ingest()
    consumers = Consumers()
    context = InputContext(
        name="statsd",
        reactor=reactor,
        telemetry=Telemetry(),
        flow_control=FlowControl(),
        throttle=ThrottledLogger(ListLog(), reactor, 10.0),
        ingest=ingest,  # type: ignore[arg-type]
        http=None,  # type: ignore[arg-type]
        config=ObsdConfig(daemon=DaemonConfig(hostname=host)),
        consume=consumers,
    )
    statsd = StatsdInput("statsd", Config(**settings), context)
    statsd.startService()
    return statsd, ingest, reactor, consumers


class TestAgent:
    def test_partials_leave_on_interval_boundaries(self) -> None:
        """mode = partials: at each boundary one statsd_partial per series, stamped with the interval."""
        statsd, ingest, reactor, _ = make("web1.example.com", mode="partials")
        statsd.receive(b"req:1|c\nreq:2|c|@0.5\nlat:5|ms")
        reactor.advance(8.999)
        assert ingest.partials == []
        reactor.advance(0.001)
        found = {(p["metric_type"], p["metric"]): p for p in ingest.partials}
        assert found[("counter", "req")]["partial"] == {"v": 1, "sum": 5.0}
        assert {p["interval"] for p in ingest.partials} == {K}
        assert {p["timestamp"] for p in ingest.partials} == {START + 10}
        own = {m["event"]: m["value"] for m in ingest.metrics}
        assert own == {
            "stats.statsd.web1_example_com.bad_lines_seen": 0.0,
            "stats_counts.statsd.web1_example_com.bad_lines_seen": 0,
            "stats.statsd.web1_example_com.packets_received": 0.1,
            "stats_counts.statsd.web1_example_com.packets_received": 1,
            "stats.statsd.web1_example_com.metrics_received": 0.3,
            "stats_counts.statsd.web1_example_com.metrics_received": 3,
        }

    def test_stop_sends_the_unfinished_interval(self) -> None:
        """Stopping sends what the current interval holds so far, under that interval."""
        statsd, ingest, reactor, _ = make("web1", mode="partials")
        reactor.advance(10)
        statsd.receive(b"req:1|c")
        statsd.stopService()
        assert [(p["metric"], p["interval"]) for p in ingest.partials] == [("req", K + 1)]
        assert reactor.getDelayedCalls() == []

    def test_partials_need_an_output_that_carries_them(self) -> None:
        """mode = partials with no output taking statsd_partial would lose them: a config problem."""
        statsd = {"statsd": {"mode": "partials"}}
        with pytest.raises(ConfigError, match="no output takes statsd_partial"):
            parse_config({"inputs": statsd, "outputs": {"graphite": {}}})
        relay = {"relay": {"urls": ["http://127.0.0.1:1"], "token": "t"}}
        parse_config({"inputs": statsd, "outputs": relay})

    def test_cannot_send_and_merge(self) -> None:
        """One input either sends partials or merges them: both is a config problem."""
        with pytest.raises(ConfigError, match="merge_partials"):
            parse_config({"inputs": {"statsd": {"mode": "partials", "merge_partials": True}}})


class TestCentral:
    def _agent_partials(self, host: str, data: bytes) -> list[dict[str, Any]]:
        statsd, ingest, reactor, _ = make(host, mode="partials")
        statsd.receive(data)
        reactor.advance(9)
        for partial in ingest.partials:
            partial["host"] = host
        return ingest.partials

    def test_merges_agents_and_its_own_traffic(self) -> None:
        """Central flushes the fleet's sum grace seconds after the interval, stamped at its end."""
        statsd, ingest, reactor, consumers = make(
            "central", merge_partials=True, late_partials_grace=2.0
        )
        handler = consumers.handlers["statsd_partial"]
        for host, data in [("a", b"req:1|c\nlat:10|ms"), ("b", b"req:2|c\nlat:30|ms")]:
            for partial in self._agent_partials(host, data):
                handler(partial)
        statsd.receive(b"req:4|c\nlat:20|ms")
        reactor.advance(10)
        # interval K is still open for late partials (K - 1, empty, was flushed)
        assert {m["timestamp"] for m in ingest.metrics} == {START}
        reactor.advance(1)  # START + 12: interval K closes
        points = {m["event"]: m for m in ingest.metrics}
        assert points["stats_counts.req"]["value"] == 7
        assert points["stats_counts.req"]["timestamp"] == START + 10
        assert points["stats.timers.lat.mean"]["value"] == 20
        assert points["stats.timers.lat.count"]["value"] == 3
        assert points["stats_counts.statsd.central.metrics_received"]["value"] == 2
        assert "stats.statsd.numStats" not in points

    def test_late_partial_is_counted_and_merged_forward(self) -> None:
        """A partial for a flushed interval is counted late and lands in the open interval."""
        statsd, ingest, reactor, consumers = make("central", merge_partials=True)
        partials = self._agent_partials("a", b"req:3|c")
        reactor.advance(14)  # interval K flushed (empty)
        consumers.handlers["statsd_partial"](partials[0])
        reactor.advance(10)
        late = [m for m in ingest.metrics if m["event"] == "stats_counts.req"]
        assert [(m["value"], m["timestamp"]) for m in late] == [(3, START + 20)]
        tel = statsd.context.telemetry
        assert tel.value("obsd.input.statsd.partials_late_merged") == 1

    def test_refused_partial_is_counted(self) -> None:
        """A malformed partial is refused, counted and never merged."""
        statsd, _, _, consumers = make("central", merge_partials=True)
        consumers.handlers["statsd_partial"]({"metric": "x", "partial": {"v": 9}})
        assert statsd.context.telemetry.value("obsd.input.statsd.partials_refused") == 1

    def test_stop_flushes_open_intervals(self) -> None:
        """Stopping flushes every open interval before the outputs drain."""
        statsd, ingest, reactor, consumers = make("central", merge_partials=True)
        for partial in self._agent_partials("a", b"req:3|c"):
            consumers.handlers["statsd_partial"](partial)
        statsd.stopService()
        assert [m["value"] for m in ingest.metrics if m["event"] == "stats_counts.req"] == [3]
        assert consumers.handlers == {}
        assert reactor.getDelayedCalls() == []

    def test_the_ledger_hears_each_interval_flushed_then_on_disk(self) -> None:
        """The Kafka input commits a partial's offset only once its interval is on disk."""
        statsd, _ingest, reactor, consumers = make(
            "central", merge_partials=True, late_partials_grace=2.0
        )
        ledger = statsd.context.merge_ledger
        assert ledger.merging
        for partial in self._agent_partials("a", b"req:3|c"):
            consumers.handlers["statsd_partial"](partial)
        assert ledger.holding_through() == K
        reactor.advance(11)  # START + 12: interval K closes; the default wait_durable fires at once
        assert ledger.flushed_through == ledger.settled_through == K
        statsd.stopService()
        assert not ledger.merging

    def test_the_ledger_holds_a_partial_for_the_interval_it_went_into(self) -> None:
        """Not the newest open one: a late partial's offset is committed when its interval is."""
        statsd, _ingest, reactor, consumers = make(
            "central", merge_partials=True, late_partials_grace=2.0
        )
        ledger = statsd.context.merge_ledger
        late = self._agent_partials("a", b"req:3|c")  # interval K
        reactor.advance(12 + 10)  # K and K + 1 closed; K + 2 open
        consumers.handlers["statsd_partial"]({**late[0], "interval": K + 3})
        consumers.handlers["statsd_partial"](late[0])  # late: into the oldest open, K + 2
        assert ledger.holding_through() == K + 2
        consumers.handlers["statsd_partial"]({"metric": "x", "partial": {"v": 9}})
        assert ledger.holding_through() == float("-inf")  # refused: nothing held

    def test_stop_lets_partials_from_kafka_go(self) -> None:
        """They are not committed, so the partition's next reader merges them: not flushed here."""
        statsd, ingest, _reactor, consumers = make("central", merge_partials=True)
        ledger = statsd.context.merge_ledger
        kafka, http = self._agent_partials("a", b"req:3|c"), self._agent_partials("b", b"req:4|c")
        ledger.note_origin("kafka:obsd-statsd_partial/0")
        consumers.handlers["statsd_partial"]({**kafka[0], ORIGIN: "kafka:obsd-statsd_partial/0"})
        consumers.handlers["statsd_partial"](http[0])
        statsd.stopService()
        assert [m["value"] for m in ingest.metrics if m["event"] == "stats_counts.req"] == [4]
        assert ledger.settled_through < K  # the stop's flush settles nothing


def test_host_prefix() -> None:
    """A host becomes one Graphite node under prefix_stats."""
    assert host_prefix("statsd", "web1.example.com") == "statsd.web1_example_com"
