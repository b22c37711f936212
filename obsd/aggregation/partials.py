"""Fleet-wide StatsD, agent side: per-interval partial aggregates that merge exactly.

Pure (no Twisted).  An agent whose ``[inputs.statsd]`` has ``mode = "partials"``
folds raw StatsD samples into one ``SeriesPartial`` per series (base name plus
tags) per flush interval and sends those on as ``statsd_partial`` events instead
of flushing Graphite points.  Central merges them (``obsd.aggregation.merge``)
and flushes what one Etsy statsd fed the raw traffic of every host would have.

What a partial holds, by type, so that merging is exact:

- counter: the sum of ``value / sample_rate``;
- gauge: the value of the agent's last absolute set in the interval with the
  agent's time of that set, and the sum of the deltas received after it (all
  the deltas when there was no set); across hosts the latest stamped set wins
  and every delta adds;
- set: the members (a list on the wire), at most ``max_set_size``;
- timer: the samples, at most ``max_timer_samples``, and exactly: the number of
  samples, the rate-adjusted count, the sum, the sum of squares, the minimum
  and maximum.  Above the cap the agent keeps a uniform reservoir (Vitter's
  algorithm R) of ``max_timer_samples`` samples: count, count_ps, sum,
  sum_squares, mean, upper, lower and std stay exact, while median, the
  percentile stats and histogram bins come from the reservoir.

Series keys always include the tags (cleaned and sorted), whatever the agent's
``graphite_tags``: central's settings decide whether tags are part of a series.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from typing import Any, Final

from obsd import events
from obsd.aggregation.statsd import StatsdSettings, clean_tags
from obsd.codecs.graphite import sanitise_name
from obsd.codecs.statsd import Sample, parse_statsd_packet_into

#: The version of the ``partial`` payload; central refuses versions it does not know.
PARTIAL_VERSION: Final = 1
#: Key of the type-specific payload in a ``statsd_partial`` event.
PARTIAL: Final = "partial"
#: The interval a partial belongs to: ``floor(start / interval_length)``.
INTERVAL: Final = "interval"
#: The agent's flush interval, in seconds.
INTERVAL_LENGTH: Final = "interval_length"

_TYPES: Final = {"c": events.COUNTER, "ms": events.TIMER, "g": events.GAUGE, "s": events.SET}

#: (metric type, clean name, clean sorted tags): one name may be used as two types,
#: which Etsy keeps apart by namespace.
SeriesKey = tuple[str, str, tuple[str, ...]]


class CounterPartial:
    """A counter's rate-adjusted sum."""

    __slots__ = ("total",)
    metric_type = events.COUNTER

    def __init__(self, total: float = 0.0) -> None:
        self.total = total

    def merge(self, other: CounterPartial) -> None:
        self.total += other.total

    def payload(self) -> dict[str, Any]:
        return {"sum": self.total}


class GaugePartial:
    """The last absolute set (with its time and host) and the deltas that follow it."""

    __slots__ = ("delta", "set_at", "set_by", "value")
    metric_type = events.GAUGE

    def __init__(
        self,
        value: float | None = None,
        set_at: float | None = None,
        delta: float = 0.0,
        set_by: str = "",
    ) -> None:
        self.value = value
        self.set_at = set_at
        self.delta = delta
        self.set_by = set_by

    def merge(self, other: GaugePartial) -> None:
        """Latest stamped set wins (ties: the larger host name); every delta adds."""
        if other.value is not None and (
            self.value is None
            or (other.set_at or 0.0, other.set_by) > (self.set_at or 0.0, self.set_by)
        ):
            self.value, self.set_at, self.set_by = other.value, other.set_at, other.set_by
        self.delta += other.delta

    def payload(self) -> dict[str, Any]:
        return {"set": self.value, "set_at": self.set_at, "delta": self.delta}


class SetPartial:
    """The members seen (bounded by ``max_set_size``; refusals counted)."""

    __slots__ = ("dropped", "members")
    metric_type = events.SET

    def __init__(self, members: Iterable[str] = (), dropped: int = 0) -> None:
        self.members = set(members)
        self.dropped = dropped

    def merge(self, other: SetPartial, cap: int) -> None:
        self.dropped += other.dropped
        for member in other.members:
            if len(self.members) < cap or member in self.members:
                self.members.add(member)
            else:
                self.dropped += 1

    def payload(self) -> dict[str, Any]:
        return {"members": sorted(self.members), "dropped": self.dropped}


