"""Sentry's ingest wire format: auth, body encodings, JSON, envelopes, and event fields.

Pure: the twisted.web resource calls these in order (``parse_auth``,
``decode_body``, then ``parse_json`` or ``parse_envelope``, then the
``*_event_fields`` helpers) and turns a ``SentryRequestError`` into the HTTP
status and ``{"detail": ..., "causes": [...]}`` body that Sentry Relay answers
with, so raven and sentry-sdk see the answers they were written against.

Status and ``detail`` (Relay's texts where Relay has one), then when:

* 401 ``missing authorization information``: no auth in any source.
* 401 ``multiple authorization payloads detected``: two sources name
  different keys (or secrets, versions, projects).
* 401 ``bad x-sentry-auth header``: auth header or query without a key, or a
  non-numeric version.
* 401 ``bad envelope authentication header``: an envelope ``dsn`` that is not
  a DSN with key and project id.
* 400 ``bad sentry DSN public key``: key not 32 of ``[0-9A-Za-z_-]``.
* 400 ``unsupported protocol version (N)``: ``sentry_version`` above 7.
* 400 ``bad project path parameter``: ``/api/<id>/`` not a number.
* 400 ``empty request body``: nothing to parse.
* 400 ``invalid request body``: bad, truncated or unknown compression.
* 400 ``invalid JSON data``: JSON unparsable or not an object.
* 400 ``invalid event envelope``: broken envelope framing or headers, or the
  envelope ``dsn`` names another project than the URL.
* 403 ``event submission rejected with_reason: ProjectId``: unknown key, or a
  key of another project than the URL's (``authorize``).
* 413 ``request body exceeded the size limit``: over the limit, as received or
  while decoding.

The first cause, when there is one, is in ``causes``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import zlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit

import brotli  # type: ignore[import-untyped]

from obsd import events
from obsd.errors import ParseError

#: The newest protocol version Relay accepts (``sentry_version``).
PROTOCOL_VERSION: Final = 7
#: Relay's defaults: 1 MiB per event, 100 MiB per attachment and per envelope.
MAX_EVENT_BYTES: Final = 1024 * 1024
MAX_ATTACHMENT_BYTES: Final = 100 * 1024 * 1024
MAX_ENVELOPE_BYTES: Final = 100 * 1024 * 1024
#: How many stack frames (innermost) the ``frames`` summary keeps.
MAX_FRAMES: Final = 10
ENVELOPE_CONTENT_TYPE: Final = "application/x-sentry-envelope"

#: Item types the Sentry envelope protocol defines that obsd knows by name;
#: any other type is still parsed and kept whole for forwarding.
KNOWN_ITEM_TYPES: Final = frozenset(
    (
        "event",
        "transaction",
        "attachment",
        "session",
        "sessions",
        "user_report",
        "feedback",
        "client_report",
        "check_in",
        "log",
        "profile",
    )
)

_KEY_RE: Final = re.compile(r"[0-9A-Za-z_-]{32}")
_HEX_ID_RE: Final = re.compile(r"[0-9a-f]{32}")
_INFLATE_CHUNK: Final = 64 * 1024


class SentryRequestError(ParseError):
    """A request Sentry ingest refuses, with the HTTP status and Relay-like detail."""

    def __init__(self, status: int, detail: str, cause: str | None = None) -> None:
        super().__init__(detail if cause is None else f"{detail}: {cause}")
        self.status = status
        self.detail = detail
        self.causes: tuple[str, ...] = () if cause is None else (cause,)

    def body(self) -> dict[str, Any]:
        """The JSON body Relay answers with: ``detail`` and, when known, ``causes``."""
        out: dict[str, Any] = {"detail": self.detail}
        if self.causes:
            out["causes"] = list(self.causes)
        return out


@dataclass(frozen=True, slots=True)
class SentryAuth:
    """Who sent a request: the DSN's public key and what the client said about itself."""

    key: str
    secret: str | None = None
    client: str | None = None
    version: int | None = None
    #: Only an envelope's ``dsn`` carries a project id; header and query auth do not.
    project_id: int | None = None


@dataclass(frozen=True, slots=True)
class EnvelopeItem:
    """One envelope item: its header and its payload bytes, exactly as received."""

    headers: dict[str, Any]
    payload: bytes

    @property
    def type(self) -> str:
        """The item type (``event``, ``attachment``, ...), ``""`` if absent."""
        value = self.headers.get("type")
        return value if isinstance(value, str) else ""


