"""The OpenTelemetry Python SDK exporting to a real obsd over OTLP/HTTP, checked field by field.

One program logs through the SDK's logging handler, counts and times through a
meter (two exports, so the second shows the increase) and records an exception
on a span; the exporters are the SDK's own OTLP/HTTP ones (protobuf, metrics
gzipped).  A second test sends the exception through obsd's Sentry output to an
upstream obsd acting as Sentry (the forwarding tests' harness), where it must
arrive as an issue with its type and frames.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.fixtures.obsd import ObsdProcess
from tests.integration.test_sentry_forwarding import B_KEY, UPSTREAM_B, file_events

pytestmark = pytest.mark.integration

PROGRAM = '''
import json, logging, sys
from opentelemetry import metrics, trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

base = sys.argv[1]
resource = Resource.create({"service.name": "shop", "service.version": "1.2",
                            "host.name": "web1"})
logs = LoggerProvider(resource=resource)
logs.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(endpoint=base + "/v1/logs")))
set_logger_provider(logs)
log = logging.getLogger("shop.orders")
log.setLevel(logging.INFO)
log.addHandler(LoggingHandler(level=logging.INFO, logger_provider=logs))

reader = PeriodicExportingMetricReader(
    OTLPMetricExporter(endpoint=base + "/v1/metrics", compression=Compression.Gzip),
    export_interval_millis=3_600_000)
meters = MeterProvider(resource=resource, metric_readers=[reader])
meter = meters.get_meter("shop")
orders = meter.create_counter("orders")
latency = meter.create_histogram("latency", unit="ms", explicit_bucket_boundaries_advisory=[100.0])

traces = TracerProvider(resource=resource)
traces.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=base + "/v1/traces")))
tracer = traces.get_tracer("shop.web")

def charge(card):
    raise ValueError(f"card {card} declined")

log.warning("card declined", extra={"order": 17})
with tracer.start_as_current_span("POST /pay") as span:
    ids = {"trace_id": format(span.get_span_context().trace_id, "032x"),
           "span_id": format(span.get_span_context().span_id, "016x")}
    try:
        charge("visa")
    except ValueError as exc:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, "payment failed"))
        log.exception("payment failed")
orders.add(3, {"route": "/pay"})
latency.record(12.0, {"route": "/pay"})
latency.record(250.0, {"route": "/pay"})
meters.force_flush()
orders.add(4, {"route": "/pay"})
meters.force_flush()
meters.shutdown(); logs.shutdown(); traces.shutdown()
print(json.dumps(ids))
'''
#: where the program raises, and where it calls the function that raises (1-based lines)
RAISE_LINE = PROGRAM.splitlines().index('    raise ValueError(f"card {card} declined")') + 1
CALL_LINE = PROGRAM.splitlines().index('        charge("visa")') + 1

OTLP_FILE = """
[daemon]
data_dir = "{data_dir}"
[inputs.otlp]
listen = ["tcp:0:interface=127.0.0.1"]
[outputs.file]
batch_timeout = 0.05
"""


def run_program(tmp_path: Path, base: str) -> dict[str, str]:
    program = tmp_path / "shop.py"  # a file, so tracebacks name it
    program.write_text(PROGRAM)
    result = subprocess.run(
        [sys.executable, str(program), base], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    ids: dict[str, str] = json.loads(result.stdout.strip().splitlines()[-1])
    return ids


def by_kind(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("kind") == kind and e.get("source") == "otlp"]


class TestSdk:
    def test_logs_metrics_and_spans_arrive(
        self, obsd_process: Callable[..., ObsdProcess], tmp_path: Path
    ) -> None:
        """Logs, metrics and spans from the SDK's exporters arrive as obsd events."""
        a = obsd_process(OTLP_FILE)
        ids = run_program(tmp_path, f"http://127.0.0.1:{a.port('otlp')}")

        def arrived() -> bool:
            events = file_events(a)
            return len(by_kind(events, "log")) >= 2 and bool(by_kind(events, "span")) and len(
                [e for e in by_kind(events, "metric") if e["event"] == "shop.orders"]) >= 2

        a.wait_for(arrived, timeout=20, what="OTLP events in the file")
        assert a.stop() == 0
        events = file_events(a)

        warning, failure = sorted(by_kind(events, "log"), key=lambda e: e["timestamp"])
        assert warning["event"] == "card declined"
        assert warning["level"] == "warning"
        assert warning["severity_text"] == "WARN"
        assert warning["service"] == "shop"
        assert warning["host"] == "web1"
        assert warning["scope"] == "shop.orders"
        assert warning["attributes"]["order"] == 17
        assert "trace_id" not in warning  # logged outside the span
        assert failure["event"] == "payment failed"
        assert failure["level"] == "error"
        assert (failure["trace_id"], failure["span_id"]) == (ids["trace_id"], ids["span_id"])
        assert failure["exception_type"] == "ValueError"
        assert failure["exception_value"] == "card visa declined"
        assert "in charge" in failure["exception"]

        (span,) = by_kind(events, "span")
        assert span["event"] == "POST /pay"
        assert (span["trace_id"], span["span_id"]) == (ids["trace_id"], ids["span_id"])
        assert span["span_kind"] == "internal"
        assert span["status_code"] == "error"
        assert span["status_message"] == "payment failed"
        assert span["level"] == "error"
        assert span["duration_ms"] >= 0
        assert span["resource"]["service.version"] == "1.2"

        (error,) = by_kind(events, "error")
        assert error["exception_type"] == "ValueError"
        assert error["exception_value"] == "card visa declined"
        assert error["frames"][-1] == f"shop:charge:{RAISE_LINE}"
        assert error["trace_id"] == ids["trace_id"]
        assert error["release"] == "1.2"

        metrics = by_kind(events, "metric")
        orders = [m for m in metrics if m["event"] == "shop.orders"]
        # two flushes and the export at shutdown: each sends what is new since the last
        assert [m["value"] for m in orders] == [3.0, 4.0, 0.0]
        assert all(m["tags"] == {"route": "/pay"} for m in orders)
        assert {(m["metric"], m["metric_type"], m["stat"]) for m in orders} == {
            ("shop.orders", "counter", "count")
        }
        last = {m["event"]: m["value"] for m in metrics
                if m["event"].startswith("shop.latency.")}
        assert last["shop.latency.count"] == 0.0  # nothing new after the first export
        latency = [m for m in metrics if m["event"].startswith("shop.latency.")]
        firsts: dict[str, float] = {}
        for m in latency:
            firsts.setdefault(m["event"], m["value"])
        assert firsts["shop.latency.count"] == 2.0
        assert firsts["shop.latency.sum"] == 262.0
        assert firsts["shop.latency.min"] == 12.0
        assert firsts["shop.latency.max"] == 250.0
        assert firsts["shop.latency.histogram.bin_100"] == 1.0
        assert firsts["shop.latency.histogram.bin_inf"] == 1.0


