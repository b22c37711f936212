"""Events as JSON lines: sorted keys, RFC 3339 UTC time stamps, no NaN, valid UTF-8, compact.

Pure.  Used by the file output and anything else that writes events as text.
"""

from __future__ import annotations

import datetime
import json
import math
from typing import Any

import orjson

_UTC = datetime.UTC
_dumps = json.JSONEncoder(
    sort_keys=True, ensure_ascii=False, allow_nan=False, separators=(",", ":")
).encode
#: orjson (several times faster) first; it hands datetimes on (to fail over to the
#: standard path, which spells them with repr like any other object) and refuses what
#: the standard path must clean: integers past 64 bits, lone surrogates, other objects
_FAST_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_APPEND_NEWLINE


_last_second: list[object] = [None, ""]


def rfc3339(timestamp: float) -> str:
    """UTC epoch seconds as RFC 3339 with microseconds: ``2026-11-24T01:02:03.000004Z``.

    The date and time of day are formatted once per second (events arrive in
    time order, so consecutive ones share it) and only the microseconds per call.
    """
    micros = round(timestamp * 1_000_000)
    second, fraction = divmod(micros, 1_000_000)
    if _last_second[0] != second:
        stamp = datetime.datetime.fromtimestamp(second, _UTC)
        _last_second[1] = stamp.strftime("%Y-%m-%dT%H:%M:%S")
        _last_second[0] = second
    return f"{_last_second[1]}.{fraction:06d}Z"


def _clean(value: Any) -> Any:
    """Make a value JSON-safe: NaN/inf become null, bytes become text, others repr."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str | int | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return repr(value)


def encode_json_line(event: dict[str, Any], timestamp_key: str = "timestamp") -> bytes:
    """One event as a JSON line, private ``_`` keys left out."""
    doc = dict(event)
    for key in [k for k in doc if k[:1] == "_"]:
        del doc[key]
    stamp = doc.get(timestamp_key)
    if isinstance(stamp, int | float) and not isinstance(stamp, bool) and math.isfinite(stamp):
        doc[timestamp_key] = rfc3339(stamp)
    try:
        return orjson.dumps(doc, option=_FAST_OPTIONS)
    except TypeError:
        pass
    try:
        text = _dumps(doc)
    except (ValueError, TypeError):
        text = _dumps(_clean(doc))
    # lone surrogates (from surrogateescape'd input) would make invalid UTF-8
    return text.encode("utf-8", "replace") + b"\n"