@dataclass(frozen=True, slots=True)
class Envelope:
    """A parsed envelope; ``items`` keep their payloads whole for forwarding."""

    headers: dict[str, Any]
    items: list[EnvelopeItem] = field(default_factory=list)

    @property
    def dsn(self) -> str | None:
        """The ``dsn`` header, which authenticates the envelope like ``X-Sentry-Auth``."""
        value = self.headers.get("dsn")
        return value if isinstance(value, str) else None

    @property
    def event_id(self) -> str | None:
        """The envelope's ``event_id`` as 32 hex digits, if it has a valid one."""
        return _event_id(self.headers.get("event_id"))


# --- auth -------------------------------------------------------------------


def parse_auth(
    headers: Mapping[str, str],
    query: Mapping[str, Sequence[str]],
    envelope_dsn: str | None = None,
) -> SentryAuth:
    """Find the client's key in ``X-Sentry-Auth``, ``Authorization: Sentry``, the query or a DSN.

    ``headers`` names are matched case-insensitively; ``query`` maps each name to
    its values (``urllib.parse.parse_qs`` shape).  Sources that agree are merged;
    sources naming different keys are refused, as is a request with none.

    Raises:
        SentryRequestError: 401 or 400, see the module table.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    found: list[SentryAuth] = []
    x_sentry_auth = lowered.get("x-sentry-auth")
    if x_sentry_auth is not None and x_sentry_auth.strip():
        found.append(_auth_from_header(x_sentry_auth, prefix_required=False))
    authorization = lowered.get("authorization")
    if authorization is not None and authorization[:7].lower() == "sentry ":
        found.append(_auth_from_header(authorization, prefix_required=True))
    if any(name.startswith("sentry_") for name in query):
        found.append(_auth_from_query(query))
    if envelope_dsn is not None:
        found.append(_auth_from_dsn(envelope_dsn))
    if not found:
        raise SentryRequestError(401, "missing authorization information")
    merged = found[0]
    for other in found[1:]:
        merged = _merge(merged, other)
    _check_key(merged.key)
    if merged.version is not None and merged.version > PROTOCOL_VERSION:
        raise SentryRequestError(
            400, f"unsupported protocol version ({merged.version})"
        )
    return merged


def _auth_from_header(value: str, *, prefix_required: bool) -> SentryAuth:
    text = value.strip()
    if text[:7].lower() == "sentry ":
        text = text[7:]
    elif prefix_required:
        raise SentryRequestError(401, "bad x-sentry-auth header", "non sentry auth")
    pairs: dict[str, str] = {}
    for part in text.split(","):
        name, sep, item = part.strip().partition("=")
        if not sep:
            continue
        pairs[name.strip().lower()] = item.strip().strip('"')
    return _auth_from_pairs(pairs, "bad x-sentry-auth header")


def _auth_from_query(query: Mapping[str, Sequence[str]]) -> SentryAuth:
    pairs: dict[str, str] = {}
    for name, values in query.items():
        if not name.startswith("sentry_"):
            continue
        distinct = set(values)
        if len(distinct) > 1:
            raise SentryRequestError(401, "multiple authorization payloads detected")
        if distinct:
            pairs[name] = distinct.pop()
    return _auth_from_pairs(pairs, "bad x-sentry-auth header")


def _auth_from_pairs(pairs: Mapping[str, str], detail: str) -> SentryAuth:
    def get(name: str) -> str | None:
        value = pairs.get("sentry_" + name, pairs.get(name))
        return value or None

    key = get("key")
    if key is None:
        raise SentryRequestError(401, detail, "missing public key")
    version_text = get("version")
    version = None
    if version_text is not None:
        try:
            version = int(float(version_text))
        except ValueError:
            raise SentryRequestError(401, detail, "invalid value for version") from None
    return SentryAuth(
        key=key, secret=get("secret"), client=get("client"), version=version
    )


def _auth_from_dsn(dsn: str) -> SentryAuth:
    detail = "bad envelope authentication header"
    try:
        parts = urlsplit(dsn)
        username, password = parts.username, parts.password
    except ValueError:
        raise SentryRequestError(401, detail, "invalid dsn") from None
    if parts.scheme not in ("http", "https") or not username or not parts.hostname:
        raise SentryRequestError(401, detail, "invalid dsn")
    project = parts.path.rstrip("/").rpartition("/")[2]
    if not project.isdigit():
        raise SentryRequestError(401, detail, "dsn has no project id")
    return SentryAuth(key=username, secret=password or None, project_id=int(project))


def _merge(first: SentryAuth, other: SentryAuth) -> SentryAuth:
    """Join two sources; any field both set must agree, or the request is ambiguous."""
    values: dict[str, Any] = {}
    for name in ("key", "secret", "client", "version", "project_id"):
        mine, theirs = getattr(first, name), getattr(other, name)
        if (
            mine is not None
            and theirs is not None
            and mine != theirs
            and name != "client"
        ):
            raise SentryRequestError(401, "multiple authorization payloads detected")
        values[name] = mine if mine is not None else theirs
    return SentryAuth(**values)


def authorize(
    auth: SentryAuth,
    path_project_id: str | None,
    projects: Mapping[int, Collection[str]] | None,
) -> int | None:
    """The project a request belongs to, checking its key against ``projects``.

    ``path_project_id`` is the ``<project_id>`` URL segment (``None`` on
    ``/api/store/``); ``projects`` maps project id to its public keys, or is
    ``None`` to accept any key (the open mode config must allow explicitly).

    Raises:
        SentryRequestError: 400 bad path or dsn/path mismatch; 403 unknown key
            or a key of another project.
    """
    path_id = None
    if path_project_id is not None:
        if not path_project_id.isdigit():
            raise SentryRequestError(400, "bad project path parameter")
        path_id = int(path_project_id)
    if (
        path_id is not None
        and auth.project_id is not None
        and path_id != auth.project_id
    ):
        raise SentryRequestError(
            400,
            "invalid event envelope",
            "project id header mismatch between envelope and request",
        )
    claimed = path_id if path_id is not None else auth.project_id
    if projects is None:
        return claimed
    key = auth.key.partition(".")[0]
    owner = next((pid for pid, keys in projects.items() if key in keys), None)
    if owner is None:
        raise SentryRequestError(
            403,
            "event submission rejected with_reason: ProjectId",
            "unknown public key",
        )
    if claimed is not None and claimed != owner:
        raise SentryRequestError(
            403,
            "event submission rejected with_reason: ProjectId",
            "project id and key disagree",
        )
    return owner


def _check_key(key: str) -> None:
    # A key may carry flags after a dot (Relay's ``key.no-cache``); the key is before it.
    if not _KEY_RE.fullmatch(key.partition(".")[0]):
        raise SentryRequestError(
            400, "bad sentry DSN public key", "invalid project key"
        )


# --- bodies -----------------------------------------------------------------


def decode_body(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding`` (identity, deflate, gzip, br) within ``limit`` bytes.

    The limit holds for the body as received and for every decoded byte:
    decompression stops as soon as the output passes it, so a compression bomb
    costs at most ``limit`` bytes of memory.  A body with no encoding that is
    not JSON may be raven's older base64-of-zlib or bare zlib form.

    Raises:
        SentryRequestError: 413 over the limit; 400 for bad or truncated data.
    """
    if len(body) > limit:
        raise _too_large(limit)
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return _maybe_legacy(body, limit)
    if encoding in ("deflate", "zlib"):
        return _inflate(body, _deflate_wbits(body), limit, "deflate")
    if encoding in ("gzip", "x-gzip"):
        return _gunzip(body, limit)
    if encoding == "br":
        return _unbrotli(body, limit)
    raise SentryRequestError(
        400, "invalid request body", f"unsupported content encoding {encoding!r}"
    )


