"""Derived metrics: counters per source and level and per dotted event name, flushed on a clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock

from obsd.aggregation.derived import DerivedMetrics
from obsd.config.loader import parse_config
from obsd.config.model import DerivedMetricsConfig
from obsd.daemon.topology import build_service
from obsd.ops.tail import TapSet
from obsd.ops.telemetry import Telemetry
from obsd.pipeline.router import Router
from obsd.testing import CapturingOutput, make_output_context
from tests.helpers import success_result_of


class Metrics:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def metric(self, fields: dict[str, Any]) -> None:
        self.events.append(fields)

    def points(self) -> dict[str, float]:
        return {e["event"]: e["value"] for e in self.events}


def make(clock: Clock, **settings: Any) -> tuple[DerivedMetrics, Router, Metrics]:
    router = Router({}, [], {}, {}, Telemetry())
    sink = Metrics()
    derived = DerivedMetrics(
        DerivedMetricsConfig(**settings), TapSet(router), sink, clock, Telemetry()
    )
    derived.startService()
    return derived, router, sink


def log(event: str, level: str = "info", source: str = "syslog", kind: str = "log") -> dict[str, Any]:
    return {"kind": kind, "event": event, "level": level, "source": source}


class TestCounting:
    def test_counts_per_source_level_and_dotted_name(self, clock: Clock) -> None:
        """Each flush sends per-second rates and counts under Etsy statsd's names."""
        derived, router, sink = make(clock, flush_interval=10)
        for _ in range(3):
            router.route(log("user.login"))
        router.route(log("disk full on /var", level="warning"))
        router.route(log("user.login", source="app"))
        router.route(log("obsd.output.file.sent", kind="metric"))  # metrics never count
        clock.advance(10)
        points = sink.points()
        assert {k: v for k, v in points.items() if k.startswith("stats_counts.")} == {
            "stats_counts.events.syslog.info": 3,
            "stats_counts.events.syslog.warning": 1,
            "stats_counts.events.app.info": 1,
            "stats_counts.events.name.user.login": 4,
        }
        assert points["stats.events.name.user.login"] == 0.4
        assert not [k for k in points if "obsd_derived" in k]
        login = next(e for e in sink.events if e["event"] == "stats.events.name.user.login")
        assert (login["metric"], login["metric_type"], login["stat"], login["tags"]) == (
            "events.name.user.login",
            "counter",
            "rate",
            {},
        )
        assert {e["timestamp"] for e in sink.events} == {10.0}
        derived.stopService()
        assert clock.getDelayedCalls() == []

    def test_next_interval_starts_from_zero(self, clock: Clock) -> None:
        """Counts are per interval, as in StatsD."""
        _, router, sink = make(clock, flush_interval=5)
        router.route(log("a.b"))
        clock.advance(5)
        sink.events.clear()
        router.route(log("a.b"))
        router.route(log("a.b"))
        clock.advance(5)
        assert sink.points()["stats_counts.events.name.a.b"] == 2

    @pytest.mark.parametrize("text", ["no dots here", "trailing.", ".leading", "has space.x y"])
    def test_only_dotted_names_count_by_name(self, clock: Clock, text: str) -> None:
        """Free text messages never become series of their own."""
        _, router, sink = make(clock, flush_interval=1)
        router.route(log(text))
        clock.advance(1)
        assert [k for k in sink.points() if ".name." in k] == []

    def test_event_names_off(self, clock: Clock) -> None:
        """With event_names = false only source and level are counted."""
        _, router, sink = make(clock, flush_interval=1, event_names=False)
        router.route(log("user.login"))
        clock.advance(1)
        assert sorted(k for k in sink.points() if k.startswith("stats_counts.")) == [
            "stats_counts.events.syslog.info"
        ]

    def test_max_series_bounds_the_names(self, clock: Clock) -> None:
        """Past max_series new counters are dropped (and counted by the aggregator)."""
        derived, router, sink = make(clock, flush_interval=1, max_series=3)
        for i in range(10):
            router.route(log(f"user.n{i}"))
        clock.advance(1)
        assert len([k for k in sink.points() if k.startswith("stats_counts.")]) == 3
        assert derived.aggregator.dropped_metrics == 8


class TestWiring:
    def test_derived_points_reach_metric_outputs(self, tmp_path: Path) -> None:
        """Enabled in the config, the counts flow through the router to an output taking metrics."""
        reactor = MemoryReactorClock()
        config = parse_config({
            "daemon": {"data_dir": str(tmp_path), "metrics_interval": 0},
            "derived_metrics": {"enabled": True, "flush_interval": 10},
        })
        service = build_service(config, reactor, lock=False)
        capture = CapturingOutput("capture", context=make_output_context(reactor, tmp_path))
        service.router.configure({"capture": capture}, [], {}, {"capture": frozenset({"log", "metric"})})
        service.startService()
        service.router.route(log("user.login"))
        reactor.advance(10)
        reactor.advance(1)  # the capture output's batch timeout
        names = {e["event"]: e for e in capture.delivered if e["kind"] == "metric"}
        assert names["stats_counts.events.syslog.info"]["value"] == 1
        assert names["stats_counts.events.syslog.info"]["source"] == "obsd.derived"
        success_result_of(service.stopService())
