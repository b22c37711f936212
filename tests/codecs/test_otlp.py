"""OTLP bodies, both encodings, answers and log records, read with the official classes."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValueList

from obsd.codecs import otlp
from obsd.codecs.otlp import OtlpRequestError, Tally
from tests.codecs.otlp_requests import (
    SPAN_ID,
    TRACE_ID,
    kv,
    log_record,
    logs_request,
)


def convert(request: Any) -> tuple[list[tuple[str, dict[str, Any]]], Tally]:
    tally = Tally()
    return list(otlp.log_events(request, tally)), tally


class TestBodies:
    def test_gzip(self) -> None:
        """A gzipped body is inflated."""
        assert otlp.decode_body(gzip.compress(b"abc"), "gzip", 100) == b"abc"

    def test_bomb(self) -> None:
        """A gzip bomb stops at the limit with 413."""
        with pytest.raises(OtlpRequestError) as info:
            otlp.decode_body(gzip.compress(b"\0" * 10_000_000), "gzip", 1_000_000)
        assert info.value.status == 413

    def test_too_large_before_inflating(self) -> None:
        """A body over the limit is 413 as it stands."""
        with pytest.raises(OtlpRequestError) as info:
            otlp.decode_body(b"x" * 101, None, 100)
        assert info.value.status == 413

    @pytest.mark.parametrize(("encoding", "status"), [("br", 415), ("gzip", 400)])
    def test_bad_encodings(self, encoding: str, status: int) -> None:
        """An unknown encoding is 415, a broken gzip body 400."""
        with pytest.raises(OtlpRequestError) as info:
            otlp.decode_body(b"not gzip", encoding, 100)
        assert info.value.status == status

    @pytest.mark.parametrize(
        ("value", "expected"),
        [("application/x-protobuf", otlp.PROTOBUF), ("application/json; charset=utf-8", otlp.JSON)],
    )
    def test_media_types(self, value: str, expected: str) -> None:
        """The two OTLP content types are recognised, parameters ignored."""
        assert otlp.media_type(value) == expected

    def test_other_media_type_415(self) -> None:
        """Any other content type is 415."""
        with pytest.raises(OtlpRequestError) as info:
            otlp.media_type("text/plain")
        assert info.value.status == 415


class TestRequests:
    def test_protobuf(self) -> None:
        """A protobuf body parses into the request class."""
        request = logs_request(log_record())
        parsed = otlp.parse_request("logs", request.SerializeToString(), otlp.PROTOBUF)
        assert parsed == request

    def test_json_mapping_hex_ids_camel_case_string_ints(self) -> None:
        """OTLP JSON: hex ids, lowerCamelCase names, int64 as strings, enums as integers."""
        body = {
            "resourceLogs": [{
                "resource": {"attributes": [{"key": "service.name",
                                             "value": {"stringValue": "shop"}}]},
                "scopeLogs": [{"logRecords": [{
                    "timeUnixNano": "1764750000000000000",
                    "severityNumber": 9,
                    "body": {"stringValue": "hi"},
                    "traceId": TRACE_ID.hex(),
                    "spanId": SPAN_ID.hex(),
                    "attributes": [{"key": "n", "value": {"intValue": "5"}}],
                }]}],
            }]
        }
        parsed = otlp.parse_request("logs", json.dumps(body).encode(), otlp.JSON)
        record = parsed.resource_logs[0].scope_logs[0].log_records[0]
        assert record.trace_id == TRACE_ID
        assert record.span_id == SPAN_ID
        assert record.time_unix_nano == 1764750000000000000
        assert record.attributes[0].value.int_value == 5

    @pytest.mark.parametrize(
        ("body", "reason"),
        [
            (b"{", "invalid JSON"),
            (b"[]", "must be an object"),
            (b'{"resourceLogs": 5}', "invalid OTLP JSON"),
            (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "xyz"}]}]}]}',
             "not hex"),
        ],
    )
    def test_bad_json(self, body: bytes, reason: str) -> None:
        """Bad JSON bodies are 400 with a reason."""
        with pytest.raises(OtlpRequestError, match=reason) as info:
            otlp.parse_request("logs", body, otlp.JSON)
        assert info.value.status == 400

    def test_bad_protobuf(self) -> None:
        """Bytes that are not the message are 400."""
        with pytest.raises(OtlpRequestError, match="invalid protobuf") as info:
            otlp.parse_request("logs", b"\xff\xff\xff", otlp.PROTOBUF)
        assert info.value.status == 400


class TestAnswers:
    def test_partial_success_protobuf(self) -> None:
        """partial_success carries the rejected count and message."""
        body = otlp.encode_response("logs", otlp.PROTOBUF, 3, "bad trace id")
        response = ExportLogsServiceResponse.FromString(body)
        assert response.partial_success.rejected_log_records == 3
        assert response.partial_success.error_message == "bad trace id"

    def test_json_answers(self) -> None:
        """JSON answers use lowerCamelCase and int64 as strings; success is {}."""
        assert json.loads(otlp.encode_response("metrics", otlp.JSON)) == {}
        doc = json.loads(otlp.encode_response("traces", otlp.JSON, 2, "x"))
        assert doc == {"partialSuccess": {"rejectedSpans": "2", "errorMessage": "x"}}

    def test_status_protobuf(self) -> None:
        """Error answers are a google.rpc.Status: code 3 and the message, hand-encoded."""
        body = otlp.encode_status(400, "bad", otlp.PROTOBUF)
        assert body == b"\x08\x03\x12\x03bad"
        assert json.loads(otlp.encode_status(413, "big", otlp.JSON)) == {"code": 8, "message": "big"}


class TestLogs:
    def test_record_fields(self) -> None:
        """A log record becomes a log event with level, body, ids, resource and attributes."""
        (kind, fields), = convert(logs_request(log_record()))[0]
        assert kind == "log"
        assert fields == {
            "event": "payment failed",
            "level": "error",
            "service": "shop",
            "host": "web1",
            "resource": {"service.name": "shop", "host.name": "web1",
                         "telemetry.sdk.language": "python"},
            "timestamp": 1764750000.0,
            "severity_text": "ERROR",
            "severity_number": 17,
            "scope": "shop.orders",
            "trace_id": TRACE_ID.hex(),
            "span_id": SPAN_ID.hex(),
            "attributes": {"order": 17, "code.function": "pay"},
        }

    @pytest.mark.parametrize(
        ("number", "text", "level"),
        [(1, "", "debug"), (5, "", "debug"), (9, "", "info"), (13, "", "warning"),
         (17, "", "error"), (21, "", "critical"), (0, "WARN", "warning"), (0, "", "info")],
    )
    def test_severity(self, number: int, text: str, level: str) -> None:
        """Severity numbers map by band; the text is used when the number is unset."""
        (_, fields), = convert(logs_request(log_record(severity_number=number,
                                                       severity_text=text)))[0]
        assert fields["level"] == level

    def test_structured_body_and_exception(self) -> None:
        """A map body becomes JSON text; exception attributes land where outputs look."""
        body = AnyValue(kvlist_value=KeyValueList(values=[kv("a", 1)]))
        record = log_record(body=body, attributes=[
            kv("exception.type", "ValueError"), kv("exception.stacktrace", "Traceback ...")
        ])
        (_, fields), = convert(logs_request(record))[0]
        assert fields["event"] == '{"a":1}'
        assert fields["exception"] == "Traceback ..."
        assert fields["exception_type"] == "ValueError"

    def test_bad_trace_id_refused_alone(self) -> None:
        """A record with a wrong-sized trace id is refused and counted; the others pass."""
        events, tally = convert(logs_request(log_record(trace_id=b"abc"), log_record()))
        assert len(events) == 1
        assert tally.rejected == 1 and "trace_id" in tally.reason

    def test_any_values(self) -> None:
        """Arrays, bytes and nested lists become plain data."""
        value = AnyValue(array_value=ArrayValue(values=[AnyValue(bytes_value=b"\x00"),
                                                        AnyValue(bool_value=True)]))
        assert otlp.any_value(value) == ["AA==", True]


class TestProperties:
    @given(st.binary(max_size=300), st.sampled_from(["logs", "metrics", "traces"]))
    def test_protobuf_returns_or_raises(self, data: bytes, signal: str) -> None:
        """Any bytes as protobuf: a request, or OtlpRequestError."""
        try:
            parsed = otlp.parse_request(signal, data, otlp.PROTOBUF)
        except OtlpRequestError as exc:
            assert exc.status == 400
            return
        assert isinstance(parsed, otlp.REQUESTS[signal])

    @given(st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
            st.sampled_from(["resourceLogs", "scopeLogs", "logRecords", "traceId", "body",
                             "stringValue", "attributes", "key", "value", "x"]),
            inner, max_size=4),
        max_leaves=15))
    def test_json_returns_or_raises(self, doc: Any) -> None:
        """Any JSON document: a request whose records convert, or OtlpRequestError."""
        try:
            parsed = otlp.parse_request("logs", json.dumps(doc).encode(), otlp.JSON)
        except OtlpRequestError as exc:
            assert exc.status == 400
            return
        events, _ = convert(parsed)
        assert all(kind == "log" for kind, _ in events)

    def test_json_round_trip_of_sdk_style_request(self) -> None:
        """protobuf's own JSON (base64 ids) is not OTLP's: hex is what obsd reads."""
        request = logs_request(log_record())
        doc = json_format.MessageToDict(request)
        doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["traceId"] = TRACE_ID.hex()
        doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["spanId"] = SPAN_ID.hex()
        assert otlp.parse_request("logs", json.dumps(doc).encode(), otlp.JSON) == request