def _too_large(limit: int) -> SentryRequestError:
    return SentryRequestError(
        413, "request body exceeded the size limit", f"limit is {limit} bytes"
    )


def _bad_body(cause: str) -> SentryRequestError:
    return SentryRequestError(400, "invalid request body", cause)


def _looks_zlib(data: bytes) -> bool:
    return len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0


def _deflate_wbits(body: bytes) -> int:
    # HTTP "deflate" means zlib, but some clients send raw deflate; take both.
    return zlib.MAX_WBITS if _looks_zlib(body) else -zlib.MAX_WBITS


def _maybe_legacy(body: bytes, limit: int) -> bytes:
    stripped = body.lstrip()
    if not stripped or stripped[:1] in (b"{", b"["):
        return body
    if _looks_zlib(stripped):
        return _inflate(stripped, zlib.MAX_WBITS, limit, "zlib")
    try:
        raw = base64.b64decode(stripped, validate=True)
    except (binascii.Error, ValueError):
        return body  # not ours to judge here: the JSON parser will refuse it
    if _looks_zlib(raw):
        return _inflate(raw, zlib.MAX_WBITS, limit, "base64 zlib")
    return body


def _inflate(data: bytes, wbits: int, limit: int, name: str) -> bytes:
    out, rest = _inflate_one(data, wbits, limit, name)
    if rest.strip(b"\0\r\n\t "):
        raise _bad_body(f"trailing data after {name} stream")
    return out


