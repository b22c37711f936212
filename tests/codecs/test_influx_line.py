"""InfluxDB line protocol: escaping, the StatsD shape, timestamps."""

from __future__ import annotations

from typing import Any

import pytest

from obsd.codecs.influx_line import (
    NotFinite,
    encode_line,
    escape_key,
    escape_measurement,
    metric_line,
    timestamp_in,
)


def statsd(stat: str, value: float, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "metric", "event": f"stats.counters.app.req.{stat}", "value": value,
        "timestamp": 1700000000.0, "host": "web1", "metric": "app.req",
        "metric_type": "counter", "stat": stat, "tags": {}, **extra,
    }


class TestEscaping:
    @pytest.mark.parametrize(
        ("raw", "measurement", "key"),
        [
            ("cpu", "cpu", "cpu"),
            ("a b", "a\\ b", "a\\ b"),
            ("a,b", "a\\,b", "a\\,b"),
            ("a=b", "a=b", "a\\=b"),
            ("two\nlines", "two\\ lines", "two\\ lines"),
            ("ends\\", "ends", "ends"),
        ],
    )
    def test_measurement_and_keys(self, raw: str, measurement: str, key: str) -> None:
        """Line protocol's escapes; breaks become spaces; a trailing backslash is dropped."""
        assert escape_measurement(raw) == measurement
        assert escape_key(raw) == key

    def test_line(self) -> None:
        """Tags sorted by key, empty values left out, floats exact."""
        line = encode_line("m", [("z", "1"), ("a", "x y"), ("e", "")], {"value": 0.1}, 7)
        assert line == "m,a=x\\ y,z=1 value=0.1 7\n"

    def test_empty_measurement_refused(self) -> None:
        with pytest.raises(ValueError, match="empty measurement"):
            encode_line("", [], {"value": 1.0}, 1)


class TestMetricLine:
    def test_statsd_statistic_is_the_field(self) -> None:
        """The base name is the measurement, the statistic the field, the type a tag."""
        line = metric_line(statsd("count", 5), ["host"], "s", 0.0)
        assert line == "app.req,host=web1,metric_type=counter count=5.0 1700000000\n"

    def test_other_metrics_are_value(self) -> None:
        """A metric without a statistic (derived, Graphite, obsd's own) is its name = value."""
        event = {"event": "obsd.events", "value": 3, "timestamp": 1700000000.5, "tags": {}}
        assert metric_line(event, [], "ms", 0.0) == "obsd.events value=3.0 1700000000500\n"

    def test_metric_tags_win_over_fields(self) -> None:
        """A DogStatsD tag named like a tag field keeps the metric's value."""
        line = metric_line(statsd("rate", 0.5, tags={"host": "lb", "env": "prod"}), ["host"],
                           "s", 0.0)
        assert line == "app.req,env=prod,host=lb,metric_type=counter rate=0.5 1700000000\n"

    @pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
    def test_not_finite(self, value: float) -> None:
        with pytest.raises(NotFinite):
            metric_line(statsd("count", value), [], "s", 0.0)

    @pytest.mark.parametrize("value", ["12", None, True])
    def test_not_a_number(self, value: Any) -> None:
        with pytest.raises(ValueError, match="not a number"):
            metric_line({**statsd("count", 1), "value": value}, [], "s", 0.0)

    def test_no_timestamp_uses_now(self) -> None:
        event = {"event": "x", "value": 1.0}
        assert metric_line(event, [], "s", 42.9) == "x value=1.0 42\n"

    @pytest.mark.parametrize(
        ("precision", "expected"),
        [("s", 1700000000), ("ms", 1700000000250), ("us", 1700000000250000)],
    )
    def test_precision(self, precision: str, expected: int) -> None:
        assert timestamp_in(1700000000.25, precision) == expected
