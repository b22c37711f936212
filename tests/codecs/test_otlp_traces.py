"""OTLP spans as span events; recorded exceptions as errors shaped like Sentry ingest's."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from obsd.codecs import sentry, sentry_fields
from obsd.codecs.otlp import OtlpRequestError, Tally, parse_request
from obsd.codecs.otlp_traces import span_events
from tests.codecs.otlp_requests import SPAN_ID, T0, TRACE_ID, span, traces_request


def convert(*spans: dict[str, Any]) -> tuple[list[tuple[str, dict[str, Any]]], Tally]:
    tally = Tally()
    return list(span_events(traces_request(*spans), tally)), tally


class TestSpans:
    def test_span_fields(self) -> None:
        """A span becomes a span event with ids, kind, status, duration and attributes."""
        (kind, fields), _ = convert(span())[0]
        assert kind == "span"
        assert fields["event"] == "POST /pay"
        assert fields["level"] == "error"
        assert fields["trace_id"] == TRACE_ID.hex()
        assert fields["span_id"] == SPAN_ID.hex()
        assert fields["span_kind"] == "server"
        assert fields["status_code"] == "error"
        assert fields["status_message"] == "boom"
        assert fields["timestamp"] == T0 / 1e9
        assert fields["duration_ms"] == 250.0
        assert fields["service"] == "shop"
        assert fields["host"] == "web1"
        assert fields["attributes"] == {"http.route": "/pay"}
        assert [e["name"] for e in fields["span_events"]] == ["retry"]

    def test_span_without_ids_refused(self) -> None:
        """A span without a trace id is refused and counted."""
        events, tally = convert(span(trace_id=b""), span(events=[]))
        assert [k for k, _ in events] == ["span"]
        assert tally.rejected == 1


class TestExceptions:
    def test_exception_is_a_sentry_shaped_error(self) -> None:
        """A recorded exception becomes an error event like the Sentry input makes."""
        events, _ = convert(span())
        kind, error = events[1]
        assert kind == "error"
        assert error["exception_type"] == "ValueError"
        assert error["exception_value"] == "card declined"
        assert error["frames"] == ["app:handle:10", "billing:charge:3"]
        assert error["event"] == "ValueError: card declined"
        assert error["host"] == "web1"
        assert error["release"] == "1.2"
        assert error["trace_id"] == TRACE_ID.hex()
        assert error["timestamp"] == (T0 + 100_000_000) / 1e9

    def test_raw_payload_forwardable(self) -> None:
        """_sentry_raw holds a store payload the Sentry codec reads back to the same fields."""
        events, _ = convert(span())
        error = events[1][1]
        raw = error["_sentry_raw"]
        assert raw["endpoint"] == "store"
        payload = sentry.parse_json(raw["body"])
        again = sentry_fields.error_event_fields(payload, None)
        assert {k: again[k] for k in ("id", "event", "exception_type", "frames")} == {
            k: error[k] for k in ("id", "event", "exception_type", "frames")
        }
        (value,) = payload["exception"]["values"]
        assert [f["function"] for f in value["stacktrace"]["frames"]] == ["handle", "charge"]
        assert payload["contexts"]["trace"]["trace_id"] == TRACE_ID.hex()

    def test_non_python_stacktrace_kept_as_text(self) -> None:
        """A stack trace obsd cannot read keeps type and value, the text goes to extra."""
        from opentelemetry.proto.trace.v1 import trace_pb2

        from tests.codecs.otlp_requests import kv

        event = trace_pb2.Span.Event(name="exception", attributes=[
            kv("exception.type", "java.lang.IllegalStateException"),
            kv("exception.message", "no"),
            kv("exception.stacktrace", "java.lang.IllegalStateException: no\n\tat A.b(A.java:1)"),
        ])
        events, _ = convert(span(events=[event]))
        payload = json.loads(events[1][1]["_sentry_raw"]["body"])
        assert payload["exception"]["values"] == [
            {"type": "java.lang.IllegalStateException", "value": "no"}
        ]
        assert "A.java" in payload["extra"]["exception.stacktrace"]


class TestProperties:
    @settings(max_examples=50)
    @given(st.binary(max_size=300))
    def test_any_protobuf_converts_or_raises(self, data: bytes) -> None:
        """Any bytes: OtlpRequestError, or events of known kinds with refused ones tallied."""
        try:
            request = parse_request("traces", data, "application/x-protobuf")
        except OtlpRequestError:
            return
        tally = Tally()
        assert all(kind in ("span", "error") for kind, _ in span_events(request, tally))
