"""Syslog timestamps to UTC epoch seconds, fast: per-second caches instead of datetime.

RFC 5424 stamps carry an offset; RFC 3164 stamps carry neither zone nor year,
so they are read in a configured timezone and given the year that puts them
nearest the time of receipt.  The caches are pure memos (bounded, cleared when
full); they hold no configuration.
"""

from __future__ import annotations

import calendar
import datetime
import re
from typing import Any, Final

__all__ = [
    "ISO_TS",
    "RFC3339",
    "fraction",
    "iso_epoch",
    "local_seconds",
    "nearest_year_epoch",
    "parse_timestamp_text",
]

#: RFC 3339 as RFC 5424 uses it; lower-case t/z (RFC 3339 5.6 NOTE), any number of
#: fraction digits, and a missing offset (read in the configured timezone) are accepted.
RFC3339: Final = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d+))?([Zz]|[+-]\d\d:\d\d)?",
    re.ASCII,
)
#: An ISO 8601 / RFC 3339 timestamp opening an RFC 3164-style header (rsyslog's
#: RSYSLOG_ForwardFormat), a space instead of T allowed.
ISO_TS: Final = re.compile(
    r"(?:(\d{1,10}):\s+)?[*.]?(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?"
    r"([Zz]|[+-]\d\d:?\d\d)?:?(?:\s+|$)",
    re.ASCII,
)
_CACHE_LIMIT: Final = 4096
#: "YYYY-MM-DDTHH:MM:SS" -> UTC epoch seconds, or None for an impossible date.
_utc_cache: dict[str, int | None] = {}
#: (timezone, y, m, d, H, M, S) -> UTC epoch seconds, or None.
_local_cache: dict[tuple[Any, ...], float | None] = {}
#: "+hh:mm" -> seconds east of UTC, or None.
_offset_cache: dict[str, int | None] = {}
#: day number -> UTC year.
_year_cache: dict[int, int] = {}
#: How far ahead of the receiver a year-less stamp may be (clock skew, year turn).
FUTURE_SLACK: Final = 31 * 86400.0


def _utc_seconds(
    key: str, y: int, mo: int, d: int, h: int, mi: int, s: int
) -> int | None:
    """Epoch seconds of a UTC wall time, stored per second; None if it does not exist."""
    leap = s == 60  # RFC 3339 allows a leap second; count it as the next second
    try:
        datetime.datetime(y, mo, d, h, mi, 59 if leap else s)
    except ValueError:
        value = None
    else:
        value = calendar.timegm((y, mo, d, h, mi, 59 if leap else s, 0, 0, 0)) + leap
    if len(_utc_cache) >= _CACHE_LIMIT:
        _utc_cache.clear()
    _utc_cache[key] = value
    return value


def local_seconds(
    tz: datetime.tzinfo, y: int, mo: int, d: int, h: int, mi: int, s: int
) -> float | None:
    """Epoch seconds of a wall time in ``tz``, cached per second; None if impossible."""
    key = (tz, y, mo, d, h, mi, s)
    try:
        return _local_cache[key]
    except KeyError:
        pass
    leap = s == 60
    try:
        value: float | None = (
            datetime.datetime(y, mo, d, h, mi, 59 if leap else s, tzinfo=tz).timestamp()
            + leap
        )
    except (ValueError, OverflowError):
        value = None
    if len(_local_cache) >= _CACHE_LIMIT:
        _local_cache.clear()
    _local_cache[key] = value
    return value


def _offset_seconds(offset: str) -> int | None:
    """Seconds east of UTC for ``Z``, ``+hh:mm`` or ``+hhmm``; None if out of range."""
    try:
        return _offset_cache[offset]
    except KeyError:
        pass
    if offset in ("Z", "z"):
        value: int | None = 0
    else:
        hours = int(offset[1:3])
        minutes = int(offset[-2:])
        if hours > 23 or minutes > 59:
            value = None
        else:
            value = hours * 3600 + minutes * 60
            if offset[0] == "-":
                value = -value
    if len(_offset_cache) >= _CACHE_LIMIT:
        _offset_cache.clear()
    _offset_cache[offset] = value
    return value


def fraction(digits: str | None) -> float:
    """Seconds of a fraction's digits (any number of them)."""
    return float("0." + digits) if digits else 0.0


def iso_epoch(match: re.Match[str], first: int, tz: datetime.tzinfo) -> float | None:
    """Epoch of an RFC 3339 stamp matched by ``RFC3339`` (``first`` 1) or ``ISO_TS`` (2).

    ``first`` is the group number of the year; the six date-time groups, the
    fraction and the offset follow it.  No offset means ``tz``; None if the
    stamp names a time that does not exist.
    """
    offset = match.group(first + 7)
    frac = match.group(first + 6)
    if offset is None:
        y, mo, d, h, mi, s = map(
            int,
            match.group(first, first + 1, first + 2, first + 3, first + 4, first + 5),
        )
        local = local_seconds(tz, y, mo, d, h, mi, s)
        return None if local is None else local + (float("0." + frac) if frac else 0.0)
    shift = _offset_seconds(offset)
    if shift is None:
        return None
    key = match.string[match.start(first) : match.end(first + 5)]
    try:
        base = _utc_cache[key]
    except KeyError:
        y, mo, d, h, mi, s = map(
            int,
            match.group(first, first + 1, first + 2, first + 3, first + 4, first + 5),
        )
        base = _utc_seconds(key, y, mo, d, h, mi, s)
    if base is None:
        return None
    return base - shift + (float("0." + frac) if frac else 0.0)


def parse_timestamp_text(text: str, tz: datetime.tzinfo) -> float | None:
    """Read an ISO 8601 / RFC 3339 stamp (``T`` or space; offset optional) as epoch."""
    match = ISO_TS.fullmatch(text.strip())
    if match is None or match.group(1) is not None:
        return None
    return iso_epoch(match, 2, tz)


def nearest_year_epoch(
    received_at: float, tz: datetime.tzinfo, mo: int, d: int, h: int, mi: int, s: int
) -> float | None:
    """Epoch of a year-less stamp, by the nearest-year rule.

    Of the years around the receiver's, take the latest that
    puts the stamp no more than ``FUTURE_SLACK`` ahead of ``received_at``: logs
    are about the past, but a sender's clock may run a little ahead (a
    ``Dec 31`` line received on Jan 1 is last year's; a ``Jan 1`` line
    received on Dec 31 is next year's).  Feb 29 falls to the nearest leap year.
    """
    year = _year_of(received_at)
    limit = received_at + FUTURE_SLACK
    best: float | None = None
    for candidate in (year + 1, year, year - 1, year - 2, year - 3, year - 4):
        value = local_seconds(tz, candidate, mo, d, h, mi, s)
        if value is not None and value <= limit:
            best = value
            break
    return best


def _year_of(epoch: float) -> int:
    """The UTC year of ``epoch``, cached per day."""
    day = int(epoch // 86400)
    year = _year_cache.get(day)
    if year is None:
        year = datetime.datetime.fromtimestamp(day * 86400, datetime.UTC).year
        if len(_year_cache) >= _CACHE_LIMIT:
            _year_cache.clear()
        _year_cache[day] = year
    return year