class TimerPartial:
    """Samples (a uniform reservoir above the cap) and exact count, sum, min and max."""

    __slots__ = ("count", "high", "low", "n", "samples", "sum_squares", "total")
    metric_type = events.TIMER

    def __init__(self) -> None:
        self.samples: list[float] = []
        #: samples received (each once, whatever its rate)
        self.n = 0
        #: Etsy's count: the sum of 1 / sample_rate
        self.count = 0.0
        self.total = 0.0
        self.sum_squares = 0.0
        self.low = math.inf
        self.high = -math.inf

    @property
    def exact(self) -> bool:
        """Whether every sample is kept (no reservoir)."""
        return len(self.samples) == self.n

    def add(self, value: float, rate: float, cap: int, rng: random.Random) -> None:
        self.n += 1
        self.count += 1.0 / rate
        self.total += value
        self.sum_squares += value * value
        self.low = min(self.low, value)
        self.high = max(self.high, value)
        if len(self.samples) < cap:
            self.samples.append(value)
        else:  # algorithm R: the n-th sample replaces a kept one with probability cap/n
            slot = rng.randrange(self.n)
            if slot < cap:
                self.samples[slot] = value

    def merge(self, other: TimerPartial, cap: int, rng: random.Random) -> None:
        """Add ``other``; above ``cap`` keep a weighted sample of both reservoirs."""
        if not other.n:
            return
        if self.exact and other.exact and len(self.samples) + len(other.samples) <= cap:
            self.samples.extend(other.samples)
        else:
            self.samples = _weighted_subsample(self, other, cap, rng)
        self.n += other.n
        self.count += other.count
        self.total += other.total
        self.sum_squares += other.sum_squares
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)

    def payload(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "n": self.n,
            "count": self.count,
            "sum": self.total,
            "sum_squares": self.sum_squares,
            "min": self.low,
            "max": self.high,
        }


def _weighted_subsample(
    a: TimerPartial, b: TimerPartial, cap: int, rng: random.Random
) -> list[float]:
    """At most ``cap`` samples of two reservoirs, each standing for ``n / kept`` samples.

    Efraimidis-Spirakis A-Res: each sample gets the key ``u ** (1 / weight)``
    and the ``cap`` largest keys are kept, so a host whose reservoir stands for
    more samples is represented in proportion.
    """
    keyed: list[tuple[float, float]] = []
    for part in (a, b):
        if not part.samples:
            continue
        weight = part.n / len(part.samples)
        keyed.extend((rng.random() ** (1.0 / weight), value) for value in part.samples)
    if len(keyed) <= cap:
        return [value for _, value in keyed]
    keyed.sort(reverse=True)
    return [value for _, value in keyed[:cap]]


SeriesPartial = CounterPartial | GaugePartial | SetPartial | TimerPartial


