"""Fleet-wide StatsD: partials from many agents merge into exactly one Etsy-style flush."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from obsd import events
from obsd.aggregation.merge import PartialMerger, fold_into
from obsd.aggregation.partials import PartialAggregator
from obsd.aggregation.partials_wire import PartialError, parse_partial, partial_event
from obsd.aggregation.statsd import StatsdAggregator, StatsdSettings
from obsd.codecs.relaywire import decode_event, encode_event

INTERVAL = 10.0
K = 170_000_000  # an interval index: [1.7e9, 1.7e9 + 10)
END = (K + 1) * INTERVAL


def user(points: list[Any]) -> dict[tuple[str, tuple[str, ...]], float]:
    """Points that are not statsd's own, by (name, tags)."""
    return {(p.name, p.tags): p.value for p in points if ".statsd." not in p.name}


def ship(agent: PartialAggregator, interval: int = K) -> list[dict[str, Any]]:
    """An agent's partials as they arrive at central: through the relay wire, with its host."""
    out = []
    for key, part in agent.take().items():
        fields = partial_event(key, part, interval, INTERVAL)
        fields[events.HOST] = agent.host
        fields[events.KIND] = events.STATSD_PARTIAL
        out.append(decode_event(encode_event(fields)))
    return out


def central(config: StatsdSettings, partials: list[dict[str, Any]]) -> list[Any]:
    """Merge partials of interval K and flush them as central would."""
    merger = PartialMerger(config, grace=2.0, now=K * INTERVAL + 5)
    for event in partials:
        assert merger.add(event) == "merged"
    assert merger.due(END + 2.0) == [K]
    aggregator = StatsdAggregator(config, lambda: END)
    fold_into(aggregator, merger.close(K))
    return aggregator.flush(now=END)


# -- the property: any split of the traffic over agents merges to one flush --------

_names = st.sampled_from(["a", "b.c", "web.req"])
_rates = st.sampled_from(["", "|@0.5", "|@0.25"])
_tags = st.sampled_from(["", "|#env:prod", "|#env:prod,zone:x", "|#zone:y"])


@st.composite
def _line(draw: Any) -> str:
    kind = draw(st.sampled_from(["c", "ms", "s", "gs", "gd"]))
    name = draw(_names)
    tags = draw(_tags)
    if kind == "c":
        return f"{name}:{draw(st.integers(-5, 50))}|c{draw(_rates)}{tags}"
    if kind == "ms":
        return f"t.{name}:{draw(st.integers(0, 900))}|ms{draw(_rates)}{tags}"
    if kind == "s":
        return f"s.{name}:{draw(st.integers(0, 9))}|s{tags}"
    if kind == "gs":  # gauges that are only set: the latest stamped set wins
        return f"gs.{name}:{draw(st.integers(0, 99))}|g{tags}"
    sign = draw(st.sampled_from("+-"))  # gauges that only move: every delta adds
    return f"gd.{name}:{sign}{draw(st.integers(0, 99))}|g{tags}"


@settings(max_examples=150, deadline=None)
@given(
    traffic=st.lists(st.tuples(st.integers(0, 3), _line()), min_size=1, max_size=60),
    tagged=st.booleans(),
    legacy=st.booleans(),
)
def test_split_over_agents_merges_to_the_single_flush(
    traffic: list[tuple[int, str]], tagged: bool, legacy: bool
) -> None:
    """However the samples are spread over four agents, central flushes what one statsd would."""
    config = StatsdSettings(
        flush_interval=INTERVAL,
        graphite_tags=tagged,
        legacy_namespace=legacy,
        percentiles=[90.0, 50.0, -10.0],
    )
    now = [K * INTERVAL]
    single = StatsdAggregator(config, lambda: END)
    agents = [
        PartialAggregator(config, lambda: now[0], host=f"host{i}", rng=random.Random(i))
        for i in range(4)
    ]
    for agent, line in traffic:
        now[0] += 0.01
        single.ingest(line.encode())
        agents[agent].ingest(line.encode())
    partials = [event for agent in agents for event in ship(agent)]
    assert user(central(config, partials)) == user(single.flush(now=END))


# -- agents ----------------------------------------------------------------------


class TestPartialAggregator:
    def test_rates_applied_and_types_kept_apart(self) -> None:
        """Counter sums apply sample rates; one name used as two types gives two partials."""
        agent = PartialAggregator(StatsdSettings(), lambda: 5.0, host="web1")
        agent.ingest(b"x:1|c|@0.5\nx:3|c\nx:7|ms|@0.25\nx:2|g")
        found = {key: part.payload() for key, part in agent.take().items()}
        assert found[("counter", "x", ())] == {"sum": 5.0}
        assert found[("timer", "x", ())]["count"] == 4.0
        assert found[("gauge", "x", ())] == {"set": 2.0, "set_at": 5.0, "delta": 0.0}
        assert agent.take() == {}

    def test_timer_reservoir_keeps_exact_aggregates(self) -> None:
        """Above max_timer_samples a uniform reservoir is kept; n, sum, min and max stay exact."""
        agent = PartialAggregator(StatsdSettings(max_timer_samples=10), lambda: 0.0)
        agent.ingest(b"\n".join(b"t:%d|ms" % v for v in range(1, 101)))
        part = agent.take()[("timer", "t", ())].payload()
        assert len(part["samples"]) == 10
        assert (part["n"], part["count"], part["sum"], part["min"], part["max"]) == (
            100,
            100.0,
            5050.0,
            1.0,
            100.0,
        )
        assert agent.dropped_timer_samples == 90

    def test_bad_lines_and_limits_are_counted(self) -> None:
        """Bad lines, long names and overflowing deltas count as the flushing aggregator's do."""
        agent = PartialAggregator(StatsdSettings(max_name_length=4), lambda: 0.0)
        bad = agent.ingest(b"nope\nlonger:1|c\ng:1e308|g\ng:+1e308|g\ng:+1e308|g")
        assert [reason for _, reason in bad] == [
            "no ':' between name and value",
            "metric name longer than 4 characters",
            "gauge delta would overflow to infinity",
            "gauge delta would overflow to infinity",
        ]
        assert agent.take_counts() == (4, 1, 5)


