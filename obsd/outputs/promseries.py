"""Prometheus series from metric events: the semantics the scrape and remote_write share.

statsd_exporter's model: a StatsD counter is a counter cumulative since obsd
started (each flush's ``count`` added), a gauge or a set a gauge, a timer a
summary in seconds (the last flush's quantiles, cumulative ``_sum`` and
``_count``); any other metric event a gauge.  Pure state, no Twisted: the
caller passes the time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final, NamedTuple, Protocol

import attrs

from obsd import events
from obsd.codecs import prometheus_text as text

_QUANTILE: Final = re.compile(r"(?:upper|p)_?(\d+(?:_\d+)?)\Z")


class MappingLike(Protocol):
    """A glob mapping (``[[outputs.NAME.mappings]]``)."""

    @property
    def match(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def labels(self) -> dict[str, str]: ...


@attrs.define
class Series:
    """One Prometheus name and labels: a counter, gauge or summary."""

    kind: str
    updated: float
    value: float = 0.0
    #: summaries: the sum of samples in milliseconds (seconds when rendered)
    total: float = 0.0
    count: float = 0.0
    quantiles: dict[str, float] = attrs.field(factory=dict)


class Point(NamedTuple):
    """One sample as remote_write sends it: full name, labels, value."""

    name: str
    labels: text.Labels
    value: float


def quantile_of(stat: str) -> str | None:
    """``median`` → ``0.5``, ``upper_90`` → ``0.9``, ``upper_99_9`` → ``0.999``."""
    if stat == "median":
        return "0.5"
    found = _QUANTILE.match(stat)
    if found is None:
        return None
    percent = float(found.group(1).replace("_", "."))
    return f"{percent / 100:g}" if 0 < percent <= 100 else None


class SeriesBook:
    """Every series, keyed by (name, labels), updated by metric events."""

    def __init__(self, mappings: Iterable[MappingLike] = ()) -> None:
        self.series: dict[tuple[str, text.Labels], Series] = {}
        self._mappings = [text.compile_mapping(m.match, m.name, m.labels) for m in mappings]

    def observe(self, event: Mapping[str, Any], now: float) -> list[Point]:
        """Apply one metric event; the samples it changed. ValueError for a non-number."""
        value = event.get(events.VALUE)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"value is not a number: {value!r}")
        value = float(value)
        tags = event.get(events.TAGS)
        pairs = [(str(k), str(v)) for k, v in tags.items()] if isinstance(tags, Mapping) else []
        metric_type = event.get(events.METRIC_TYPE)
        stat = event.get(events.STAT)
        base = event.get(events.METRIC_NAME)
        if not isinstance(metric_type, str) or not isinstance(base, str) or not base:
            name, labels = text.map_name(str(event.get(events.EVENT, "")), pairs, self._mappings)
            self._get(name, labels, "gauge", now).value = value
            return [Point(name, labels, value)]
        name, labels = text.map_name(base, pairs, self._mappings)
        if metric_type == events.COUNTER:
            if stat != "count":
                return []
            series = self._get(name + "_total", labels, "counter", now)
            series.value += value
            return [Point(name + "_total", labels, series.value)]
        if metric_type in (events.GAUGE, events.SET):
            if stat not in ("value", "count"):
                return []
            self._get(name, labels, "gauge", now).value = value
            return [Point(name, labels, value)]
        if metric_type != events.TIMER or not isinstance(stat, str):
            return []
        summary = self._get(name, labels, "summary", now)
        if stat == "count":
            summary.count += value
            return [Point(name + "_count", labels, summary.count)]
        if stat == "sum":
            summary.total += value
            return [Point(name + "_sum", labels, summary.total / 1000.0)]
        quantile = quantile_of(stat)
        if quantile is None:
            return []
        summary.quantiles[quantile] = value / 1000.0
        return [Point(name, (*labels, ("quantile", quantile)), value / 1000.0)]

    def _get(self, name: str, labels: text.Labels, kind: str, now: float) -> Series:
        key = (name, labels)
        found = self.series.get(key)
        if found is None or found.kind != kind:
            found = self.series[key] = Series(kind, now)
        found.updated = now
        return found

    def drop_stale(self, cutoff: float) -> int:
        """Forget series last updated before ``cutoff``; how many."""
        stale = [key for key, series in self.series.items() if series.updated < cutoff]
        for key in stale:
            del self.series[key]
        return len(stale)


def series_to_json(book: Mapping[tuple[str, text.Labels], Series]) -> list[Any]:
    """The series as JSON, for another worker to add to its own (``[daemon] workers``)."""
    return [[name, [list(p) for p in labels], attrs.asdict(series)]
            for (name, labels), series in book.items()]


def add_series(
    into: dict[tuple[str, text.Labels], Series], found: list[Any]
) -> dict[tuple[str, text.Labels], Series]:
    """Another worker's series added: counters and summaries' sums and counts add up;
    gauges and quantiles are the most recently updated worker's."""
    for name, labels, raw in found:
        key = (name, tuple((str(k), str(v)) for k, v in labels))
        theirs = Series(**raw)
        mine = into.get(key)
        if mine is None or mine.kind != theirs.kind:
            into[key] = theirs
            continue
        newer = theirs.updated > mine.updated
        merged = Series(mine.kind, max(mine.updated, theirs.updated))
        if mine.kind == "counter":
            merged.value = mine.value + theirs.value
        else:
            merged.value = theirs.value if newer else mine.value
        merged.total = mine.total + theirs.total
        merged.count = mine.count + theirs.count
        merged.quantiles = dict(theirs.quantiles if newer else mine.quantiles)
        into[key] = merged
    return into
