"""OTLP/HTTP requests read without Twisted: bodies, both encodings, answers, log records.

Requests are parsed with the official ``opentelemetry-proto`` message classes.
``application/x-protobuf`` bodies are the binary encoding; ``application/json``
bodies use the OTLP JSON mapping, which differs from protobuf's own JSON in one
place: trace and span ids are hex, not base64 (``_ids_to_base64`` converts them
before ``json_format`` reads the rest: lowerCamelCase or original field names,
int64 as strings or numbers, enums as integers).  Answers are the
``Export*ServiceResponse`` in the request's encoding, with ``partial_success``
when some items were refused; errors are a ``google.rpc.Status``.

``log_events`` turns an ``ExportLogsServiceRequest`` into obsd log events
(``obsd.codecs.otlp_metrics`` and ``otlp_traces`` do metrics and spans).
Every problem with a request raises ``OtlpRequestError`` carrying its status.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from typing import Any, Final

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from obsd import events
from obsd.codecs.inflate import RAW_DEFLATE, ZLIB, InflateError, gunzip, inflate, looks_zlib
from obsd.errors import ParseError

PROTOBUF: Final = "application/x-protobuf"
JSON: Final = "application/json"
#: the three signals and their request and response classes
REQUESTS: Final[dict[str, type[Message]]] = {
    "logs": logs_service_pb2.ExportLogsServiceRequest,
    "metrics": metrics_service_pb2.ExportMetricsServiceRequest,
    "traces": trace_service_pb2.ExportTraceServiceRequest,
}
RESPONSES: Final[dict[str, type[Message]]] = {
    "logs": logs_service_pb2.ExportLogsServiceResponse,
    "metrics": metrics_service_pb2.ExportMetricsServiceResponse,
    "traces": trace_service_pb2.ExportTraceServiceResponse,
}
#: the ``partial_success`` field that counts refused items, per signal
REJECTED_FIELD: Final = {
    "logs": "rejected_log_records",
    "metrics": "rejected_data_points",
    "traces": "rejected_spans",
}
_ZERO_HEX: Final = {16: "0" * 32, 8: "0" * 16}
_ID_KEYS: Final = frozenset(
    ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")
)
#: gRPC status codes used in ``google.rpc.Status`` answers, by HTTP status
_GRPC_CODES: Final = {400: 3, 404: 12, 405: 12, 413: 8, 415: 3, 429: 8, 500: 13, 503: 14}
#: OTLP severity numbers (1..24) in bands of four: trace, debug, info, warn, error, fatal
_SEVERITY_BANDS: Final = (
    events.DEBUG,
    events.DEBUG,
    events.INFO,
    events.WARNING,
    events.ERROR_LEVEL,
    events.CRITICAL,
)


_EXCEPTION_ATTRIBUTES: Final = (
    ("exception.type", "exception_type"),
    ("exception.message", "exception_value"),
)
#: what converters yield: ``(kind, event fields)``
Items = Iterator[tuple[str, dict[str, Any]]]


class OtlpRequestError(ParseError):
    """A request obsd refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


# --- bodies and requests -----------------------------------------------------------


def media_type(content_type: str | None) -> str:
    """The request's encoding, or ``OtlpRequestError(415)`` when it is neither OTLP's."""
    value = (content_type or "").partition(";")[0].strip().lower()
    if value in (PROTOBUF, JSON):
        return value
    raise OtlpRequestError(415, f"unsupported content type {value or '(none)'!r}")


