"""Tests for obsd.aggregation.statsd: Etsy statsd 0.9 aggregation driven by a controlled clock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from obsd.aggregation.statsd import (
    HistogramConfig,
    StatsdAggregator,
    StatsdSettings,
    js_number,
    percentile_suffix,
)
from obsd.codecs.graphite import MetricPoint
from obsd.codecs.statsd import Sample

START = 1_700_000_000.0


class FakeClock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture(name="clock")
def _clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(name="make")
def _make(clock: FakeClock) -> Callable[..., StatsdAggregator]:
    def make(**options: Any) -> StatsdAggregator:
        return StatsdAggregator(
            StatsdSettings(**options), clock, perf_counter=lambda: 0.0
        )

    return make


def values(points: list[MetricPoint]) -> dict[str, float]:
    return {point.name: point.value for point in points}


def user(points: list[MetricPoint]) -> dict[str, float]:
    """The points that are not statsd's own metrics."""
    return {
        name: value for name, value in values(points).items() if "statsd" not in name
    }


class TestSettings:
    def test_etsy_defaults(self) -> None:
        """Defaults are Etsy statsd's: 10 s, 90th percentile, legacy namespace, nothing deleted."""
        settings = StatsdSettings()
        assert (
            settings.flush_interval,
            settings.percentiles,
            settings.legacy_namespace,
        ) == (10.0, [90.0], True)
        assert not any(
            (
                settings.deletes_counters,
                settings.deletes_timers,
                settings.deletes_gauges,
                settings.deletes_sets,
            )
        )

    def test_delete_idle_stats_is_the_default_for_each(self) -> None:
        """delete_idle_stats switches on the four delete_* options unless one is set explicitly."""
        settings = StatsdSettings(delete_idle_stats=True, delete_gauges=False)
        assert (
            settings.deletes_counters,
            settings.deletes_timers,
            settings.deletes_sets,
        ) == (True, True, True)
        assert settings.deletes_gauges is False

    def test_frozen(self) -> None:
        """Settings cannot change under a running aggregator."""
        with pytest.raises(AttributeError):
            StatsdSettings().flush_interval = 1  # type: ignore[misc]


class TestNames:
    @pytest.mark.parametrize(
        ("pct", "suffix"),
        [(90, "90"), (90.0, "90"), (99.9, "99_9"), (-10, "top10"), (-99.5, "top99_5")],
    )
    def test_percentile_suffix(self, pct: float, suffix: str) -> None:
        """Percentile name parts are written as Etsy writes them."""
        assert percentile_suffix(pct) == suffix

    @pytest.mark.parametrize(
        ("value", "text"), [(10.0, "10"), (0.5, "0.5"), ("inf", "inf"), (1e21, "1e+21")]
    )
    def test_js_number(self, value: float | str, text: str) -> None:
        """Numbers in names follow JavaScript's String()."""
        assert js_number(value) == text


