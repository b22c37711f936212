"""InfluxDB's line protocol, without Twisted: ``measurement,tags fields timestamp``.

One metric event is one line.  StatsD metrics use their base name as the
measurement and their statistic as the field (``myapp.requests count=5``,
``rate=0.5``, ``mean=…``), the shape Telegraf's statsd input writes, so
InfluxDB merges the statistics of one flush into one point; every other
metric (derived metrics, Graphite and OTLP points, obsd's own) is its event
name with a ``value`` field.  Values are always floats, so a series never
changes field type between flushes.

Escaping follows the line-protocol reference: commas and spaces in
measurements; commas, ``=`` and spaces in tag keys, tag values and field keys.
Line breaks cannot be escaped at all and become spaces; a trailing backslash,
which would escape the separator after it, is dropped.  Empty tag values are
left out (InfluxDB refuses them).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Final

from obsd import events

PRECISIONS: Final = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}

_BREAKS: Final = str.maketrans({"\n": " ", "\r": " "})
_MEASUREMENT: Final = str.maketrans({",": "\\,", " ": "\\ "})
_KEY: Final = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})


class NotFinite(ValueError):  # noqa: N818 - a value InfluxDB cannot store, counted not logged
    """NaN or an infinity: InfluxDB has no way to store it."""


def _clean(text: str, table: dict[int, str]) -> str:
    text = text.translate(_BREAKS).rstrip("\\")
    return text.translate(table)


def escape_measurement(name: str) -> str:
    """A measurement name as line protocol writes it."""
    return _clean(name, _MEASUREMENT)


def escape_key(text: str) -> str:
    """A tag key, tag value or field key as line protocol writes it."""
    return _clean(text, _KEY)


def format_float(value: float) -> str:
    """A float field value: Python's shortest round-trip form (InfluxDB parses it exactly)."""
    return repr(float(value))


def encode_line(
    measurement: str,
    tags: Iterable[tuple[str, str]],
    fields: Mapping[str, float],
    timestamp: int,
) -> str:
    """One line, newline-terminated; tags sorted by key as InfluxDB recommends."""
    name = escape_measurement(measurement)
    if not name:
        raise ValueError("empty measurement name")
    tag_text = "".join(
        f",{k}={v}"
        for k, v in sorted((escape_key(k), escape_key(v)) for k, v in tags)
        if k and v
    )
    field_text = ",".join(f"{escape_key(k)}={format_float(v)}" for k, v in fields.items())
    return f"{name}{tag_text} {field_text} {timestamp}\n"


def timestamp_in(seconds: float, precision: str) -> int:
    """Seconds since the epoch in ``precision`` (s, ms, us or ns), truncated as carbon does."""
    return int(seconds * PRECISIONS[precision])


def metric_line(
    event: Mapping[str, Any], tag_fields: Iterable[str], precision: str, now: float
) -> str:
    """A metric event as one line; ``NotFinite`` for NaN and infinities, ValueError otherwise."""
    value = event.get(events.VALUE)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"value is not a number: {value!r}")
    if not math.isfinite(value):
        raise NotFinite(f"value is not finite: {value!r}")
    base = event.get(events.METRIC_NAME)
    stat = event.get(events.STAT)
    if isinstance(base, str) and base and isinstance(stat, str) and stat:
        measurement, field = base, stat
    else:
        measurement, field = str(event.get(events.EVENT, "")), events.STAT_VALUE
    tags: dict[str, str] = {}
    for name in tag_fields:
        found = event.get(name)
        if found is not None and found != "":
            tags[name] = str(found)
    metric_type = event.get(events.METRIC_TYPE)
    if isinstance(metric_type, str) and metric_type:
        tags[events.METRIC_TYPE] = metric_type
    raw_tags = event.get(events.TAGS)
    if isinstance(raw_tags, Mapping):
        # the metric's own tags win over event fields of the same name
        tags.update((str(k), str(v)) for k, v in raw_tags.items())
    when = event.get(events.TIMESTAMP)
    seconds = float(when) if isinstance(when, int | float) else now
    stamp = timestamp_in(seconds, precision)
    return encode_line(measurement, tags.items(), {field: float(value)}, stamp)
