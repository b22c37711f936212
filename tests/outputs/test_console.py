"""The console output: metric points compact by default, one short line each."""

from __future__ import annotations

from typing import Any

from obsd.outputs.console import render_metric


def metric(**extra: Any) -> dict[str, Any]:
    return {"kind": "metric", "event": "stats.counters.app.hits.rate", "value": 2.5,
            "timestamp": 1700000000.0, "tags": {}, "source": "statsd", "id": "x", **extra}


class TestCompactMetrics:
    def test_one_short_line(self) -> None:
        """Time, the word metric, the path and the value; nothing else."""
        assert render_metric(metric()) == (
            "2023-11-14T22:13:20.000000Z metric stats.counters.app.hits.rate 2.5\n")

    def test_tags_sorted_after_the_value(self) -> None:
        """Tags follow as key=value, sorted."""
        line = render_metric(metric(value=3.0, tags={"region": "eu", "host": "a"}))
        assert line.endswith(" 3 host=a region=eu\n")