class TestFlush:
    def test_legacy_names_and_values(
        self, make: Callable[..., StatsdAggregator], clock: FakeClock
    ) -> None:
        """Each type is flushed under Etsy's legacy names with the flush-time timestamp."""
        aggregator = make()
        aggregator.ingest(b"c:3|c\nc:1|c|@0.5\nt:10|ms\ng:5|g\ns:a|s\ns:b|s\ns:a|s")
        clock.now = START + 10.7
        points = aggregator.flush()
        got = user(points)
        assert got["stats.c"] == 0.5
        assert got["stats_counts.c"] == 5
        assert got["stats.timers.t.mean"] == 10
        assert got["stats.timers.t.count_90"] == 1
        assert got["stats.gauges.g"] == 5
        assert got["stats.sets.s.count"] == 2
        assert {point.timestamp for point in points} == {int(START + 10)}

    def test_non_legacy_names(self, make: Callable[..., StatsdAggregator]) -> None:
        """Without the legacy namespace counters get .rate/.count under stats.counters."""
        aggregator = make(legacy_namespace=False)
        aggregator.ingest(b"c:10|c")
        got = values(aggregator.flush())
        assert got["stats.counters.c.rate"] == 1
        assert got["stats.counters.c.count"] == 10
        assert got["stats.statsd.numStats"] == 4

    def test_internal_metrics(
        self, make: Callable[..., StatsdAggregator], clock: FakeClock
    ) -> None:
        """packets, lines and bad lines are counted; timestamp_lag appears from the second flush."""
        aggregator = make()
        aggregator.ingest(b"a:1|c\nbad\n\n")
        aggregator.count_packet(3)
        aggregator.count_bad_line()
        first = values(aggregator.flush())
        assert first["stats_counts.statsd.packets_received"] == 2
        assert first["stats_counts.statsd.metrics_received"] == 5
        assert first["stats_counts.statsd.bad_lines_seen"] == 2
        assert first["statsd.numStats"] == 4
        assert "stats.statsd.processing_time" in first
        assert "stats.gauges.statsd.timestamp_lag" not in first
        clock.now += 12
        second = values(aggregator.flush())
        assert second["stats.gauges.statsd.timestamp_lag"] == 2
        assert second["stats_counts.statsd.packets_received"] == 0

    def test_timer_statistics(self, make: Callable[..., StatsdAggregator]) -> None:
        """Timer stats follow Etsy's definitions, including sample-rate counts and percentiles."""
        aggregator = make(percentiles=(50, -20))
        aggregator.add(
            Sample("t", float(v), "ms", 0.5, False, ()) for v in (4, 1, 3, 2)
        )
        got = user(aggregator.flush())
        assert got == {
            "stats.timers.t.count_50": 2,
            "stats.timers.t.mean_50": 1.5,
            "stats.timers.t.upper_50": 2,
            "stats.timers.t.sum_50": 3,
            "stats.timers.t.sum_squares_50": 5,
            "stats.timers.t.count_top20": 1,
            "stats.timers.t.mean_top20": 4,
            "stats.timers.t.lower_top20": 4,
            "stats.timers.t.sum_top20": 4,
            "stats.timers.t.sum_squares_top20": 16,
            "stats.timers.t.std": pytest.approx(1.118033988749895),
            "stats.timers.t.upper": 4,
            "stats.timers.t.lower": 1,
            "stats.timers.t.count": 8,
            "stats.timers.t.count_ps": 0.8,
            "stats.timers.t.sum": 10,
            "stats.timers.t.sum_squares": 30,
            "stats.timers.t.mean": 2.5,
            "stats.timers.t.median": 2.5,
        }

    def test_histogram(self, make: Callable[..., StatsdAggregator]) -> None:
        """Histogram bins count values below each bound; the first matching rule wins."""
        aggregator = make(
            histogram=[
                HistogramConfig(metric="lat", bins=[1, 2.5, "inf"]),
                HistogramConfig(metric="", bins=[100]),
            ]
        )
        aggregator.ingest(b"lat:0.5|ms\nlat:2|ms\nlat:9|ms\nother:1|ms")
        got = user(aggregator.flush())
        assert got["stats.timers.lat.histogram.bin_1"] == 1
        assert got["stats.timers.lat.histogram.bin_2_5"] == 1
        assert got["stats.timers.lat.histogram.bin_inf"] == 1
        assert got["stats.timers.other.histogram.bin_100"] == 1

    def test_calculated_timer_metrics(
        self, make: Callable[..., StatsdAggregator]
    ) -> None:
        """Only the listed timer stats are sent; fractional percentiles are matched too."""
        aggregator = make(
            percentiles=(90, 99.9), calculated_timer_metrics=("mean_percent", "count")
        )
        aggregator.ingest(b"t:1|ms\nt:2|ms")
        got = user(aggregator.flush())
        assert sorted(got) == [
            "stats.timers.t.count",
            "stats.timers.t.mean_90",
            "stats.timers.t.mean_99_9",
        ]

    def test_prefixes_and_suffix(self, make: Callable[..., StatsdAggregator]) -> None:
        """prefix_* options and global_suffix shape every name outside the legacy namespace."""
        aggregator = make(
            legacy_namespace=False,
            global_prefix="app",
            prefix_gauge="gg",
            prefix_stats="me",
            global_suffix="h1",
        )
        aggregator.ingest(b"g:1|g")
        got = values(aggregator.flush())
        assert got["app.gg.g.h1"] == 1
        assert got["app.me.numStats.h1"] == 4
        assert "app.counters.me.packets_received.rate.h1" in got

    def test_names_are_sanitised_and_merged(
        self, make: Callable[..., StatsdAggregator]
    ) -> None:
        """Names are cleaned as Etsy does, so spellings that clean alike are one series."""
        aggregator = make()
        aggregator.ingest(b"a b/c!:1|c\na_b-c:2|c")
        assert user(aggregator.flush())["stats_counts.a_b-c"] == 3


