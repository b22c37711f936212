"""OTLP spans as obsd ``span`` events, and recorded exceptions as Sentry-shaped errors.

A span becomes one ``span`` event: its name is ``event``, its start time the
``timestamp``, with ids in hex, kind, status, ``duration_ms`` and attributes.  A span
event named ``exception`` (what ``span.record_exception`` writes) also becomes
an ``error`` event shaped exactly like one the Sentry input makes: obsd builds
the Sentry event a Sentry SDK would have sent (exception type, value and frames
read from ``exception.stacktrace`` by ``obsd.codecs.tracebacks``, the trace
context, release and environment from the resource) and keeps it under
``_sentry_raw``, so the Sentry output forwards it as an issue and the relay
carries it to a central obsd like any Sentry report.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import obsd
from obsd import events
from obsd.codecs import tracebacks
from obsd.codecs.otlp import (
    Items,
    OtlpRequestError,
    Tally,
    attributes,
    hex_id,
    nanos,
    resource_fields,
    tag_text,
)
from obsd.codecs.sentry_fields import error_event_fields

SPAN_KINDS: Final = ("unspecified", "internal", "server", "client", "producer", "consumer")
STATUS_CODES: Final = ("unset", "ok", "error")
#: span events (other than exceptions) kept on the span event at most
MAX_SPAN_EVENTS: Final = 32
#: where the platform of a Sentry event comes from (``telemetry.sdk.language``)
_PLATFORMS: Final = {
    "python": "python",
    "java": "java",
    "go": "go",
    "nodejs": "node",
    "dotnet": "csharp",
    "ruby": "ruby",
    "php": "php",
    "rust": "native",
    "cpp": "native",
}
#: Sentry's SDK name for reports obsd makes from OpenTelemetry exceptions
CLIENT: Final = f"obsd.otlp/{obsd.__version__}"


def span_events(request: Any, tally: Tally) -> Items:
    """``(kind, fields)``: one ``span`` per span, one ``error`` per recorded exception."""
    for resource_spans in request.resource_spans:
        resource_attrs = attributes(resource_spans.resource.attributes)
        common = resource_fields(resource_attrs)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name
            for span in scope_spans.spans:
                try:
                    fields, exceptions = _span_fields(span, common, scope)
                except OtlpRequestError as exc:
                    tally.refuse(str(exc))
                    continue
                yield events.SPAN, fields
                for event in exceptions:
                    yield events.ERROR, exception_error(event, fields, resource_attrs)


def _span_fields(
    span: Any, common: Mapping[str, Any], scope: str
) -> tuple[dict[str, Any], list[Any]]:
    trace_id = hex_id(span.trace_id, 16, "trace_id")
    span_id = hex_id(span.span_id, 8, "span_id")
    if trace_id is None or span_id is None:
        raise OtlpRequestError(400, "a span needs a trace_id and a span_id")
    status = STATUS_CODES[span.status.code] if span.status.code < 3 else "unset"
    fields: dict[str, Any] = {
        events.EVENT: span.name,
        events.LEVEL: events.ERROR_LEVEL if status == "error" else events.INFO,
        **common,
        "trace_id": trace_id,
        "span_id": span_id,
        "span_kind": SPAN_KINDS[span.kind] if span.kind < len(SPAN_KINDS) else "unspecified",
        "status_code": status,
    }
    parent = hex_id(span.parent_span_id, 8, "parent_span_id")
    if parent:
        fields["parent_span_id"] = parent
    start, end = nanos(span.start_time_unix_nano), nanos(span.end_time_unix_nano)
    if start is not None:
        fields[events.TIMESTAMP] = start
    if start is not None and end is not None:
        duration = span.end_time_unix_nano - span.start_time_unix_nano
        fields["duration_ms"] = round(duration / 1e6, 6)
    if span.status.message:
        fields["status_message"] = span.status.message
    if scope:
        fields["scope"] = scope
    attrs = attributes(span.attributes)
    if attrs:
        fields["attributes"] = attrs
    exceptions: list[Any] = []
    kept: list[dict[str, Any]] = []
    for event in span.events:
        if event.name == "exception":
            exceptions.append(event)
        elif len(kept) < MAX_SPAN_EVENTS:
            kept.append(
                {"name": event.name, "timestamp": nanos(event.time_unix_nano),
                 "attributes": attributes(event.attributes)}
            )
    if kept:
        fields["span_events"] = kept
    if len(span.links):
        fields["links"] = len(span.links)
    return fields, exceptions


def sentry_payload(
    event: Any, span: Mapping[str, Any], resource_attrs: Mapping[str, Any]
) -> dict[str, Any]:
    """The Sentry event a Sentry SDK would send for one recorded exception."""
    attrs = attributes(event.attributes)
    exc_type = str(attrs.get("exception.type") or "Exception")
    exc_message = str(attrs.get("exception.message") or "")
    stacktrace = attrs.get("exception.stacktrace")
    values = tracebacks.parse_traceback_text(stacktrace) if isinstance(stacktrace, str) else None
    if not values:
        values = [{"type": exc_type, "value": exc_message}]
    language = str(resource_attrs.get("telemetry.sdk.language") or "")
    payload: dict[str, Any] = {
        "event_id": events.new_event_id(),
        "level": "error",
        "platform": _PLATFORMS.get(language, "other"),
        "logger": span.get("scope") or "opentelemetry",
        "transaction": span.get(events.EVENT) or None,
        "exception": {"values": values},
        "contexts": {
            "trace": {
                "trace_id": span["trace_id"],
                "span_id": span["span_id"],
                "op": span.get(events.EVENT),
                "status": "internal_error",
            }
        },
        "tags": {"service": str(span.get("service"))},
        "sdk": {"name": "obsd.otlp", "version": obsd.__version__},
    }
    stamp = nanos(event.time_unix_nano) or span.get(events.TIMESTAMP)
    if stamp is not None:
        payload["timestamp"] = stamp
    host = span.get(events.HOST)
    if host:
        payload["server_name"] = host
    for key, name in (
        ("service.version", "release"),
        ("deployment.environment.name", "environment"),
        ("deployment.environment", "environment"),
    ):
        value = resource_attrs.get(key)
        if value and name not in payload:
            payload[name] = tag_text(value)
    if isinstance(stacktrace, str) and stacktrace and values[0].get("stacktrace") is None:
        payload["extra"] = {"exception.stacktrace": stacktrace[:16384]}
    if payload["transaction"] is None:
        del payload["transaction"]
    return payload


def exception_error(
    event: Any, span: Mapping[str, Any], resource_attrs: Mapping[str, Any]
) -> dict[str, Any]:
    """An ``error`` event for one recorded exception, as the Sentry input would make it."""
    payload = sentry_payload(event, span, resource_attrs)
    fields = error_event_fields(payload, None)
    for key in ("trace_id", "span_id", "service"):
        if key in span:
            fields[key] = span[key]
    fields["_sentry_raw"] = {
        "body": json.dumps(payload, separators=(",", ":")).encode(),
        "content_type": "application/json",
        "content_encoding": None,
        "endpoint": "store",
        "project_id": None,
        "auth": {"sentry_key": None, "sentry_version": "7", "sentry_client": CLIENT},
    }
    return fields
