"""Partial aggregates on the wire: a ``statsd_partial`` event to and from each series' partial.

What an agent's ``PartialAggregator`` hands the relay output, and what
central's merge parses back; every field is checked, since central takes
these from the network.
"""

from __future__ import annotations

from typing import Any

from obsd import events
from obsd.aggregation.partials import (
    INTERVAL,
    INTERVAL_LENGTH,
    PARTIAL,
    PARTIAL_VERSION,
    CounterPartial,
    GaugePartial,
    SeriesKey,
    SeriesPartial,
    SetPartial,
    TimerPartial,
)


def partial_event(
    key: SeriesKey, part: SeriesPartial, interval: int, length: float
) -> dict[str, Any]:
    """A partial as the fields of a ``statsd_partial`` event (relay wire and Kafka safe)."""
    _, name, tags = key
    payload = part.payload()
    payload["v"] = PARTIAL_VERSION
    return {
        events.EVENT: name,
        events.METRIC_NAME: name,
        events.METRIC_TYPE: part.metric_type,
        events.TAGS: _tags_dict(tags),
        events.VALUE: _headline(part),
        events.TIMESTAMP: (interval + 1) * length,
        INTERVAL: interval,
        INTERVAL_LENGTH: length,
        PARTIAL: payload,
    }


def _headline(part: SeriesPartial) -> float:
    """A number for tools that show ``value``: sum, gauge value, members or samples."""
    if isinstance(part, CounterPartial):
        return part.total
    if isinstance(part, GaugePartial):
        return (part.value or 0.0) + part.delta
    if isinstance(part, SetPartial):
        return float(len(part.members))
    return float(part.n)


def _tags_dict(tags: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for tag in tags:
        key, colon, value = tag.partition(":")
        out[key] = value if colon else "true"
    return out


class PartialError(ValueError):
    """An event that is not a partial this version can merge."""


def parse_partial(event: dict[str, Any]) -> tuple[SeriesKey, SeriesPartial, int, float, str]:
    """An event back to (key, partial, interval, interval length, host).

    Raises:
        PartialError: a field is missing, of the wrong type, or from a newer version.
    """
    try:
        payload = event[PARTIAL]
        if payload.get("v") != PARTIAL_VERSION:
            raise PartialError(f"unknown partial version {payload.get('v')!r}")
        name = event[events.METRIC_NAME]
        if not isinstance(name, str) or not name:
            raise PartialError("no metric name")
        tags = event.get(events.TAGS) or {}
        tag_list = tuple(sorted(k if v == "true" else f"{k}:{v}" for k, v in tags.items()))
        interval = int(event[INTERVAL])
        length = float(event[INTERVAL_LENGTH])
        host = str(event.get(events.HOST) or "")
        kind = event[events.METRIC_TYPE]
        part: SeriesPartial
        if kind == events.COUNTER:
            part = CounterPartial(_finite(payload["sum"]))
        elif kind == events.GAUGE:
            value = payload["set"]
            part = GaugePartial(
                None if value is None else _finite(value),
                None if payload["set_at"] is None else float(payload["set_at"]),
                _finite(payload["delta"]),
                host,
            )
        elif kind == events.SET:
            part = SetPartial((str(m) for m in payload["members"]), int(payload["dropped"]))
        elif kind == events.TIMER:
            part = TimerPartial()
            part.samples = [_finite(v) for v in payload["samples"]]
            part.n = int(payload["n"])
            part.count = _finite(payload["count"])
            part.total = _finite(payload["sum"])
            part.sum_squares = float(payload["sum_squares"])
            part.low = float(payload["min"])
            part.high = float(payload["max"])
            if len(part.samples) > part.n:
                raise PartialError("more samples than n")
        else:
            raise PartialError(f"unknown metric_type {kind!r}")
    except PartialError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PartialError(f"malformed partial: {exc!r}") from None
    if length <= 0:
        raise PartialError("interval_length must be above zero")
    return (kind, name, tag_list), part, interval, length, host


def _finite(value: Any) -> float:
    number = float(value)
    if number - number != 0.0:
        raise PartialError(f"not a finite number: {value!r}")
    return number