class TestFlushStamps:
    def test_a_late_flush_and_a_punctual_one_never_share_a_second(
        self, make: Callable[..., StatsdAggregator], clock: FakeClock
    ) -> None:
        """Graphite keeps one value per second: two flushes in one second lost a count.

        A flush due at .3 that runs 0.75 s late and the next one, on time, both
        fell in the same whole second; the second stamp now moves on by one.
        """
        aggregator = make(flush_interval=1.0)
        aggregator.ingest(b"c:15|c")
        clock.now = START + 0.05
        first = {p.name: p for p in aggregator.flush()}["stats_counts.c"]
        aggregator.ingest(b"c:10|c")
        clock.now = START + 0.3
        second = {p.name: p for p in aggregator.flush()}["stats_counts.c"]
        assert (first.value, second.value) == (15, 10)
        assert second.timestamp == first.timestamp + 1
        clock.now = START + 5.2
        assert {p.name: p for p in aggregator.flush()}["stats_counts.c"].timestamp == START + 5

    def test_sub_second_intervals_keep_the_clock(
        self, make: Callable[..., StatsdAggregator], clock: FakeClock
    ) -> None:
        """Below one second, stamps stay on the clock (moving them would drift ahead)."""
        aggregator = make(flush_interval=0.5)
        stamps = []
        for step in range(4):
            clock.now = START + 0.5 * step
            stamps.append({p.name: p for p in aggregator.flush()}["stats_counts.statsd.bad_lines_seen"].timestamp)
        assert stamps == [START, START, START + 1, START + 1]


class TestTags:
    def test_tags_dropped_by_default(
        self, make: Callable[..., StatsdAggregator]
    ) -> None:
        """Without graphite_tags, tagged and untagged samples of a name are one series."""
        aggregator = make()
        aggregator.ingest(b"c:1|c|#env:prod\nc:2|c")
        points = [p[:4] for p in aggregator.flush() if p.name == "stats_counts.c"]
        assert points == [MetricPoint("stats_counts.c", 3, int(START), ())]

    def test_tags_kept_sorted_and_clean(
        self, make: Callable[..., StatsdAggregator]
    ) -> None:
        """With graphite_tags, tags are cleaned, sorted and keep series apart."""
        aggregator = make(graphite_tags=True)
        aggregator.ingest(
            b"c:1|c|#b:2,a:1\nc:1|c|#a:1,b:2\nc:5|c\nd;env=x:1|c|#flag,bad!:v/1"
        )
        points = {
            (p.name, p.tags): p.value for p in aggregator.flush() if "counts" in p.name
        }
        assert points[("stats_counts.c", ("a:1", "b:2"))] == 2
        assert points[("stats_counts.c", ())] == 5
        assert points[("stats_counts.d", ("bad:v-1", "env:x", "flag"))] == 1


