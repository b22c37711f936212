"""Fleet-wide StatsD, central side: merge agents' partials per interval, then flush once.

Pure (no Twisted).  ``PartialMerger`` collects ``statsd_partial`` events by
interval and closes each interval once ``late_partials_grace`` seconds have
passed after its end; ``fold_into`` then hands the merged series to central's
``StatsdAggregator``, whose ``flush`` names and computes every point exactly as
one Etsy statsd would have, had it received every host's raw traffic.

Alignment.  Interval ``k`` is ``[k * I, (k + 1) * I)`` in epoch seconds, with
``I`` central's ``flush_interval``; agents flush on the same boundaries, and a
partial belongs to the central interval that holds its start
(``floor(interval * interval_length / I)``).  An agent whose interval does not
fit inside one of central's (it is longer, or not a divisor) is merged into
the interval of its start and counted as ``misaligned``.

Lateness.  An interval closes at ``(k + 1) * I + grace`` on central's clock.
A partial for an interval already closed is counted as late and, by
``late_partials``, either merged into the oldest open interval (``merge``: its
counts are kept, a little later than they happened) or dropped (``drop``).  It
is never merged into the interval it came for once that was flushed.
Intervals that had closed before this process started count as closed.

Origins.  Each partial may carry an origin (a Kafka partition, say).  Until
an interval closes, partials are kept per origin, so ``forget(origin)`` can
take back everything an origin contributed to open intervals: when a consumer
group rebalances, the process losing a partition forgets it, and the process
gaining it reads it again from the last committed offset (one committed only
once ``closed_through`` has passed the intervals of the partials before it).
No point is then lost or counted twice.
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable
from typing import Any, Final, Literal

from obsd import events
from obsd.aggregation.partials import (
    CounterPartial,
    GaugePartial,
    SeriesKey,
    SeriesPartial,
    SetPartial,
    TimerPartial,
)
from obsd.aggregation.partials_wire import parse_partial
from obsd.aggregation.statsd import StatsdAggregator, StatsdSettings

#: Intervals closed in one call at most (after a long stall the older empty ones are skipped).
MAX_CLOSE_AT_ONCE: Final = 60
_EPSILON: Final = 1e-6

LatePolicy = Literal["merge", "drop"]


class MergedSeries:
    """One series of one interval: the merged partial and the tags all its parts shared."""

    __slots__ = ("part", "tags")

    def __init__(self, part: SeriesPartial, tags: tuple[str, ...]) -> None:
        self.part = part
        self.tags = tags


def merge_part(
    into: SeriesPartial, other: SeriesPartial, settings: StatsdSettings, rng: Any
) -> None:
    """Merge ``other`` into ``into`` (same type) under central's caps."""
    if isinstance(into, CounterPartial) and isinstance(other, CounterPartial):  # noqa: SIM114
        into.merge(other)
    elif isinstance(into, GaugePartial) and isinstance(other, GaugePartial):
        into.merge(other)
    elif isinstance(into, SetPartial) and isinstance(other, SetPartial):
        into.merge(other, settings.max_set_size)
    elif isinstance(into, TimerPartial) and isinstance(other, TimerPartial):
        into.merge(other, settings.max_timer_samples, rng)
    else:  # pragma: no cover - keys carry the type, so this cannot happen
        raise TypeError(f"cannot merge {type(other).__name__} into {type(into).__name__}")


