"""obsd's own numbers: flushed as obsd.* metric events, and served at /metrics and /status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock

from obsd.config.loader import parse_config
from obsd.daemon.topology import build_service
from obsd.ops.selfmetrics import SelfMetricsService, as_tree, prometheus_name
from obsd.ops.telemetry import Telemetry
from tests.helpers import success_result_of


class Metrics:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def metric(self, fields: dict[str, Any]) -> None:
        self.events.append(fields)


class TestFlush:
    def test_every_interval_and_once_on_stop(self) -> None:
        """Counters and gauges become metric events each interval and once more on stop."""
        clock, tel, sink = Clock(), Telemetry(), Metrics()
        tel.counter("obsd.input.syslog.received").inc(3)
        tel.gauge("obsd.output.file.queued", lambda: 7)
        service = SelfMetricsService(tel, sink, clock, 10.0)
        service.startService()
        clock.advance(10)
        assert [(e["event"], e["value"], e["timestamp"]) for e in sink.events] == [
            ("obsd.input.syslog.received", 3.0, 10.0),
            ("obsd.output.file.queued", 7.0, 10.0),
        ]
        assert [(e["metric"], e["metric_type"], e["stat"], e["tags"]) for e in sink.events] == [
            ("obsd.input.syslog.received", "counter", "value", {}),
            ("obsd.output.file.queued", "gauge", "value", {}),
        ]
        tel.counter("obsd.input.syslog.received").inc()
        service.stopService()
        assert sink.events[-2]["value"] == 4.0
        assert clock.getDelayedCalls() == []


class TestShapes:
    def test_prometheus_names(self) -> None:
        """Dots and dashes become underscores."""
        assert prometheus_name("obsd.output.es-audit.dropped.full") == "obsd_output_es_audit_dropped_full"

    def test_tree_keeps_a_value_and_its_children(self) -> None:
        """A name that is also a prefix of others keeps its value under _value."""
        assert as_tree({"a.b": 1, "a.b.c": 2, "a.d": 3}) == {"a": {"b": {"_value": 1, "c": 2}, "d": 3}}


class TestEndpoints:
    def test_metrics_and_status(self, tmp_path: Path) -> None:
        """/metrics is Prometheus text and /status a tree, with exact counter values."""
        reactor = MemoryReactorClock()
        config = parse_config({"daemon": {"data_dir": str(tmp_path)}, "outputs": {"file": {}}})
        service = build_service(config, reactor)
        service.telemetry.counter("obsd.input.syslog.received").inc(5)
        http = StubTreq(service.http_root)
        response = success_result_of(http.get("http://obsd/metrics"))
        text = success_result_of(response.text())
        assert "obsd_input_syslog_received_total 5.0" in text
        assert "obsd_output_file_queued 0.0" in text
        response = success_result_of(http.get("http://obsd/status"))
        doc = json.loads(success_result_of(response.text()))
        assert doc["metrics"]["obsd"]["input"]["syslog"]["received"] == 5
        assert doc["outputs"]["file"]["state"] == "ok"
        service.startService()
        success_result_of(service.stopService())