def _inflate_one(
    data: bytes, wbits: int, limit: int, name: str, used: int = 0
) -> tuple[bytes, bytes]:
    """Inflate one stream, never holding more than ``limit - used`` output bytes."""
    inflater = zlib.decompressobj(wbits)
    out = bytearray()
    pending = data
    try:
        while True:
            room = limit - used - len(out)
            chunk = inflater.decompress(pending, min(room + 1, _INFLATE_CHUNK))
            out += chunk
            if used + len(out) > limit:
                raise _too_large(limit)
            pending = inflater.unconsumed_tail
            if inflater.eof or (not pending and not chunk):
                break
    except zlib.error as exc:
        raise _bad_body(f"invalid {name} data: {exc}") from None
    if not inflater.eof:
        raise _bad_body(f"truncated {name} data")
    return bytes(out), inflater.unused_data


def _gunzip(body: bytes, limit: int) -> bytes:
    """Inflate every gzip member (RFC 1952 allows several), within ``limit``."""
    out = b""
    rest = body
    while True:
        part, rest = _inflate_one(
            rest, 16 + zlib.MAX_WBITS, limit, "gzip", used=len(out)
        )
        out += part
        if not rest.strip(b"\0"):
            return out
        if rest[:2] != b"\x1f\x8b":
            raise _bad_body("trailing data after gzip stream")


def _unbrotli(body: bytes, limit: int) -> bytes:
    """Decode brotli in bounded steps: the first call takes all input, later ones drain."""
    decompressor = brotli.Decompressor()
    out = bytearray()
    pending = body
    try:
        while True:
            room = min(limit + 1 - len(out), _INFLATE_CHUNK)
            chunk = decompressor.process(pending, output_buffer_limit=room)
            out += chunk
            if len(out) > limit:
                raise _too_large(limit)
            if decompressor.is_finished() or (not chunk and not pending):
                break
            pending = b""
    except brotli.error as exc:
        raise _bad_body(f"invalid br data: {exc}") from None
    if not decompressor.is_finished():
        raise _bad_body("truncated br data")
    return bytes(out)


# --- JSON and envelopes -----------------------------------------------------


def parse_json(data: bytes) -> dict[str, Any]:
    """Parse a JSON object, accepting the NaN and Infinity that Python's json writes.

    Raises:
        SentryRequestError: 400 when empty, malformed, or not an object.
    """
    if not data.strip():
        raise SentryRequestError(400, "empty request body")
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise SentryRequestError(400, "invalid JSON data", str(exc)[:200]) from None
    if not isinstance(value, dict):
        raise SentryRequestError(400, "invalid JSON data", "expected a JSON object")
    return value


def parse_envelope(data: bytes) -> Envelope:
    """Split an envelope into its header and items (length-prefixed or newline-ended).

    Raises:
        SentryRequestError: 400 ``invalid event envelope`` with Relay's cause.
    """
    if not data.strip():
        raise SentryRequestError(400, "empty request body")
    header_line, pos = _line(data, 0)
    headers = _json_object(header_line, "invalid envelope header")
    items: list[EnvelopeItem] = []
    end = len(data)
    while pos < end:
        item_line, pos = _line(data, pos)
        if not item_line.strip():
            continue  # a blank line between items, as some SDKs write at the end
        item_headers = _json_object(item_line, "invalid item header")
        if not isinstance(item_headers.get("type"), str):
            raise _bad_envelope("invalid item header")
        length = item_headers.get("length")
        if length is None:
            payload, pos = _line(data, pos)
        else:
            if isinstance(length, bool) or not isinstance(length, int) or length < 0:
                raise _bad_envelope("invalid item header")
            if pos + length > end:
                raise _bad_envelope("unexpected end of file")
            payload = data[pos : pos + length]
            pos += length
            if pos < end:
                if data[pos : pos + 1] != b"\n":
                    raise _bad_envelope("missing newline after header or payload")
                pos += 1
        items.append(EnvelopeItem(item_headers, payload))
    return Envelope(headers, items)