class TestPointFields:
    def test_each_point_says_its_metric_type_and_stat(
        self, make: Callable[..., StatsdAggregator]
    ) -> None:
        """Every flushed point names its base metric, its type and which statistic it is."""
        aggregator = make(legacy_namespace=False)
        aggregator.ingest(b"hits:2|c\nlat:5|ms\ntemp:20|g\nusers:a|s")
        found = {p.name: (p.metric, p.metric_type, p.stat) for p in aggregator.flush()}
        assert found["stats.counters.hits.rate"] == ("hits", "counter", "rate")
        assert found["stats.counters.hits.count"] == ("hits", "counter", "count")
        assert found["stats.timers.lat.mean_90"] == ("lat", "timer", "mean_90")
        assert found["stats.timers.lat.count_ps"] == ("lat", "timer", "count_ps")
        assert found["stats.gauges.temp"] == ("temp", "gauge", "value")
        assert found["stats.sets.users.count"] == ("users", "set", "count")
        assert found["stats.statsd.numStats"] == ("statsd.numStats", "gauge", "value")
        assert found["stats.counters.statsd.bad_lines_seen.count"] == (
            "statsd.bad_lines_seen",
            "counter",
            "count",
        )

    def test_untagged_mode_keeps_the_tags_every_sample_carried(
        self, make: Callable[..., StatsdAggregator]
    ) -> None:
        """Without graphite_tags one series per name, carrying the tags all its samples shared."""
        aggregator = make()
        aggregator.ingest(b"a:1|c|#env:prod,zone:x\na:1|c|#env:prod\nb:1|g|#env:prod")
        aggregator.ingest(b"b:2|g")  # the fast path must notice b's tags
        aggregator.ingest(b"c;dc=ams:1|c")
        tags = {p.name: p.tags for p in aggregator.flush()}
        assert tags["stats_counts.a"] == ("env:prod",)
        assert tags["stats.gauges.b"] == ()
        assert tags["stats_counts.c"] == ("dc:ams",)


class TestReset:
    def test_default_reset(self, make: Callable[..., StatsdAggregator]) -> None:
        """Idle counters and sets send zero, idle timers a zero count, gauges their last value."""
        aggregator = make()
        aggregator.ingest(b"c:1|c\nt:1|ms\ng:4|g\ns:x|s")
        aggregator.flush()
        assert user(aggregator.flush()) == {
            "stats.c": 0,
            "stats_counts.c": 0,
            "stats.timers.t.count": 0,
            "stats.timers.t.count_ps": 0,
            "stats.gauges.g": 4,
            "stats.sets.s.count": 0,
        }

    @pytest.mark.parametrize(
        ("option", "gone"),
        [
            ("delete_counters", {"stats.c", "stats_counts.c"}),
            ("delete_timers", {"stats.timers.t.count", "stats.timers.t.count_ps"}),
            ("delete_gauges", {"stats.gauges.g"}),
            ("delete_sets", {"stats.sets.s.count"}),
        ],
    )
    def test_delete_options(
        self, make: Callable[..., StatsdAggregator], option: str, gone: set[str]
    ) -> None:
        """Each delete_* option removes only its own idle type."""
        aggregator = make(**{option: True})
        aggregator.ingest(b"c:1|c\nt:1|ms\ng:4|g\ns:x|s")
        aggregator.flush()
        remaining = set(user(aggregator.flush()))
        everything = {
            "stats.c",
            "stats_counts.c",
            "stats.timers.t.count",
            "stats.timers.t.count_ps",
            "stats.gauges.g",
            "stats.sets.s.count",
        }
        assert remaining == everything - gone

    def test_internal_counters_survive_delete_counters(
        self, make: Callable[..., StatsdAggregator]
    ) -> None:
        """statsd's own counters are zeroed, never deleted."""
        aggregator = make(delete_idle_stats=True)
        aggregator.flush()
        assert values(aggregator.flush())["stats_counts.statsd.packets_received"] == 0

    def test_gauges_max_ttl(self, make: Callable[..., StatsdAggregator]) -> None:
        """With delete_gauges a gauge lives gauges_max_ttl flushes after its last update."""
        aggregator = make(delete_gauges=True, gauges_max_ttl=2)
        aggregator.ingest(b"g:1|g")
        seen = ["stats.gauges.g" in values(aggregator.flush()) for _ in range(3)]
        assert seen == [True, True, False]

    def test_gauge_delta_across_flushes(
        self, make: Callable[..., StatsdAggregator]
    ) -> None:
        """A gauge delta adjusts the value kept from earlier intervals."""
        aggregator = make()
        aggregator.ingest(b"g:10|g")
        aggregator.flush()
        aggregator.ingest(b"g:-3|g\ng:+0.5|g")
        assert user(aggregator.flush())["stats.gauges.g"] == 7.5