OTLP_TO_SENTRY = """
[daemon]
data_dir = "{data_dir}"
[inputs.otlp]
listen = ["tcp:0:interface=127.0.0.1"]
[outputs.sentry]
dsn = "http://@B_KEY@@127.0.0.1:@B_PORT@/9"
[outputs.file]
batch_timeout = 0.05
"""


class TestSentryIssue:
    def test_span_exception_becomes_upstream_issue(
        self, obsd_process: Callable[..., ObsdProcess], tmp_path: Path
    ) -> None:
        """An exception recorded on a span reaches the upstream Sentry with its type and frames."""
        b = obsd_process(UPSTREAM_B.replace("@B_KEY@", B_KEY))
        a = obsd_process(
            OTLP_TO_SENTRY.replace("@B_KEY@", B_KEY).replace("@B_PORT@", str(b.port("http")))
        )
        ids = run_program(tmp_path, f"http://127.0.0.1:{a.port('otlp')}")

        def upstream_errors() -> list[dict[str, Any]]:
            return [e for e in file_events(b) if e.get("kind") == "error"]

        b.wait_for(lambda: bool(upstream_errors()), timeout=20, what="the issue upstream")
        assert a.stop() == 0
        assert b.stop() == 0
        (issue,) = upstream_errors()
        assert issue["exception_type"] == "ValueError"
        assert issue["exception_value"] == "card visa declined"
        assert issue["frames"] == [f"shop:<module>:{CALL_LINE}", f"shop:charge:{RAISE_LINE}"]
        assert issue["project_id"] == 9
        assert issue["release"] == "1.2"
        assert issue["event"] == "ValueError: card visa declined"
        (forwarded,) = [e for e in file_events(a) if e.get("kind") == "error"]
        assert forwarded["id"] == issue["id"]
        assert ids["trace_id"] == forwarded["trace_id"]


#: the OTLP JSON encoding as the spec's own example shows it (opentelemetry-proto
#: examples/logs.json): hex ids, lowerCamelCase, 64-bit integers as strings
SPEC_JSON_LOGS = {
    "resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name",
                                     "value": {"stringValue": "my.service"}}]},
        "scopeLogs": [{
            "scope": {"name": "my.library", "version": "1.0.0"},
            "logRecords": [{
                "timeUnixNano": "1544712660300000000",
                "observedTimeUnixNano": "1544712660300000000",
                "severityNumber": 10,
                "severityText": "Information",
                "traceId": "5B8EFFF798038103D269B633813FC60C",
                "spanId": "EEE19B7EC3C1B174",
                "body": {"stringValue": "Example log record"},
                "attributes": [{"key": "int.attribute", "value": {"intValue": "10"}}],
            }],
        }],
    }]
}


class TestJsonOverHttp:
    def test_spec_example_and_a_bad_body(
        self, obsd_process: Callable[..., ObsdProcess]
    ) -> None:
        """The spec's JSON example is taken; a broken body gets 400 and a google.rpc.Status."""
        from urllib.error import HTTPError
        from urllib.request import Request, urlopen

        a = obsd_process(OTLP_FILE)
        url = f"http://127.0.0.1:{a.port('otlp')}/v1/logs"
        headers = {"Content-Type": "application/json"}
        request = Request(url, data=json.dumps(SPEC_JSON_LOGS).encode(), headers=headers)
        with urlopen(request, timeout=10) as answer:
            assert answer.status == 200
            assert json.loads(answer.read()) == {}
        with pytest.raises(HTTPError) as refused:
            urlopen(Request(url, data=b'{"resourceLogs": [', headers=headers), timeout=10)
        assert refused.value.code == 400
        status = json.loads(refused.value.read())
        assert status["code"] == 3 and "invalid JSON" in status["message"]
        a.wait_for(lambda: bool(by_kind(file_events(a), "log")), timeout=20, what="the record")
        assert a.stop() == 0
        (record,) = by_kind(file_events(a), "log")
        assert record["event"] == "Example log record"
        assert record["level"] == "info"
        assert record["service"] == "my.service"
        assert record["trace_id"] == "5b8efff798038103d269b633813fc60c"
        assert record["span_id"] == "eee19b7ec3c1b174"
        assert record["attributes"] == {"int.attribute": 10}
        assert record["timestamp"] == "2018-12-13T14:51:00.300000Z"
