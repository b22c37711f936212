"""OTLP metric points as metric events: increases, deltas, gauges, histograms, summaries."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.metrics.v1 import metrics_pb2

from obsd.codecs.otlp import Tally
from obsd.codecs.otlp_metrics import CumulativeState, MetricConverter, stat_suffix
from tests.codecs.otlp_requests import T0, counter, kv, metrics_request


def points(converter: MetricConverter, *metrics: metrics_pb2.Metric) -> list[dict[str, Any]]:
    tally = Tally()
    out = [fields for _, fields in converter.events(metrics_request(*metrics), tally)]
    assert tally.rejected == 0, tally.reason
    return out


def values(converter: MetricConverter, *metrics: metrics_pb2.Metric) -> dict[str, float]:
    return {p["event"]: p["value"] for p in points(converter, *metrics)}


@pytest.fixture(name="converter")
def _converter() -> MetricConverter:
    return MetricConverter(CumulativeState())


class TestSums:
    def test_cumulative_counter_increase(self, converter: MetricConverter) -> None:
        """A monotonic cumulative sum gives its increase per export, as a counter."""
        (first,) = points(converter, counter(5, route="/pay"))
        assert first == {
            "event": "shop.orders", "value": 5.0, "tags": {"route": "/pay"},
            "metric": "shop.orders", "metric_type": "counter", "stat": "count",
            "timestamp": (T0 + 10**10) / 1e9,
        }
        assert values(converter, counter(12, route="/pay")) == {"shop.orders": 7.0}
        assert values(converter, counter(12, route="/pay")) == {"shop.orders": 0.0}

    def test_reset_by_drop(self, converter: MetricConverter) -> None:
        """A value that drops is a restart: the new value counts."""
        values(converter, counter(10))
        assert values(converter, counter(3)) == {"shop.orders": 3.0}
        assert converter.state.resets == 1

    def test_reset_by_new_start_time(self, converter: MetricConverter) -> None:
        """A new start time is a new series: its whole value counts."""
        values(converter, counter(10))
        assert values(converter, counter(15, start=T0 + 5)) == {"shop.orders": 15.0}

    def test_series_kept_apart(self, converter: MetricConverter) -> None:
        """Series with other attributes keep their own last value."""
        values(converter, counter(10, route="a"))
        values(converter, counter(4, route="b"))
        got = points(converter, counter(11, route="a"), counter(6, route="b"))
        assert [(p["tags"]["route"], p["value"]) for p in got] == [("a", 1.0), ("b", 2.0)]

    def test_delta_added_as_is(self, converter: MetricConverter) -> None:
        """A delta sum's value is the counter's increase as it is."""
        assert values(converter, counter(4, temporality=1)) == {"shop.orders": 4.0}
        assert values(converter, counter(4, temporality=1)) == {"shop.orders": 4.0}

    def test_up_down_counter_is_a_gauge(self, converter: MetricConverter) -> None:
        """A non-monotonic cumulative sum keeps its value, as a gauge."""
        (point,) = points(converter, counter(-3, monotonic=False))
        assert (point["value"], point["metric_type"], point["stat"]) == (-3.0, "gauge", "value")

    def test_unspecified_temporality_refused(self, converter: MetricConverter) -> None:
        """A sum without temporality is refused and counted."""
        tally = Tally()
        assert list(converter.events(metrics_request(counter(1, temporality=0)), tally)) == []
        assert tally.rejected == 1 and "temporality" in tally.reason

    def test_state_bounded(self) -> None:
        """Past max_series the oldest series is forgotten and counted."""
        converter = MetricConverter(CumulativeState(max_series=2))
        for route in "abc":
            values(converter, counter(1, route=route))
        assert len(converter.state) == 2 and converter.state.evicted == 1


class TestOthers:
    def test_gauge(self, converter: MetricConverter) -> None:
        """A gauge keeps its value."""
        point = metrics_pb2.NumberDataPoint(time_unix_nano=T0, as_double=0.75)
        metric = metrics_pb2.Metric(name="load", gauge=metrics_pb2.Gauge(data_points=[point]))
        (got,) = points(converter, metric)
        assert (got["event"], got["value"], got["metric_type"]) == ("shop.load", 0.75, "gauge")

    def test_histogram(self, converter: MetricConverter) -> None:
        """A histogram gives count, sum, min, max and per-bucket counts, cumulative as increases."""

        def histogram(count: int, total: float, buckets: list[int]) -> metrics_pb2.Metric:
            point = metrics_pb2.HistogramDataPoint(
                start_time_unix_nano=T0, time_unix_nano=T0 + 1, count=count, sum=total,
                min=0.1, max=7.0, explicit_bounds=[0.5, 5.0], bucket_counts=buckets,
                attributes=[kv("route", "/pay")])
            return metrics_pb2.Metric(name="latency", histogram=metrics_pb2.Histogram(
                data_points=[point], aggregation_temporality=2))

        assert values(converter, histogram(3, 9.5, [1, 1, 1])) == {
            "shop.latency.count": 3.0, "shop.latency.sum": 9.5, "shop.latency.min": 0.1,
            "shop.latency.max": 7.0, "shop.latency.histogram.bin_0_5": 1.0,
            "shop.latency.histogram.bin_5": 1.0, "shop.latency.histogram.bin_inf": 1.0,
        }
        second = values(converter, histogram(5, 10.5, [3, 1, 1]))
        assert second["shop.latency.count"] == 2.0
        assert second["shop.latency.sum"] == 1.0
        assert second["shop.latency.histogram.bin_0_5"] == 2.0
        assert second["shop.latency.histogram.bin_inf"] == 0.0

    def test_exponential_histogram(self, converter: MetricConverter) -> None:
        """Exponential buckets give their upper bounds (scale 0: powers of two)."""
        point = metrics_pb2.ExponentialHistogramDataPoint(
            time_unix_nano=T0, count=4, sum=10.0, scale=0, zero_count=1,
            positive=metrics_pb2.ExponentialHistogramDataPoint.Buckets(offset=1,
                                                                        bucket_counts=[2, 0, 1]))
        metric = metrics_pb2.Metric(name="size", exponential_histogram=metrics_pb2
                                    .ExponentialHistogram(data_points=[point],
                                                          aggregation_temporality=1))
        assert values(converter, metric) == {
            "shop.size.count": 4.0, "shop.size.sum": 10.0, "shop.size.histogram.bin_0": 1.0,
            "shop.size.histogram.bin_4": 2.0, "shop.size.histogram.bin_16": 1.0,
        }

    def test_summary(self, converter: MetricConverter) -> None:
        """A summary gives count and sum increases and its quantiles."""
        point = metrics_pb2.SummaryDataPoint(
            start_time_unix_nano=T0, time_unix_nano=T0, count=10, sum=20.0,
            quantile_values=[metrics_pb2.SummaryDataPoint.ValueAtQuantile(quantile=0.99,
                                                                          value=3.5),
                             metrics_pb2.SummaryDataPoint.ValueAtQuantile(quantile=0.5,
                                                                          value=1.0)])
        metric = metrics_pb2.Metric(name="rt", summary=metrics_pb2.Summary(data_points=[point]))
        assert values(converter, metric) == {
            "shop.rt.count": 10.0, "shop.rt.sum": 20.0, "shop.rt.quantile_99": 3.5,
            "shop.rt.quantile_50": 1.0,
        }

    def test_no_recorded_value_skipped(self, converter: MetricConverter) -> None:
        """A point flagged as having no value is skipped."""
        point = metrics_pb2.NumberDataPoint(time_unix_nano=T0, as_double=1.0, flags=1)
        metric = metrics_pb2.Metric(name="x", gauge=metrics_pb2.Gauge(data_points=[point]))
        assert points(converter, metric) == []
        assert converter.skipped == 1

    @pytest.mark.parametrize(
        ("bound", "name"), [(100.0, "bin_100"), (0.25, "bin_0_25"), (float("inf"), "bin_inf")]
    )
    def test_bin_names(self, bound: float, name: str) -> None:
        """Bucket bounds are named as Etsy statsd names histogram bins."""
        assert stat_suffix(bound) == name


class TestProperties:
    @given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10**6)), max_size=20))
    def test_increases_never_negative(self, exports: list[tuple[int, int]]) -> None:
        """Whatever a cumulative series does, each reported increase is at least 0."""
        state = CumulativeState()
        for start, value in exports:
            assert state.increase(("s",), start, float(value)) >= 0

    @given(st.binary(max_size=300))
    def test_any_protobuf_converts_or_raises(self, data: bytes) -> None:
        """Any bytes: OtlpRequestError, or metric events with refused points tallied."""
        from obsd.codecs.otlp import OtlpRequestError, parse_request

        try:
            request = parse_request("metrics", data, "application/x-protobuf")
        except OtlpRequestError as exc:
            assert exc.status == 400
            return
        converter = MetricConverter(CumulativeState())
        tally = Tally()
        for kind, fields in converter.events(request, tally):
            assert kind == "metric"
            assert isinstance(fields["value"], float)