class TestBounds:
    def test_max_metrics(self, make: Callable[..., StatsdAggregator]) -> None:
        """New series beyond max_metrics are dropped and counted; existing ones still update."""
        aggregator = make(max_metrics=2)
        aggregator.ingest(b"a:1|c\nb:1|ms\nc:1|g\nd:1|s\na:1|c")
        got = user(aggregator.flush())
        assert got["stats_counts.a"] == 2
        assert "stats.gauges.c" not in got
        assert "stats.sets.d.count" not in got
        assert aggregator.dropped_metrics == 2

    def test_max_set_size(self, make: Callable[..., StatsdAggregator]) -> None:
        """Members beyond max_set_size are dropped and counted; repeats of known members are not."""
        aggregator = make(max_set_size=2)
        aggregator.ingest(b"s:a|s\ns:b|s\ns:c|s\ns:a|s")
        assert user(aggregator.flush())["stats.sets.s.count"] == 2
        assert aggregator.dropped_set_members == 1


class TestNonFinite:
    def test_gauge_delta_overflow_is_refused(
        self, make: Callable[..., StatsdAggregator]
    ) -> None:
        """A gauge delta that would make the gauge infinite is a bad line; the gauge keeps its value."""
        aggregator = make()
        bad = aggregator.ingest(b"g:1e308|g\ng:+1e308|g")
        assert [reason for _, reason in bad] == ["gauge delta would overflow to infinity"]
        assert aggregator.ingest(b"g:+1e308|g")  # the fast path hands it over, refused too
        assert aggregator.ingest(b"g:-1e308|g") == []
        points = values(aggregator.flush())
        assert points["stats.gauges.g"] == 0.0
        assert points["stats_counts.statsd.bad_lines_seen"] == 2

    def test_counter_overflow_is_refused(self, make: Callable[..., StatsdAggregator]) -> None:
        """Counter samples whose sum (or rate-scaled value) is infinite are refused and counted."""
        aggregator = make()
        assert aggregator.ingest(b"c:1e308|c") == []
        bad = aggregator.ingest(b"c:1e308|c")
        assert [reason for _, reason in bad] == ["counter would overflow to infinity"]
        assert aggregator.ingest(b"r:1e308|c|@0.001")
        points = values(aggregator.flush())
        assert points["stats_counts.c"] == 1e308
        assert "stats_counts.r" not in points
        assert points["stats_counts.statsd.bad_lines_seen"] == 2


class TestNameLimit:
    def test_names_over_max_name_length_are_bad_lines(
        self, make: Callable[..., StatsdAggregator]
    ) -> None:
        """max_name_length refuses longer names, counted as bad lines with the reason."""
        aggregator = make(max_name_length=8)
        bad = aggregator.ingest(b"short:1|c\n" + b"n" * 9 + b":1|c")
        assert bad == [(b"n" * 9 + b":1|c", "metric name longer than 8 characters")]
        assert user(aggregator.flush()) == {"stats.short": 0.1, "stats_counts.short": 1}


class TestTimerSampleCap:
    @pytest.mark.parametrize("packet", [b"t:1|ms\nt:2|ms\nt:3|ms\nt:9|ms\nt:9|ms",
                                        b"t:1|ms|@1\nt:2|ms|@1\nt:3|ms|@1\nt:9|ms|@1\nt:9|ms|@1"])
    def test_keeps_max_timer_samples_and_counts_every_one(
        self, make: Callable[..., StatsdAggregator], packet: bytes
    ) -> None:
        """Past max_timer_samples a timer stops keeping values; count stays exact, drops counted."""
        agg = make(max_timer_samples=3)
        agg.ingest(b"t:1|ms")  # the series exists: later lines may take the fast path
        agg.ingest(packet)
        stats = values(agg.flush())
        assert stats["stats.timers.t.count"] == 6
        assert stats["stats.timers.t.upper"] == 2  # kept: 1, 1, 2
        assert agg.dropped_timer_samples == 3
