"""OTLP metric points as obsd metric events, the way Graphite wants numbers.

Graphite stores one number per series per interval, so each kind of point is
turned into numbers that mean something per export ("flush"):

- a monotonic **cumulative sum** becomes the increase since the previous export
  (a ``counter``); ``CumulativeState`` keeps the last value per series and start
  time, and a reset (the value drops, or a new start time) counts the new value;
  the first export of a series counts its whole value, as it is all new since
  its start;
- a **delta sum** is added as it is (a ``counter``);
- a non-monotonic cumulative sum (an up-down counter) and a **gauge** keep their
  last value (a ``gauge``);
- a **histogram** gives ``count``, ``sum``, ``min``, ``max`` and one
  ``histogram.bin_<upper bound>`` count per bucket (Etsy statsd's names; cumulative
  counts become increases like sums); **exponential histograms** likewise, with
  each non-empty bucket's upper bound; a **summary** gives ``count``, ``sum`` and
  ``quantile_<q*100>`` per quantile.

The event name is ``service.name`` + "." + metric name (+ "." + the statistic for
histograms and summaries); point attributes become tags.  The mapping table is in
docs/howto/otlp.rst.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Final

from obsd import events
from obsd.codecs.otlp import Items, Tally, attributes, nanos, tag_text

CUMULATIVE: Final = 2
DELTA: Final = 1
#: ``DataPointFlags.FLAG_NO_RECORDED_VALUE``: the point stands for a gap
NO_RECORDED_VALUE: Final = 1

Tags = dict[str, str]
Key = tuple[Any, ...]
Stamp = float | None


def stat_suffix(bound: float) -> str:
    """A bucket bound as Etsy statsd names a bin: ``bin_100``, ``bin_0_5``, ``bin_inf``."""
    if math.isinf(bound):
        return "bin_inf" if bound > 0 else "bin_-inf"
    text = f"{bound:.6g}" if bound != int(bound) or abs(bound) >= 1e15 else str(int(bound))
    return "bin_" + text.replace(".", "_").replace("+", "")


class CumulativeState:
    """The last value of each cumulative series (by series and start time), bounded.

    ``increase`` answers how much a cumulative number grew since the last export.
    Past ``max_series`` the series seen longest ago is forgotten (counted in
    ``evicted``); it counts as new when it comes back.
    """

    def __init__(self, max_series: int = 100_000) -> None:
        self.max_series = max_series
        self._last: OrderedDict[tuple[Any, ...], tuple[int, float]] = OrderedDict()
        self.evicted = 0
        self.resets = 0

    def __len__(self) -> int:
        return len(self._last)

    def increase(self, key: tuple[Any, ...], start: int, value: float) -> float:
        """The growth of ``value`` since the last call for ``key``: reset-aware."""
        last = self._last.pop(key, None)
        self._last[key] = (start, value)
        if len(self._last) > self.max_series:
            self._last.popitem(last=False)
            self.evicted += 1
        if last is None:
            return value
        last_start, last_value = last
        if start != last_start or value < last_value:
            self.resets += 1
            return value
        return value - last_value


class MetricConverter:
    """Turns ``ExportMetricsServiceRequest`` points into metric event fields."""

    def __init__(self, state: CumulativeState) -> None:
        self.state = state
        #: points skipped because they carried no value or a non-finite one
        self.skipped = 0

    def events(self, request: Any, tally: Tally) -> Items:
        """``(kind, fields)`` for each number; refused points go into ``tally``."""
        for resource_metrics in request.resource_metrics:
            resource_attrs = attributes(resource_metrics.resource.attributes)
            service = str(resource_attrs.get("service.name") or "unknown_service")
            identity = tuple(sorted((k, tag_text(v)) for k, v in resource_attrs.items()))
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    yield from self._metric(metric, service, identity, tally)

    def _metric(
        self, metric: Any, service: str, identity: tuple[Any, ...], tally: Tally
    ) -> Items:
        which = metric.WhichOneof("data")
        base = f"{service}.{metric.name}" if metric.name else ""
        if not base:
            tally.refuse("a metric without a name", _count_points(metric, which))
            return
        if which is None:
            return  # no points: nothing to refuse
        data = getattr(metric, which)
        temporality = getattr(data, "aggregation_temporality", CUMULATIVE)
        if which != "gauge" and which != "summary" and temporality not in (CUMULATIVE, DELTA):
            reason = f"{metric.name}: aggregation temporality unspecified"
            tally.refuse(reason, len(data.data_points))
            return
        handler = _HANDLERS[which]
        for point in data.data_points:
            if point.flags & NO_RECORDED_VALUE:
                self.skipped += 1
                continue
            tags = {k: tag_text(v) for k, v in attributes(point.attributes).items()}
            series = (identity, metric.name, tuple(sorted(tags.items())))
            stamp = nanos(point.time_unix_nano)
            yield from handler(self, point, data, base, tags, series, stamp)

    # -- one handler per point type ---------------------------------------------------

    def _emit(
        self,
        base: str,
        stat: str,
        metric_type: str,
        value: float,
        tags: dict[str, str],
        stamp: float | None,
        suffix: bool = True,
    ) -> Items:
        if not math.isfinite(value):
            self.skipped += 1
            return
        fields: dict[str, Any] = {
            events.EVENT: f"{base}.{stat}" if suffix else base,
            events.VALUE: float(value),
            events.TAGS: tags,
            events.METRIC_NAME: base,
            events.METRIC_TYPE: metric_type,
            events.STAT: stat,
        }
        if stamp is not None:
            fields[events.TIMESTAMP] = stamp
        yield events.METRIC, fields

    def _count(
        self, data: Any, series: tuple[Any, ...], stat: str, point: Any, value: float
    ) -> float:
        """A count as a per-export increase (cumulative) or as it is (delta)."""
        if data.aggregation_temporality == CUMULATIVE:
            return self.state.increase((*series, stat), point.start_time_unix_nano, value)
        return value

    def _number(self, point: Any) -> float:
        return float(point.as_int if point.WhichOneof("value") == "as_int" else point.as_double)

    def _gauge(
        self, point: Any, data: Any, base: str, tags: Tags, series: Key, stamp: Stamp
    ) -> Items:
        yield from self._emit(base, "value", "gauge", self._number(point), tags, stamp, False)

    def _sum(
        self, point: Any, data: Any, base: str, tags: Tags, series: Key, stamp: Stamp
    ) -> Items:
        value = self._number(point)
        if not data.is_monotonic and data.aggregation_temporality == CUMULATIVE:
            yield from self._emit(base, "value", "gauge", value, tags, stamp, False)
            return
        if not math.isfinite(value):
            self.skipped += 1
            return
        value = self._count(data, series, "count", point, value)
        yield from self._emit(base, "count", "counter", value, tags, stamp, False)

    def _histogram(
        self, point: Any, data: Any, base: str, tags: Tags, series: Key, stamp: Stamp
    ) -> Items:
        yield from self._count_and_sum(point, data, base, tags, series, stamp)
        bounds = [*point.explicit_bounds, math.inf]
        for bound, count in zip(bounds, point.bucket_counts, strict=False):
            stat = "histogram." + stat_suffix(bound)
            value = self._count(data, series, stat, point, float(count))
            yield from self._emit(base, stat, "timer", value, tags, stamp)

    def _exponential(
        self, point: Any, data: Any, base: str, tags: Tags, series: Key, stamp: Stamp
    ) -> Items:
        yield from self._count_and_sum(point, data, base, tags, series, stamp)
        buckets: list[tuple[float, int]] = []
        if point.zero_count:
            buckets.append((0.0, point.zero_count))
        base_value = 2.0 ** (2.0 ** -point.scale)
        for sign, side in ((1.0, point.positive), (-1.0, point.negative)):
            for i, count in enumerate(side.bucket_counts):
                if count:
                    index = side.offset + i + (1 if sign > 0 else 0)
                    try:
                        upper = sign * base_value**index
                    except OverflowError:
                        upper = sign * math.inf
                    buckets.append((upper, count))
        for bound, count in buckets:
            stat = "histogram." + stat_suffix(bound)
            value = self._count(data, series, stat, point, float(count))
            yield from self._emit(base, stat, "timer", value, tags, stamp)

    def _summary(
        self, point: Any, data: Any, base: str, tags: Tags, series: Key, stamp: Stamp
    ) -> Items:
        # summaries are cumulative by definition
        for stat, raw in (("count", float(point.count)), ("sum", point.sum)):
            if not math.isfinite(raw):
                self.skipped += 1
                continue
            value = self.state.increase((*series, stat), point.start_time_unix_nano, raw)
            yield from self._emit(base, stat, "timer", value, tags, stamp)
        for quantile in point.quantile_values:
            stat = "quantile_" + f"{quantile.quantile * 100:g}".replace(".", "_")
            yield from self._emit(base, stat, "timer", quantile.value, tags, stamp)

    def _count_and_sum(
        self, point: Any, data: Any, base: str, tags: Tags, series: Key, stamp: Stamp
    ) -> Items:
        count = self._count(data, series, "count", point, float(point.count))
        yield from self._emit(base, "count", "timer", count, tags, stamp)
        if point.HasField("sum"):
            if math.isfinite(point.sum):
                total = self._count(data, series, "sum", point, point.sum)
                yield from self._emit(base, "sum", "timer", total, tags, stamp)
            else:
                self.skipped += 1
        for stat in ("min", "max"):
            if point.HasField(stat):
                yield from self._emit(base, stat, "timer", getattr(point, stat), tags, stamp)


def _count_points(metric: Any, which: str | None) -> int:
    return len(getattr(metric, which).data_points) if which else 0


_HANDLERS: Final[Mapping[str, Any]] = {
    "gauge": MetricConverter._gauge,
    "sum": MetricConverter._sum,
    "histogram": MetricConverter._histogram,
    "exponential_histogram": MetricConverter._exponential,
    "summary": MetricConverter._summary,
}