# -- central ---------------------------------------------------------------------


class TestMerger:
    def _partial(self, interval: int, value: float = 1.0, length: float = INTERVAL) -> Any:
        agent = PartialAggregator(StatsdSettings(), lambda: 0.0, host="h")
        agent.ingest(b"c:%d|c" % value)
        ((key, part),) = agent.take().items()
        return partial_event(key, part, interval, length)

    def test_intervals_close_after_the_grace(self) -> None:
        """An interval closes grace seconds after its end, in order, empty ones included."""
        merger = PartialMerger(StatsdSettings(flush_interval=INTERVAL), grace=3.0, now=K * INTERVAL + 5)
        assert merger.closed_through == K - 1
        merger.add(self._partial(K))
        assert merger.due(END + 2.9) == []
        assert merger.due(END + 3.0) == [K]
        assert merger.due(END + INTERVAL + 3.0) == [K, K + 1]

    @pytest.mark.parametrize(("late", "outcome"), [("merge", "late_merged"), ("drop", "late_dropped")])
    def test_late_partials_are_counted_never_put_in_their_closed_interval(
        self, late: Any, outcome: str
    ) -> None:
        """A partial for a flushed interval goes to the open one or is dropped; both are counted."""
        config = StatsdSettings(flush_interval=INTERVAL)
        merger = PartialMerger(config, grace=2.0, late=late, now=K * INTERVAL + 5)
        merger.add(self._partial(K, 1))
        merger.close(K)
        assert merger.add(self._partial(K, 5)) == outcome
        held = merger.close(K + 1)
        if late == "merge":
            assert held[("counter", "c", ())].part.payload() == {"sum": 5.0}
            assert merger.late_merged == 1
        else:
            assert held == {}
            assert merger.late_dropped == 1

    def test_forget_takes_back_an_origin(self) -> None:
        """What a revoked partition added to an open interval is taken back, the rest kept."""
        merger = PartialMerger(StatsdSettings(flush_interval=INTERVAL), grace=2.0, now=K * INTERVAL + 5)
        merger.add(self._partial(K, 1), origin=("topic", 0))
        merger.add(self._partial(K, 2), origin=("topic", 1))
        assert merger.forget(("topic", 0)) == 1
        assert merger.close(K)[("counter", "c", ())].part.payload() == {"sum": 2.0}

    def test_misaligned_agent_is_counted(self) -> None:
        """An agent interval that spans two central intervals goes to its start's, counted."""
        merger = PartialMerger(StatsdSettings(flush_interval=INTERVAL), grace=2.0, now=K * INTERVAL + 5)
        merger.add(self._partial(2 * K // 3, length=15.0))
        assert merger.misaligned == 1

    def test_sampled_timers_flush_exact_sums(self) -> None:
        """Timers merged above the cap keep exact count, sum, mean, upper and lower."""
        config = StatsdSettings(flush_interval=INTERVAL, max_timer_samples=8)
        partials = []
        for host in range(3):
            agent = PartialAggregator(config, lambda: 0.0, host=f"h{host}", rng=random.Random(host))
            agent.ingest(b"\n".join(b"t:%d|ms" % v for v in range(host * 50, host * 50 + 50)))
            partials.extend(ship(agent))
        points = {name: value for (name, _), value in user(central(config, partials)).items()}
        assert points["stats.timers.t.count"] == 150
        assert points["stats.timers.t.sum"] == sum(range(150))
        assert points["stats.timers.t.mean"] == sum(range(150)) / 150
        assert (points["stats.timers.t.upper"], points["stats.timers.t.lower"]) == (149, 0)

    def test_fleet_counter_overflow_is_refused(self) -> None:
        """Two hosts' sums that overflow together are refused at central and counted."""
        config = StatsdSettings(flush_interval=INTERVAL)
        partials = []
        for host in ("a", "b"):
            agent = PartialAggregator(config, lambda: 0.0, host=host)
            agent.ingest(b"c:1e308|c\nok:1|c")
            partials.extend(ship(agent))
        points = {name: value for (name, _), value in user(central(config, partials)).items()}
        assert "stats_counts.c" not in points
        assert points["stats_counts.ok"] == 2

    @pytest.mark.parametrize(
        "change",
        [
            {"partial": {"v": 2}},
            {"metric_type": "histogram"},
            {"interval_length": 0},
            {"partial": {"v": 1, "sum": float("inf")}},
            {"metric": ""},
        ],
    )
    def test_malformed_partials_are_refused(self, change: dict[str, Any]) -> None:
        """A partial of another version, type or shape raises PartialError, never merges."""
        event = self._partial(K)
        event.update(change)
        with pytest.raises(PartialError):
            parse_partial(event)