def decode_body(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Undo ``gzip`` (or ``identity``) within ``limit`` bytes of output: bomb-safe."""
    if len(body) > limit:
        raise OtlpRequestError(413, f"body over {limit} bytes")
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise OtlpRequestError(415, f"unsupported content encoding {encoding!r}")
    try:
        if encoding == "deflate":
            out, _rest = inflate(body, ZLIB if looks_zlib(body) else RAW_DEFLATE, limit)
        else:
            out, _rest = gunzip(body, limit)
    except InflateError as exc:
        if exc.too_large:
            raise OtlpRequestError(413, f"body inflates past {limit} bytes") from None
        if exc.cause:
            raise OtlpRequestError(400, f"invalid {encoding} body: {exc.cause}") from None
        raise OtlpRequestError(400, f"truncated {encoding} body") from None
    return out


def _ids_to_base64(node: Any) -> None:
    """Hex trace and span ids (OTLP JSON) as base64 (protobuf JSON), in place."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key in _ID_KEYS and isinstance(value, str):
                    try:
                        item[key] = base64.b64encode(bytes.fromhex(value)).decode()
                    except ValueError:
                        raise OtlpRequestError(400, f"{key} is not hex: {value[:40]!r}") from None
                elif isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, dict | list))


def parse_request(signal: str, data: bytes, encoding: str) -> Any:
    """The ``Export*ServiceRequest`` for ``signal`` from decoded body bytes."""
    message = REQUESTS[signal]()
    if encoding == PROTOBUF:
        try:
            message.ParseFromString(data)
        except (DecodeError, RecursionError, ValueError) as exc:
            raise OtlpRequestError(400, f"invalid protobuf body: {exc}") from None
        return message
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise OtlpRequestError(400, f"invalid JSON body: {str(exc)[:200]}") from None
    if not isinstance(doc, dict):
        raise OtlpRequestError(400, "the JSON body must be an object")
    _ids_to_base64(doc)
    try:
        json_format.ParseDict(doc, message, ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError, ValueError, TypeError) as exc:
        raise OtlpRequestError(400, f"invalid OTLP JSON: {str(exc)[:300]}") from None
    return message


def count_items(signal: str, message: Any) -> int:
    """Log records, metric data points or spans in a request: what a per-request cap counts."""
    if signal == "logs":
        return sum(len(s.log_records) for r in message.resource_logs for s in r.scope_logs)
    if signal == "traces":
        return sum(len(s.spans) for r in message.resource_spans for s in r.scope_spans)
    total = 0
    for resource_metrics in message.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                which = metric.WhichOneof("data")
                total += len(getattr(metric, which).data_points) if which else 0
    return total


def encode_response(signal: str, encoding: str, rejected: int = 0, message: str = "") -> bytes:
    """The ``Export*ServiceResponse``: empty, or with ``partial_success``."""
    response = RESPONSES[signal]()
    if rejected or message:
        partial = response.partial_success
        setattr(partial, REJECTED_FIELD[signal], rejected)
        partial.error_message = message
    if encoding == PROTOBUF:
        return bytes(response.SerializeToString())
    text: str = json_format.MessageToJson(response, indent=None)
    return text.encode()


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        byte = number & 0x7F
        number >>= 7
        if number:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_status(status: int, reason: str, encoding: str) -> bytes:
    """A ``google.rpc.Status`` (code, message) for an error answer, in ``encoding``."""
    code = _GRPC_CODES.get(status, 2)
    if encoding != PROTOBUF:
        return json.dumps({"code": code, "message": reason}).encode()
    text = reason.encode("utf-8")
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


# --- values ------------------------------------------------------------------------


def any_value(value: Any, depth: int = 0) -> Any:
    """An ``AnyValue`` as plain JSON-able data (bytes as base64, deep nesting as text)."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "string_value":
        return value.string_value
    if which == "bool_value":
        return value.bool_value
    if which == "int_value":
        return value.int_value
    if which == "double_value":
        return value.double_value
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if depth > 8:
        return "<nested too deeply>"
    if which == "array_value":
        return [any_value(v, depth + 1) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value, depth + 1) for kv in value.kvlist_value.values}
    return None


def attributes(pairs: Any) -> dict[str, Any]:
    """Repeated ``KeyValue`` as a dict."""
    return {kv.key: any_value(kv.value) for kv in pairs}


def tag_text(value: Any) -> str:
    """An attribute value as tag text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, separators=(",", ":"), default=str)


def hex_id(raw: bytes, size: int, what: str) -> str | None:
    """A trace (16 bytes) or span (8 bytes) id as hex; None when empty or all zero."""
    if not raw:
        return None
    if len(raw) != size:
        if not any(raw):
            return None
        raise OtlpRequestError(400, f"{what} has {len(raw)} bytes, not {size}")
    text = raw.hex()
    return None if text == _ZERO_HEX[size] else text