class PartialAggregator:
    """One agent's partials for the current interval, from raw StatsD datagrams.

    Args:
        settings: the statsd input's settings (caps and the name limit).
        clock: seconds since the epoch, read for each gauge set.
        host: this agent's name, used to order gauge sets stamped alike.
        rng: the reservoir's random source.
    """

    def __init__(
        self,
        settings: StatsdSettings,
        clock: Callable[[], float],
        host: str = "",
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self.host = host
        self._rng = rng or random.Random()
        self.series: dict[SeriesKey, SeriesPartial] = {}
        self._keys: dict[tuple[str, tuple[str, ...]], tuple[str, tuple[str, ...]]] = {}
        #: (wire type, raw name, raw tags) -> series key
        self._series_keys: dict[tuple[str, str, tuple[str, ...]], SeriesKey] = {}
        self._scratch: list[Sample] = []
        self.bad_lines_seen = 0
        self.packets_received = 0
        self.metrics_received = 0
        self.dropped_metrics = 0
        self.dropped_set_members = 0
        self.dropped_timer_samples = 0

    def count_bad_line(self) -> None:
        """Count one malformed line found outside the parser (an over-long TCP line)."""
        self.bad_lines_seen += 1

    def ingest(self, data: bytes) -> list[tuple[bytes, str]]:
        """Parse and fold one datagram (or run of lines); returns its bad lines."""
        self.packets_received += 1
        bad: list[tuple[bytes, str]] = []
        samples = self._scratch
        self.metrics_received += parse_statsd_packet_into(
            data, samples, bad, self.settings.max_name_length
        )
        self.bad_lines_seen += len(bad)
        if samples:
            self.add(samples, bad)
            samples.clear()
        return bad

    def _key(self, name: str, tags: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
        raw = (name, tags)
        key = self._keys.get(raw)
        if key is None:
            if ";" in name:
                name, *inline = name.split(";")
                tags = (*tags, *(part.replace("=", ":", 1) for part in inline if part))
            key = (sanitise_name(name), clean_tags(tags) if tags else ())
            if len(self._keys) < 4 * self.settings.max_metrics:
                self._keys[raw] = key
        return key

    def add(self, samples: Iterable[Sample], bad: list[tuple[bytes, str]] | None = None) -> None:
        """Fold parsed samples into the interval's partials."""
        s = self.settings
        series = self.series
        keys = self._series_keys
        for name, value, kind, rate, delta, tags in samples:
            key = keys.get((kind, name, tags))
            if key is None:
                key = (_TYPES[kind], *self._key(name, tags))
                if len(keys) < 4 * s.max_metrics:
                    keys[(kind, name, tags)] = key
            part = series.get(key)
            if part is None:
                if len(series) >= s.max_metrics:
                    self.dropped_metrics += 1
                    continue
                part = series[key] = _new(kind)
            if isinstance(part, CounterPartial):
                new = part.total + value / rate  # type: ignore[operator]
                if new - new != 0.0:
                    self._overflow(bad, name, "counter")
                else:
                    part.total = new
            elif isinstance(part, TimerPartial):
                if len(part.samples) >= s.max_timer_samples:
                    self.dropped_timer_samples += 1
                part.add(value, rate, s.max_timer_samples, self._rng)  # type: ignore[arg-type]
            elif isinstance(part, GaugePartial):
                if delta:
                    new = part.delta + value  # type: ignore[operator]
                    base = part.value or 0.0
                    if new - new != 0.0 or (base + new) - (base + new) != 0.0:
                        self._overflow(bad, name, "gauge delta")
                    else:
                        part.delta = new
                else:
                    part.value = value  # type: ignore[assignment]
                    part.set_at = self._clock()
                    part.set_by = self.host
                    part.delta = 0.0
            else:
                if len(part.members) < s.max_set_size or value in part.members:
                    part.members.add(value)  # type: ignore[arg-type]
                else:
                    part.dropped += 1
                    self.dropped_set_members += 1

    def _overflow(self, bad: list[tuple[bytes, str]] | None, name: str, what: str) -> None:
        self.bad_lines_seen += 1
        if bad is not None:
            bad.append((name.encode("utf-8", "replace"), f"{what} would overflow to infinity"))

    def take(self) -> dict[SeriesKey, SeriesPartial]:
        """The interval's partials; the next interval starts empty."""
        series, self.series = self.series, {}
        if len(self._keys) > 2 * self.settings.max_metrics:
            self._keys.clear()
            self._series_keys.clear()
        return series

    def take_counts(self) -> tuple[int, int, int]:
        """(bad lines, packets, lines) since the last call: the host's own statsd numbers."""
        counts = (self.bad_lines_seen, self.packets_received, self.metrics_received)
        self.bad_lines_seen = self.packets_received = self.metrics_received = 0
        return counts


def _new(kind: str) -> SeriesPartial:
    if kind == "c":
        return CounterPartial()
    if kind == "ms":
        return TimerPartial()
    if kind == "g":
        return GaugePartial()
    return SetPartial()


__all__ = [
    "CounterPartial",
    "GaugePartial",
    "PartialAggregator",
    "SeriesKey",
    "SeriesPartial",
    "SetPartial",
    "TimerPartial",
]