class PartialMerger:
    """Open intervals of merged partials, closed in order on central's clock.

    Args:
        settings: central's StatsD settings (interval, tags as series, caps).
        grace: seconds an interval stays open after its end for late partials.
        late: what a partial for a closed interval does: ``merge`` or ``drop``.
        now: central's clock at start; intervals closed by then count as closed.
        rng: the random source for timer reservoirs merged above the cap.
    """

    def __init__(
        self,
        settings: StatsdSettings,
        grace: float,
        late: LatePolicy = "merge",
        now: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.length = settings.flush_interval
        self.grace = grace
        self.late = late
        self._rng = rng or random.Random()
        self._tagged = settings.graphite_tags
        #: interval -> origin -> series key -> merged series
        self._open: dict[int, dict[Hashable, dict[SeriesKey, MergedSeries]]] = {}
        #: the last interval closed (flushed); partials for it or older are late
        self.closed_through = self.last_closable(now)
        self.merged = 0
        self.late_merged = 0
        self.late_dropped = 0
        self.misaligned = 0
        self.forgotten = 0
        #: the interval the last ``add`` merged into (None: it dropped the partial)
        self.last_target: int | None = None

    def interval_of(self, when: float) -> int:
        """The interval holding the instant ``when``."""
        return math.floor(when / self.length + _EPSILON)

    def last_closable(self, now: float) -> int:
        """The newest interval whose end plus grace has passed at ``now``."""
        return self.interval_of(now - self.grace) - 1

    def open_intervals(self) -> list[int]:
        return sorted(self._open)

    def add(self, event: dict[str, Any], origin: Hashable = None) -> str:
        """Merge one partial event; returns ``merged``, ``late_merged`` or ``late_dropped``.

        Raises:
            PartialError: the event is not a partial this version understands.
        """
        key, part, interval, length, _host = parse_partial(event)
        start = interval * length
        target = self.interval_of(start)
        if start + length > (target + 1) * self.length + _EPSILON * self.length:
            self.misaligned += 1
        outcome = "merged"
        self.last_target = None
        if target <= self.closed_through:
            if self.late == "drop":
                self.late_dropped += 1
                return "late_dropped"
            target = self.closed_through + 1
            self.late_merged += 1
            outcome = "late_merged"
        else:
            self.merged += 1
        self._merge(self._open.setdefault(target, {}).setdefault(origin, {}), key, part)
        self.last_target = target
        return outcome

    def add_local(
        self, partials: dict[SeriesKey, SeriesPartial], interval: int, origin: Hashable
    ) -> None:
        """Merge this process's own partials of ``interval`` (raw traffic sent to central)."""
        if interval <= self.closed_through:
            interval = self.closed_through + 1
            self.late_merged += len(partials)
        bucket = self._open.setdefault(interval, {}).setdefault(origin, {})
        for key, part in partials.items():
            self._merge(bucket, key, part)

    def _merge(
        self, bucket: dict[SeriesKey, MergedSeries], key: SeriesKey, part: SeriesPartial
    ) -> None:
        kind, name, tags = key
        merge_key: SeriesKey = (kind, name, tags if self._tagged else ())
        held = bucket.get(merge_key)
        if held is None:
            bucket[merge_key] = MergedSeries(part, tags)
            return
        merge_part(held.part, part, self.settings, self._rng)
        if not self._tagged and held.tags != tags:
            held.tags = tuple(t for t in held.tags if t in tags)

    def forget(self, origin: Hashable) -> int:
        """Take back what ``origin`` added to open intervals (a revoked partition)."""
        dropped = 0
        for origins in self._open.values():
            gone = origins.pop(origin, None)
            if gone:
                dropped += len(gone)
        self.forgotten += dropped
        return dropped

    def due(self, now: float) -> list[int]:
        """The intervals to close at ``now``, oldest first (empty ones too: idle stats)."""
        last = self.last_closable(now)
        if last <= self.closed_through:
            return []
        first = max(self.closed_through + 1, last - MAX_CLOSE_AT_ONCE + 1)
        held = [k for k in self._open if k < first]
        return sorted({*held, *range(first, last + 1)})

    def close(self, interval: int) -> dict[SeriesKey, MergedSeries]:
        """Merge the origins of ``interval``; it and every older interval are closed.

        ``due`` lists intervals oldest first, so nothing older is open here;
        should it be, it is merged into this one and counted as late.
        """
        origins = [self._open.pop(interval, {})]
        for older in sorted(k for k in self._open if k < interval):
            self.late_merged += 1
            origins.append(self._open.pop(older))
        self.closed_through = max(self.closed_through, interval)
        out: dict[SeriesKey, MergedSeries] = {}
        for by_origin in origins:
            for bucket in by_origin.values():
                for key, series in bucket.items():
                    held = out.get(key)
                    if held is None:
                        out[key] = series
                        continue
                    merge_part(held.part, series.part, self.settings, self._rng)
                    if not self._tagged and held.tags != series.tags:
                        held.tags = tuple(t for t in held.tags if t in series.tags)
        return out


def fold_into(aggregator: StatsdAggregator, merged: dict[SeriesKey, MergedSeries]) -> None:
    """Hand one closed interval's merged series to central's aggregator."""
    for (kind, name, _), series in merged.items():
        part, tags = series.part, series.tags
        if kind == events.COUNTER and isinstance(part, CounterPartial):
            aggregator.fold_counter(name, tags, part.total)
        elif kind == events.GAUGE and isinstance(part, GaugePartial):
            aggregator.fold_gauge(name, tags, part.value, part.delta)
        elif kind == events.SET and isinstance(part, SetPartial):
            aggregator.dropped_set_members += part.dropped
            aggregator.fold_set(name, tags, part.members)
        elif isinstance(part, TimerPartial):
            exact = None
            if not part.exact:
                exact = (part.n, part.total, part.sum_squares, part.low, part.high)
                aggregator.dropped_timer_samples += part.n - len(part.samples)
            aggregator.fold_timer(name, tags, part.samples, part.count, exact)


__all__ = ["MergedSeries", "PartialMerger", "fold_into", "merge_part"]
