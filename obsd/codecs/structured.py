"""Merge a structured message body (structlog JSON, ``@cee:``, TAI64N labels) into an event.

Programs that log with structlog's ``JSONRenderer`` send ``{"event": ..., ...}``
as their syslog message; obsd makes those keys event fields instead of leaving
a JSON string.  The body's ``event`` (else ``msg``, else ``message``) becomes
the event text; its ``level`` and ``timestamp`` are normalised into obsd's;
every other key is kept, under ``obsd.events.COLLISION_PREFIX`` when it would
overwrite a reserved key, a private ``_`` key or a field the syslog header
already gave (``facility``, ``appname``...).

runit's svlogd puts a TAI64N label (``@400000005270e0d604afce64``) before each
line; it becomes the timestamp.
"""

from __future__ import annotations

import datetime
import json
import math
from typing import Any, Final

from obsd.codecs import jsonread
from obsd.codecs.timestamps import parse_timestamp_text
from obsd.events import (
    COLLISION_PREFIX,
    EVENT,
    LEVEL,
    TIMESTAMP,
    keep_reserved_safe,
    normalise_level,
)

__all__ = ["apply_body", "parse_tai64n"]

#: TAI64 label of the Unix epoch: 2**62 + the 10 s TAI-UTC offset of 1970 (libtai's convention).
_TAI64_EPOCH: Final = (1 << 62) + 10
_TAI64N_LEN: Final = 25  # "@" + 16 hex seconds + 8 hex nanoseconds
_HEX: Final = frozenset("0123456789abcdefABCDEF")
_CEE: Final = "@cee:"
#: Where a body's message text may be; the first present wins.
_EVENT_KEYS: Final = (EVENT, "msg", "message")
#: Epoch numbers above these are milliseconds, microseconds, nanoseconds.
_MILLIS: Final = 1e11
_MICROS: Final = 1e14
_NANOS: Final = 1e17


def parse_tai64n(label: str) -> float | None:
    """Return the Unix time of ``@`` + 24 hex digits, or None if it is not a label."""
    if len(label) != _TAI64N_LEN or label[0] != "@" or not _HEX.issuperset(label[1:]):
        return None
    seconds = int(label[1:17], 16) - _TAI64_EPOCH
    return seconds + int(label[17:], 16) / 1e9


def _epoch_number(value: float) -> float:
    """Seconds from an epoch number that may be in milli-, micro- or nanoseconds."""
    if value > _NANOS:
        return value / 1e9
    if value > _MICROS:
        return value / 1e6
    if value > _MILLIS:
        return value / 1e3
    return float(value)


def _timestamp(value: Any, tz: datetime.tzinfo) -> float | None:
    """A body's ``timestamp`` as epoch seconds: ISO strings or epoch numbers."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
        return (
            _epoch_number(number)
            if math.isfinite(number) and abs(number) < 1e20
            else None
        )
    if isinstance(value, str):
        found = parse_timestamp_text(value, tz)
        if found is not None:
            return found
        try:
            return _epoch_number(float(value)) if value.strip() else None
        except ValueError:
            return None
    return None


def _merge_json(
    out: dict[str, Any], body: dict[str, Any], text: str, tz: datetime.tzinfo
) -> None:
    fields = dict(body)
    message: Any = text
    for key in _EVENT_KEYS:
        if key in fields:
            message = fields.pop(key)
            break
    out[EVENT] = (
        message if isinstance(message, str) else json.dumps(message, ensure_ascii=False)
    )
    if LEVEL in fields:
        level = fields.pop(LEVEL)
        out[LEVEL] = normalise_level(level, out[LEVEL])
    if TIMESTAMP in fields:
        stamp = fields[TIMESTAMP]
        found = _timestamp(stamp, tz)
        if found is not None:
            del fields[TIMESTAMP]
            out[TIMESTAMP] = found
    header = {key: fields.pop(key) for key in list(fields) if key in out}
    for key, value in header.items():
        out[COLLISION_PREFIX + key] = value
    keep_reserved_safe(fields, out)


def apply_body(out: dict[str, Any], tz: datetime.tzinfo) -> None:
    """Read ``out["event"]`` as a structured body and merge what it holds into ``out``."""
    text: str = out[EVENT]
    if text[:1] == "@" and len(text) >= _TAI64N_LEN:
        stamp = parse_tai64n(text[:_TAI64N_LEN])
        if stamp is not None and (len(text) == _TAI64N_LEN or text[_TAI64N_LEN] == " "):
            out[TIMESTAMP] = stamp
            text = text[_TAI64N_LEN + 1 :]
            out[EVENT] = text
    body = text
    if body[:5] == _CEE:
        body = body[5:].lstrip(" ")
    elif body[:1] != "{":
        return
    body = body.rstrip()
    if body[:1] != "{" or body[-1:] != "}":
        return
    try:
        parsed = jsonread.loads(body)
    except (ValueError, RecursionError):
        return
    if isinstance(parsed, dict):
        _merge_json(out, parsed, text, tz)