def _bad_envelope(cause: str) -> SentryRequestError:
    return SentryRequestError(400, "invalid event envelope", cause)


def _line(data: bytes, pos: int) -> tuple[bytes, int]:
    newline = data.find(b"\n", pos)
    if newline < 0:
        return data[pos:], len(data)
    return data[pos:newline], newline + 1


def _json_object(line: bytes, cause: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        raise _bad_envelope(cause) from None
    if not isinstance(value, dict):
        raise _bad_envelope(cause)
    return value


# --- event fields -----------------------------------------------------------


def error_event_fields(
    payload: Mapping[str, Any], project_id: int | None
) -> dict[str, Any]:
    """The obsd fields (``kind="error"``) for one Sentry error or message event.

    Only the listed keys are set, each from a known place in the payload, so a
    sender can never write a reserved key obsd did not mean to set.
    """
    fields: dict[str, Any] = {
        events.KIND: events.ERROR,
        events.ID: _event_id(payload.get("event_id")) or events.new_event_id(),
        events.LEVEL: events.normalise_level(payload.get("level"), events.ERROR_LEVEL),
    }
    exception = _last_exception(payload)
    exc_type = _text(exception.get("type")) if exception else None
    exc_value = _text(exception.get("value")) if exception else None
    message = _message(payload)
    if message is None and exc_type is not None:
        message = f"{exc_type}: {exc_value}" if exc_value else exc_type
    fields[events.EVENT] = message if message is not None else "<no message>"
    timestamp = parse_timestamp(payload.get("timestamp"))
    if timestamp is not None:
        fields[events.TIMESTAMP] = timestamp
    if exc_type is not None:
        fields["exception_type"] = exc_type
    if exc_value is not None:
        fields["exception_value"] = exc_value
    stacktrace = exception.get("stacktrace") if exception else payload.get("stacktrace")
    frames = _frames(stacktrace)
    if frames:
        fields["frames"] = frames
    for name in (
        "culprit",
        "transaction",
        "release",
        "environment",
        "platform",
        "logger",
        "server_name",
    ):
        value = _text(payload.get(name))
        if value is not None:
            fields[name] = value
    if "server_name" in fields:
        fields[events.HOST] = fields["server_name"]
    sdk = payload.get("sdk")
    sdk_name = _text(sdk.get("name")) if isinstance(sdk, Mapping) else None
    if sdk_name is not None:
        fields["sdk"] = sdk_name
    tags = _tags(payload.get("tags"))
    if tags:
        fields[events.TAGS] = tags
    user = payload.get("user")
    user_id = _text(user.get("id")) if isinstance(user, Mapping) else None
    if user_id is not None:
        fields["user_id"] = user_id
    extra = payload.get("extra")
    if isinstance(extra, Mapping) and extra:
        fields["extra"] = dict(extra)
    if project_id is not None:
        fields["project_id"] = project_id
    return fields


def item_event_fields(
    item: EnvelopeItem, envelope_headers: Mapping[str, Any], project_id: int | None
) -> dict[str, Any]:
    """The obsd fields (``kind="sentry"``) summing up one non-error envelope item.

    Never raises: an item whose payload obsd cannot read still gets its type
    and size, since it is forwarded whole anyway.
    """
    item_type = item.type or "unknown"
    fields: dict[str, Any] = {
        events.KIND: events.SENTRY,
        events.EVENT: f"sentry.{item_type}",
        events.LEVEL: events.INFO,
        "item_type": item_type,
        "size": len(item.payload),
    }
    event_id = _event_id(envelope_headers.get("event_id"))
    payload: Mapping[str, Any] = {}
    if item_type != "attachment":
        payload = _lenient_json(item.payload)
    event_id = _event_id(payload.get("event_id")) or event_id
    if event_id is not None and item_type in (
        "transaction",
        "attachment",
        "user_report",
        "feedback",
        "profile",
        "event",
    ):
        fields[events.ID] = event_id
    sdk = envelope_headers.get("sdk")
    sdk_name = _text(sdk.get("name")) if isinstance(sdk, Mapping) else None
    if sdk_name is not None:
        fields["sdk"] = sdk_name
    summarise = _SUMMARIES.get(item_type)
    if summarise is not None:
        summarise(item, payload, fields)
    timestamp = parse_timestamp(payload.get("timestamp"))
    if timestamp is not None:
        fields[events.TIMESTAMP] = timestamp
    if project_id is not None:
        fields["project_id"] = project_id
    return fields


def envelope_event_fields(
    envelope: Envelope, project_id: int | None
) -> list[dict[str, Any]]:
    """One field dict per item: ``error_event_fields`` for events, else ``item_event_fields``.

    Raises:
        SentryRequestError: 400 if an ``event`` item is not a JSON object.
    """
    out = []
    for item in envelope.items:
        if item.type == "event":
            payload = parse_json(item.payload)
            if "event_id" not in payload and envelope.event_id is not None:
                payload = {**payload, "event_id": envelope.event_id}
            out.append(error_event_fields(payload, project_id))
        else:
            out.append(item_event_fields(item, envelope.headers, project_id))
    return out


def _summary_transaction(
    _item: EnvelopeItem, payload: Mapping[str, Any], fields: dict[str, Any]
) -> None:
    name = _text(payload.get("transaction"))
    if name is not None:
        fields[events.EVENT] = name
        fields["transaction"] = name
    contexts = payload.get("contexts")
    trace = contexts.get("trace") if isinstance(contexts, Mapping) else None
    if isinstance(trace, Mapping):
        for key in ("op", "status", "trace_id"):
            value = _text(trace.get(key))
            if value is not None:
                fields[key] = value
    start, end = (
        parse_timestamp(payload.get("start_timestamp")),
        parse_timestamp(payload.get("timestamp")),
    )
    if start is not None and end is not None:
        fields["duration_ms"] = round((end - start) * 1000, 3)
    spans = payload.get("spans")
    if isinstance(spans, list):
        fields["span_count"] = len(spans)
    _copy_text(payload, fields, "release", "environment", "platform", "server_name")


def _summary_session(
    _item: EnvelopeItem, payload: Mapping[str, Any], fields: dict[str, Any]
) -> None:
    _copy_text(payload, fields, "status", "sid")
    errors = payload.get("errors")
    if isinstance(errors, int) and not isinstance(errors, bool):
        fields["errors"] = errors
    if isinstance(payload.get("init"), bool):
        fields["init"] = payload["init"]
    _copy_attrs(payload, fields)


def _summary_sessions(
    _item: EnvelopeItem, payload: Mapping[str, Any], fields: dict[str, Any]
) -> None:
    totals: dict[str, int] = {}
    aggregates = payload.get("aggregates")
    for bucket in aggregates if isinstance(aggregates, list) else ():
        if not isinstance(bucket, Mapping):
            continue
        for name in ("exited", "errored", "abnormal", "crashed"):
            count = bucket.get(name)
            if isinstance(count, int) and not isinstance(count, bool):
                totals[name] = totals.get(name, 0) + count
    fields.update(totals)
    _copy_attrs(payload, fields)


def _summary_attachment(
    item: EnvelopeItem, _payload: Mapping[str, Any], fields: dict[str, Any]
) -> None:
    _copy_text(item.headers, fields, "filename", "content_type", "attachment_type")


def _summary_client_report(
    _item: EnvelopeItem, payload: Mapping[str, Any], fields: dict[str, Any]
) -> None:
    discarded = payload.get("discarded_events")
    total = 0
    for entry in discarded if isinstance(discarded, list) else ():
        quantity = entry.get("quantity") if isinstance(entry, Mapping) else None
        if isinstance(quantity, int) and not isinstance(quantity, bool):
            total += quantity
    fields["discarded"] = total


def _summary_check_in(
    _item: EnvelopeItem, payload: Mapping[str, Any], fields: dict[str, Any]
) -> None:
    _copy_text(
        payload,
        fields,
        "monitor_slug",
        "status",
        "check_in_id",
        "environment",
        "release",
    )
    duration = payload.get("duration")
    if isinstance(duration, int | float) and not isinstance(duration, bool):
        fields["duration"] = duration


def _summary_log(
    item: EnvelopeItem, payload: Mapping[str, Any], fields: dict[str, Any]
) -> None:
    entries = payload.get("items")
    count = item.headers.get("item_count")
    if isinstance(entries, list):
        count = len(entries)
    if isinstance(count, int) and not isinstance(count, bool):
        fields["item_count"] = count


_SUMMARIES: Final = {
    "transaction": _summary_transaction,
    "session": _summary_session,
    "sessions": _summary_sessions,
    "attachment": _summary_attachment,
    "client_report": _summary_client_report,
    "check_in": _summary_check_in,
    "log": _summary_log,
}


def _copy_text(source: Mapping[str, Any], fields: dict[str, Any], *names: str) -> None:
    for name in names:
        value = _text(source.get(name))
        if value is not None:
            fields[name] = value


def _copy_attrs(payload: Mapping[str, Any], fields: dict[str, Any]) -> None:
    attrs = payload.get("attrs")
    if isinstance(attrs, Mapping):
        _copy_text(attrs, fields, "release", "environment")


def _lenient_json(data: bytes) -> Mapping[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _event_id(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    candidate = value.replace("-", "").lower()
    return candidate if _HEX_ID_RE.fullmatch(candidate) else None


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return str(value)
    return None


def _message(payload: Mapping[str, Any]) -> str | None:
    """The formatted message: ``logentry`` (raven: ``sentry.interfaces.Message``) or ``message``.

    A ready ``formatted`` text wins; else a template is filled from its
    ``params`` as Sentry does (``%`` style), falling back to the bare template.
    """
    message = payload.get("message")
    candidates = [
        message,
        payload.get("logentry"),
        payload.get("sentry.interfaces.Message"),
    ]
    entries: list[Mapping[str, Any]] = [
        entry for entry in candidates if isinstance(entry, Mapping)
    ]
    for entry in entries:
        formatted = _text(entry.get("formatted"))
        if formatted is not None:
            return formatted
    template = _text(message) if not isinstance(message, Mapping) else None
    params: Any = None
    for entry in entries:
        template = template or _text(entry.get("message"))
        params = params or entry.get("params")
    if template is not None and isinstance(params, list | dict) and params:
        try:
            return template % (tuple(params) if isinstance(params, list) else params)
        except (TypeError, ValueError, KeyError):
            return template
    return template


def _last_exception(payload: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for key in ("exception", "sentry.interfaces.Exception"):
        container = payload.get(key)
        values = (
            container.get("values") if isinstance(container, Mapping) else container
        )
        if isinstance(values, list):
            found = [value for value in values if isinstance(value, Mapping)]
            if found:
                return found[-1]
        elif isinstance(container, Mapping) and "type" in container:
            return container
    return None


def _frames(stacktrace: Any) -> list[str]:
    """``module:function:lineno`` for the innermost ``MAX_FRAMES`` frames, innermost last."""
    if not isinstance(stacktrace, Mapping):
        return []
    frames = stacktrace.get("frames")
    if not isinstance(frames, list):
        return []
    out = []
    for frame in frames[-MAX_FRAMES:]:
        if not isinstance(frame, Mapping):
            continue
        where = (
            _text(frame.get("module"))
            or _text(frame.get("filename"))
            or _text(frame.get("abs_path"))
            or "?"
        )
        function = _text(frame.get("function")) or "?"
        lineno = frame.get("lineno")
        line = (
            str(lineno)
            if isinstance(lineno, int) and not isinstance(lineno, bool)
            else "?"
        )
        out.append(f"{where}:{function}:{line}")
    return out


def _tags(value: Any) -> dict[str, str]:
    """Tags as a dict: raven sends a dict, sentry-sdk a dict or a list of pairs."""
    pairs: list[Any]
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, list):
        pairs = [
            pair for pair in value if isinstance(pair, list | tuple) and len(pair) == 2
        ]
    else:
        return {}
    out = {}
    for key, item in pairs:
        name, text = _text(key), _text(item)
        if name is not None and text is not None:
            out[name] = text
    return out


def parse_timestamp(value: Any) -> float | None:
    """A Sentry timestamp (epoch number or ISO 8601, naive meaning UTC) as UTC epoch seconds."""
    number: float | None = None
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and value:
        try:
            number = float(value)
        except ValueError:
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                return None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            number = moment.timestamp()
    if number is None or not math.isfinite(number) or number < 0:
        return None
    return number