def nanos(value: int) -> float | None:
    """Unix nanoseconds as float seconds; None for 0 (unset)."""
    return value / 1e9 if value else None


def resource_fields(resource_attrs: Mapping[str, Any]) -> dict[str, Any]:
    """What every event from one resource carries: ``service``, ``host``, ``resource``."""
    service = resource_attrs.get("service.name") or "unknown_service"
    fields: dict[str, Any] = {"service": str(service)}
    host = resource_attrs.get("host.name")
    if isinstance(host, str) and host:
        fields[events.HOST] = host
    if resource_attrs:
        fields["resource"] = dict(resource_attrs)
    return fields


def severity_level(number: int, text: str) -> str:
    """An OTLP severity number (1..24), else its text, as an obsd level."""
    if 1 <= number <= 24:
        return _SEVERITY_BANDS[(number - 1) // 4]
    return events.normalise_level(text, events.INFO) if text else events.INFO


# --- logs --------------------------------------------------------------------------


class Tally:
    """What converting one request refused: how many, and the first reason."""

    __slots__ = ("reason", "rejected")

    def __init__(self) -> None:
        self.rejected = 0
        self.reason = ""

    def refuse(self, reason: str, count: int = 1) -> None:
        self.rejected += count
        if not self.reason:
            self.reason = reason


def log_events(request: Any, tally: Tally) -> Items:
    """``(kind, fields)`` for each log record; refused records go into ``tally``."""
    for resource_logs in request.resource_logs:
        resource_attrs = attributes(resource_logs.resource.attributes)
        common = resource_fields(resource_attrs)
        for scope_logs in resource_logs.scope_logs:
            scope = scope_logs.scope.name
            for record in scope_logs.log_records:
                try:
                    fields = _log_fields(record, common, scope)
                except OtlpRequestError as exc:
                    tally.refuse(str(exc))
                    continue
                yield events.LOG, fields


def _log_fields(record: Any, common: Mapping[str, Any], scope: str) -> dict[str, Any]:
    trace_id = hex_id(record.trace_id, 16, "trace_id")
    span_id = hex_id(record.span_id, 8, "span_id")
    body = any_value(record.body) if record.HasField("body") else None
    if body is None:
        message = record.event_name or ""
    else:
        message = body if isinstance(body, str) else tag_text(body)
    fields: dict[str, Any] = {
        events.EVENT: message,
        events.LEVEL: severity_level(record.severity_number, record.severity_text),
        **common,
    }
    stamp = nanos(record.time_unix_nano) or nanos(record.observed_time_unix_nano)
    if stamp is not None:
        fields[events.TIMESTAMP] = stamp
    if record.severity_text:
        fields["severity_text"] = record.severity_text
    if record.severity_number:
        fields["severity_number"] = int(record.severity_number)
    if record.event_name:
        fields["event_name"] = record.event_name
    if scope:
        fields["scope"] = scope
    if trace_id:
        fields["trace_id"] = trace_id
    if span_id:
        fields["span_id"] = span_id
    if record.attributes:
        attrs = attributes(record.attributes)
        fields["attributes"] = attrs
        if "exception.type" in attrs or "exception.stacktrace" in attrs:
            _exception_fields(attrs, fields)
    return fields


def _exception_fields(attrs: Mapping[str, Any], fields: dict[str, Any]) -> None:
    """OpenTelemetry's ``exception.*`` attributes where obsd's outputs look for them.

    ``exception`` holds the stack trace text, which the Sentry output reads into
    frames (``obsd.codecs.tracebacks``), as it does for syslog lines.
    """
    stacktrace = attrs.get("exception.stacktrace")
    if isinstance(stacktrace, str) and stacktrace:
        fields["exception"] = stacktrace
    for key, name in _EXCEPTION_ATTRIBUTES:
        value = attrs.get(key)
        if isinstance(value, str) and value:
            fields[name] = value
