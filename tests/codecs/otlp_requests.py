"""OTLP requests built with the official message classes, shared by the OTLP tests."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2

TRACE_ID = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN_ID = bytes.fromhex("eee19b7ec3c1b174")
T0 = 1_764_750_000_000_000_000
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/shop/app.py", line 10, in handle\n'
    "    charge(card)\n"
    '  File "/srv/shop/billing.py", line 3, in charge\n'
    '    raise ValueError("card declined")\n'
    "ValueError: card declined\n"
)


def kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        any_value = AnyValue(bool_value=value)
    elif isinstance(value, int):
        any_value = AnyValue(int_value=value)
    elif isinstance(value, float):
        any_value = AnyValue(double_value=value)
    else:
        any_value = AnyValue(string_value=str(value))
    return KeyValue(key=key, value=any_value)


def resource(**extra: Any) -> dict[str, Any]:
    attrs = {"service.name": "shop", "host.name": "web1", "telemetry.sdk.language": "python"}
    attrs.update(extra)
    return {"attributes": [kv(k, v) for k, v in attrs.items()]}


def logs_request(*records: dict[str, Any]) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    scope = request.resource_logs.add(resource=resource()).scope_logs.add()
    scope.scope.name = "shop.orders"
    for record in records:
        scope.log_records.add(**record)
    return request


def log_record(**kw: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "time_unix_nano": T0,
        "severity_number": 17,
        "severity_text": "ERROR",
        "body": AnyValue(string_value="payment failed"),
        "attributes": [kv("order", 17), kv("code.function", "pay")],
        "trace_id": TRACE_ID,
        "span_id": SPAN_ID,
    }
    record.update(kw)
    return record


def metrics_request(*metrics: metrics_pb2.Metric, service: str = "shop") -> Any:
    request = ExportMetricsServiceRequest()
    scope = request.resource_metrics.add(resource=resource(**{"service.name": service}))
    scope.scope_metrics.add().metrics.extend(metrics)
    return request


def counter(value: int, start: int = T0, temporality: int = 2, monotonic: bool = True,
            name: str = "orders", **attrs: Any) -> metrics_pb2.Metric:
    point = metrics_pb2.NumberDataPoint(
        start_time_unix_nano=start, time_unix_nano=T0 + 10**10, as_int=value,
        attributes=[kv(k, v) for k, v in attrs.items()],
    )
    return metrics_pb2.Metric(
        name=name,
        sum=metrics_pb2.Sum(data_points=[point], aggregation_temporality=temporality,
                            is_monotonic=monotonic),
    )


def traces_request(*spans: dict[str, Any]) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add(resource=resource(**{"service.version": "1.2"}))
    scope = scope.scope_spans.add()
    scope.scope.name = "shop.web"
    for span in spans:
        scope.spans.add(**span)
    return request


def span(**kw: Any) -> dict[str, Any]:
    from opentelemetry.proto.trace.v1 import trace_pb2

    fields: dict[str, Any] = {
        "trace_id": TRACE_ID,
        "span_id": SPAN_ID,
        "name": "POST /pay",
        "kind": 2,
        "start_time_unix_nano": T0,
        "end_time_unix_nano": T0 + 250_000_000,
        "status": trace_pb2.Status(code=2, message="boom"),
        "attributes": [kv("http.route", "/pay")],
        "events": [
            trace_pb2.Span.Event(
                name="exception",
                time_unix_nano=T0 + 100_000_000,
                attributes=[
                    kv("exception.type", "ValueError"),
                    kv("exception.message", "card declined"),
                    kv("exception.stacktrace", TRACEBACK),
                ],
            ),
            trace_pb2.Span.Event(name="retry", time_unix_nano=T0 + 1),
        ],
    }
    fields.update(kw)
    return fields
