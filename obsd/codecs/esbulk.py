"""Elasticsearch ``_bulk`` documents, NDJSON lines, index names and response verdicts.

Pure: it turns events into the bytes the Elasticsearch output posts and reads
what the cluster answers, so the output only batches, sends and retries.
Written against Elasticsearch 7.x/8.x and OpenSearch 1.x/2.x, which share the
``_bulk`` API; the samples in ``tests/data/es/`` were recorded from OpenSearch 2.19.

Documents are shaped the way Logstash and Vector write them, so Kibana and
OpenSearch Dashboards users find what they expect:

* ``@timestamp`` is the event's own ``timestamp`` as RFC 3339 UTC with
  microseconds (``2026-11-24T01:00:00.123456Z``).  ES's ``date`` type indexes
  milliseconds; ``_source`` keeps the micros for ordering.
* ``timestamp`` itself is *not* indexed: ``@timestamp`` carries it, and a
  dynamically mapped epoch float becomes a 32-bit ``float`` that rounds to
  about two minutes.  ``received_at`` is written as RFC 3339 for the same reason.
* private ``_`` keys (top level) are never indexed.
* NaN and infinities, which JSON cannot carry, become ``null``; bytes, sets,
  datetimes and other objects become strings or lists.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from typing import Any, Final, TypeGuard

import orjson

from obsd import events

TIMESTAMP_FIELD: Final = "@timestamp"
DEFAULT_INDEX: Final = "obsd-%Y.%m.%d"

# Outcomes of one bulk item.
OK: Final = "ok"
RETRY: Final = "retry"
REJECT: Final = "reject"

# Seconds since the epoch that RFC 3339 can spell (years 0001..9999).
_MIN_TIME: Final = -62135596800.0
_MAX_TIME: Final = 253402300799.0

#: orjson hands datetimes to ``_json_default`` too, so both encoders spell them alike
_ORJSON_OPTIONS: Final = orjson.OPT_PASSTHROUGH_DATETIME

_DUMPS_OPTIONS: Final[dict[str, Any]] = {
    "ensure_ascii": False,
    "separators": (",", ":"),
    "allow_nan": False,
}


# --- time -----------------------------------------------------------------


def _valid_time(value: Any) -> TypeGuard[int | float]:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and _MIN_TIME <= value <= _MAX_TIME  # False for NaN
    )


def event_time(event: Mapping[str, Any]) -> float:
    """Return the event's own time: ``timestamp``, else ``received_at``, else now.

    The output passes this to ``index_name`` so a document's index and its
    ``@timestamp`` always agree.
    """
    for key in (events.TIMESTAMP, events.RECEIVED_AT):
        value = event.get(key)
        if _valid_time(value):
            return float(value)
    return time.time()


@lru_cache(maxsize=1024)
def _second_prefix(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def format_timestamp(timestamp: float) -> str:
    """Format epoch seconds as RFC 3339 UTC with microseconds, ``...T01:02:03.000004Z``."""
    second, micros = divmod(round(timestamp * 1_000_000), 1_000_000)
    return f"{_second_prefix(second)}.{micros:06d}Z"


# --- index names ----------------------------------------------------------

_DIRECTIVE = re.compile(r"%(.)")
_SUB_DAY = frozenset("HIMSpfsXcTRrlkPz")  # anything finer than a day, or unknown to us
_SUB_HOUR = frozenset("MSfsXcTRrz")


@lru_cache(maxsize=64)
def _bucket_seconds(pattern: str) -> int:
    """How long one index name stays valid for ``pattern``: a day, an hour or a second."""
    directives = set(_DIRECTIVE.findall(pattern))
    if directives & _SUB_HOUR:
        return 1
    if directives & _SUB_DAY:
        return 3600
    return 86400


@lru_cache(maxsize=1024)
def _name_for_bucket(pattern: str, start: int) -> str:
    return time.strftime(pattern, time.gmtime(start)).lower()


def index_name(pattern: str, timestamp: float) -> str:
    """Return the index for an event at ``timestamp``: ``pattern`` through UTC strftime.

    Names are lower-cased (Elasticsearch refuses capitals, so ``%b`` would
    otherwise break).  Results are cached per day (per hour or second when
    the pattern asks for ``%H`` or finer), so the hot path is two cache hits.
    ``timestamp`` should come from ``event_time``; an out-of-range or
    non-finite value raises ``ValueError``.
    """
    if not _valid_time(timestamp):
        msg = f"timestamp out of range for an index name: {timestamp!r}"
        raise ValueError(msg)
    bucket = _bucket_seconds(pattern)
    return _name_for_bucket(pattern, int(timestamp // bucket) * bucket)


def index_glob(pattern: str) -> str:
    """Return the wildcard that matches every index ``pattern`` makes.

    ``obsd-%Y.%m.%d`` gives ``obsd-*``; a pattern without directives (a data
    stream's name) gives itself plus ``*``.  A pattern that starts with a
    directive keeps its literal parts (``%Y-obsd`` gives ``*-obsd``) so a
    template never matches every index.
    """
    lowered = pattern.lower()
    match = _DIRECTIVE.search(lowered)
    if match is None:
        return lowered + "*"
    if match.start() > 0:
        return lowered[: match.start()] + "*"
    return re.sub(r"\*+", "*", _DIRECTIVE.sub("*", lowered))


# --- documents ------------------------------------------------------------


def _clean(value: Any) -> Any:
    """Return ``value`` with everything JSON cannot carry replaced."""
    if isinstance(value, str) or value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): _clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(item) for item in value]
    return _json_default(value)


def _json_default(value: Any) -> Any:
    """Spell a non-JSON value: bytes as text, datetimes as ISO 8601, anything else via ``str``."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return list(value)
    return str(value)


def _document(event: Mapping[str, Any], when: float | None = None) -> dict[str, Any]:
    """Build the ``_source`` without cleaning values (the fast path)."""
    stamp = format_timestamp(event_time(event) if when is None else when)
    doc: dict[str, Any] = {TIMESTAMP_FIELD: stamp, **event}
    doc.pop(events.TIMESTAMP, None)
    for key in [key for key in doc if key[:1] == "_"]:
        del doc[key]
    received = doc.get(events.RECEIVED_AT)
    if received is not None and _valid_time(received):
        doc[events.RECEIVED_AT] = format_timestamp(received)
    return doc


def encode_document(event: Mapping[str, Any]) -> dict[str, Any]:
    """Return the JSON-safe ``_source`` for ``event`` (see the module docstring)."""
    return {key: _clean(value) for key, value in _document(event).items()}


def _dumps(doc: Mapping[str, Any]) -> bytes:
    """JSON bytes of ``doc``: orjson, several times faster than the standard library, and
    the standard encoder for what orjson refuses (integers past 64 bits, lone surrogates,
    keys that are not strings).  Both write NaN and infinities as ``null``."""
    try:
        return orjson.dumps(doc, default=_json_default, option=_ORJSON_OPTIONS)
    except TypeError:
        pass
    try:
        text = json.dumps(doc, default=_json_default, **_DUMPS_OPTIONS)
    except (ValueError, TypeError):  # NaN/Infinity, or keys json cannot spell
        text = json.dumps(_clean(doc), default=_json_default, **_DUMPS_OPTIONS)
    return text.encode("utf-8", "replace")  # lone surrogates become "?"


@lru_cache(maxsize=256)
def _action_prefix(index: str, data_stream: bool) -> bytes:
    op = "create" if data_stream else "index"
    return b'{"%s":{"_index":%s' % (op.encode(), json.dumps(index).encode())


def encode_action(event: Mapping[str, Any], index: str, data_stream: bool) -> bytes:
    """Return the action line (with its ``\\n``) for ``event``.

    ``_id`` is the event's ``id``, so a retried or replayed batch overwrites
    (``index``) or is refused as a duplicate (``create``, 409) but never
    duplicates.  Data streams only accept ``create``.
    """
    event_id = event.get(events.ID)
    prefix = _action_prefix(index, data_stream)
    if isinstance(event_id, str) and event_id:
        if event_id.isascii() and event_id.isalnum():  # obsd's and Sentry's hex ids
            return b'%s,"_id":"%s"}}\n' % (prefix, event_id.encode())
        return prefix + b',"_id":' + json.dumps(event_id).encode() + b"}}\n"
    return prefix + b"}}\n"


def encode_bulk_lines(
    event: Mapping[str, Any], index: str, data_stream: bool, when: float | None = None
) -> bytes:
    """Return the two NDJSON lines (action, source) for ``event``, ending in ``\\n``.

    ``when`` is the event's time when the caller has it already (for the index name).
    """
    return encode_action(event, index, data_stream) + _dumps(_document(event, when)) + b"\n"


# --- templates -------------------------------------------------------------


def index_template(
    name_pattern: str = DEFAULT_INDEX, *, data_stream: bool = False, priority: int = 200
) -> dict[str, Any]:
    """Return a composable index template body for ``PUT _index_template/<name>``.

    ``name_pattern`` is the output's ``index`` setting (a strftime pattern or
    a data stream's name); ``index_glob`` turns it into ``index_patterns``.
    Maps ``@timestamp``/``received_at`` as dates, ``id level kind source
    host`` as keywords, ``event`` as text with a ``keyword`` subfield and
    ``value`` as a double; everything else stays dynamic.  Two templates
    whose patterns overlap must differ in ``priority`` (the cluster refuses
    the second with a 400), and the default 200 is above Elasticsearch's
    built-in ``logs-*-*`` (100).
    """
    keyword = {"type": "keyword", "ignore_above": 1024}
    body: dict[str, Any] = {
        "index_patterns": [index_glob(name_pattern)],
        "priority": priority,
        "template": {
            "mappings": {
                "properties": {
                    TIMESTAMP_FIELD: {"type": "date"},
                    events.RECEIVED_AT: {"type": "date"},
                    events.ID: keyword,
                    events.LEVEL: keyword,
                    events.KIND: keyword,
                    events.SOURCE: keyword,
                    events.HOST: keyword,
                    events.EVENT: {"type": "text", "fields": {"keyword": keyword}},
                    events.VALUE: {"type": "double"},
                    # spans (OpenTelemetry) and the logs and errors that point at them
                    "trace_id": keyword,
                    "span_id": keyword,
                    "parent_span_id": keyword,
                    "service": keyword,
                    "duration_ms": {"type": "double"},
                },
            },
        },
        "_meta": {"managed_by": "obsd"},
    }
    if data_stream:
        body["data_stream"] = {}
    return body


# --- responses --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    """What became of one document of a bulk request.

    ``result`` is ``OK``, ``RETRY`` (send it again later) or ``REJECT``
    (dead-letter it); ``status`` is the item's HTTP status (0 when the
    response said nothing) and ``reason`` ES's ``type: reason`` text.
    """

    result: str
    status: int
    reason: str = ""
    error_type: str = ""


_ALL_OK: Final = ItemOutcome(OK, 200)
# A bulk response starts {"took":N,"errors":false,...}; look only this far for it.
_ERRORS_FALSE: Final = b'"errors":false'
_HEAD: Final = 64


def _reason(error: Any) -> tuple[str, str]:
    """Return ``(type, "type: reason; caused by type: reason")`` from an ES error object."""
    if not isinstance(error, Mapping):
        return "", str(error) if error is not None else ""
    error_type = str(error.get("type", ""))
    text = f"{error_type}: {error.get('reason', '')}"
    cause = error.get("caused_by")
    if isinstance(cause, Mapping):
        text += f"; caused by {cause.get('type', '')}: {cause.get('reason', '')}"
    return error_type, text


def _verdict(status: int, error: Any) -> ItemOutcome:
    if error is None and 200 <= status < 300:
        return _ALL_OK if status == 200 else ItemOutcome(OK, status)
    error_type, reason = _reason(error)
    if status == 409 and error_type == "version_conflict_engine_exception":
        return ItemOutcome(OK, status, reason, error_type)  # already indexed
    if error_type == "cluster_block_exception" or status == 429 or status >= 500:
        return ItemOutcome(RETRY, status, reason, error_type)
    if status == 0 and error is None:
        return ItemOutcome(RETRY, 0, "no status in bulk response item")
    return ItemOutcome(REJECT, status, reason, error_type)


def _status(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def classify_bulk_response(body: bytes, count: int) -> list[ItemOutcome]:
    """Return one ``ItemOutcome`` per document of a ``_bulk`` request of ``count`` documents.

    ``body`` is the response body, whatever the HTTP status: an items list,
    or a whole-request error (``{"error": ..., "status": 429}``) that then
    applies to every document.  Retried: 429, 5xx, any
    ``cluster_block_exception`` (a flood-stage ``read_only_allow_delete``
    answers 429, a write block 403).  OK: 2xx, and 409 version conflicts
    (the ``_id`` is already indexed).  Rejected: every other error (mapping
    conflicts, 400s, closed or invalid indices).  An unreadable body, or
    items missing from it, means retry.  Never raises.

    A response that says ``"errors":false`` is not read item by item: every
    document is ``OK`` with status 200, which keeps the common case cheap.
    """
    if body.startswith(b'{"took":') and _ERRORS_FALSE in body[:_HEAD]:
        return [_ALL_OK] * count
    try:
        parsed = json.loads(body)
    except ValueError as exc:  # includes UnicodeDecodeError
        return [ItemOutcome(RETRY, 0, f"unreadable bulk response: {exc}")] * count
    if not isinstance(parsed, Mapping):
        return [ItemOutcome(RETRY, 0, "bulk response is not a JSON object")] * count
    items = parsed.get("items")
    if not isinstance(items, list):
        if "error" in parsed:
            return [_verdict(_status(parsed.get("status")), parsed["error"])] * count
        return [ItemOutcome(RETRY, 0, "bulk response has no items")] * count
    outcomes: list[ItemOutcome] = []
    for item in items[:count]:
        result = next(iter(item.values()), None) if isinstance(item, Mapping) and item else None
        if not isinstance(result, Mapping):
            outcomes.append(ItemOutcome(RETRY, 0, "unreadable bulk response item"))
            continue
        outcomes.append(_verdict(_status(result.get("status")), result.get("error")))
    missing = count - len(outcomes)
    if missing > 0:
        outcomes.extend([ItemOutcome(RETRY, 0, "item missing from bulk response")] * missing)
    return outcomes
