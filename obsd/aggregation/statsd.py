"""StatsD aggregation with Etsy statsd 0.9's semantics, pure and driven by an injected clock.

The statsd input feeds parsed samples straight into a ``StatsdAggregator``;
only the points that ``flush()`` returns go on through the event chain.  The
points carry the final Graphite names, exactly as Etsy statsd 0.9's graphite
backend names them (``stats.NAME``, ``stats_counts.NAME``,
``stats.timers.NAME.mean_90``, ...), so dashboards keep working when a team
moves from Etsy statsd to obsd.

statsd's own metrics, with the default ``prefix_stats = "statsd"``:

========================  ======================================  =======================================
what                      legacy_namespace = true                 legacy_namespace = false
========================  ======================================  =======================================
bad lines (counter)       ``stats.statsd.bad_lines_seen``,        ``stats.counters.statsd.bad_lines_seen.rate``,
                          ``stats_counts.statsd.bad_lines_seen``  ``stats.counters.statsd.bad_lines_seen.count``
packets (counter)         ``stats[_counts].statsd.packets_received``  ``stats.counters.statsd.packets_received.*``
lines (counter)           ``stats[_counts].statsd.metrics_received``  ``stats.counters.statsd.metrics_received.*``
series flushed            ``statsd.numStats`` (sic: no ``stats.``)  ``stats.statsd.numStats``
flush computation (ms)    ``stats.statsd.processing_time``        ``stats.statsd.processing_time``
flush lateness (s, gauge) ``stats.gauges.statsd.timestamp_lag``   ``stats.gauges.statsd.timestamp_lag``
========================  ======================================  =======================================

``timestamp_lag`` appears from the second flush on, as in Etsy.  Etsy's
``graphiteStats.*`` lines describe its graphite backend's connection and are
not produced here; obsd's graphite output reports its own counters.
Drops for the bounds are kept in ``dropped_metrics`` and
``dropped_set_members`` for the input to export.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Final, NamedTuple

from obsd import events
from obsd.aggregation.folding import FoldPartials
from obsd.aggregation.naming import Key, SeriesNames, clean_tags
from obsd.aggregation.settings import HistogramConfig, StatsdSettings
from obsd.aggregation.timers import (
    exact_timer_stats,
    js_number,
    keep_timer_stat,
    percentile_suffix,
    timer_stats,
)
from obsd.codecs.graphite import MetricPoint
from obsd.codecs.statsd import Sample, parse_statsd_packet_into


class StatsdPoint(NamedTuple):
    """One flushed value: its Graphite name first (as ``MetricPoint``), then what it is."""

    name: str
    value: float
    #: Whole seconds since the epoch.
    timestamp: int
    #: ``"k:v"`` or ``"flag"``, sorted and clean.
    tags: tuple[str, ...]
    #: The base StatsD name, without namespace or suffix.
    metric: str
    #: ``counter``, ``gauge``, ``timer`` or ``set`` (``events.METRIC_TYPES``).
    metric_type: str
    #: ``rate``, ``count``, ``value``, or a timer's stat suffix (``mean_90``...).
    stat: str


class StatsdAggregator(SeriesNames, FoldPartials):
    """Counters, timers, gauges and sets between two flushes, named as Etsy statsd names them.

    Args:
        settings: what to compute and how to name it.
        clock: seconds since the epoch; read once per flush for the timestamp.
        perf_counter: a monotonic clock for ``processing_time``.
    """

    def __init__(
        self,
        settings: StatsdSettings,
        clock: Callable[[], float],
        perf_counter: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._perf_counter = perf_counter
        self._tagged = settings.graphite_tags
        self._keys: dict[object, Key] = {}
        self._counters: dict[Key, float] = {}
        self._timers: dict[Key, list[float]] = {}
        self._timer_counts: dict[Key, float] = {}
        self._gauges: dict[Key, float] = {}
        self._gauge_ttl: dict[Key, int] = {}
        self._sets: dict[Key, set[str]] = {}
        #: timers folded from sampled partials: (n, sum, sum of squares, min, max)
        self._timer_exact: dict[Key, tuple[int, float, float, float, float]] = {}
        #: without graphite_tags: the tags all samples of a series carried (not identity)
        self._common: dict[Key, tuple[str, ...]] = {}
        #: series whose common tags are not empty (the fast path leaves them alone)
        self._has_tags: set[Key] = set()
        self._scratch: list[Sample] = []
        self._last_timestamp = 0
        self.bad_lines_seen = 0
        self.packets_received = 0
        self.metrics_received = 0
        #: Samples refused because ``max_metrics`` series already exist.
        self.dropped_metrics = 0
        #: Set members refused because the set already holds ``max_set_size``.
        self.dropped_set_members = 0
        #: Timer samples not kept (a timer holds ``max_timer_samples`` per interval);
        #: they are in ``count`` but not in the other timer stats.
        self.dropped_timer_samples = 0
        self._build_namespaces()

    # -- input ---------------------------------------------------------------

    def count_packet(self, lines: int = 1) -> None:
        """Count one datagram (or TCP chunk) and the non-empty lines it held."""
        self.packets_received += 1
        self.metrics_received += lines

    def count_bad_line(self) -> None:
        """Count one malformed value (Etsy's ``bad_lines_seen``)."""
        self.bad_lines_seen += 1

    def ingest(self, data: bytes) -> list[tuple[bytes, str]]:
        """Parse, count and aggregate one datagram; returns its ``(bad line, reason)`` pairs.

        The whole hot path of the statsd input in one call; never raises.
        Lines ``name:number|c|ms|g|h|d`` of series already held are folded in
        directly, skipping the parser's ``Sample`` tuples; they accept exactly
        what the parser's own fast path accepts.  From the first line that is
        anything else on, the rest of the datagram goes through the parser in
        order, so gauge sets and deltas keep their order.
        """
        self.packets_received += 1
        if self._tagged:
            return self._ingest_parsed(data, count_lines=True)
        keys = self._keys
        counters = self._counters
        timers = self._timers
        timer_counts = self._timer_counts
        gauges = self._gauges
        has_tags = self._has_tags
        max_timer_samples = self.settings.max_timer_samples
        lines = 0
        parts = data.split(b"\n")
        for index, raw in enumerate(parts):  # noqa: B007 - index is read after a break
            if not raw:
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                break
            name, _, rest = text.partition(":")
            value_text, _, kind = rest.partition("|")
            key = keys.get(name)
            if key is None or not value_text.isascii() or "_" in value_text:
                break
            if has_tags and key in has_tags:
                break
            try:
                value = float(value_text)
            except ValueError:
                break
            if value - value != 0.0:  # NaN or infinite
                break
            if kind == "c":
                total = counters.get(key)
                if total is None:
                    break
                total += value
                if total - total != 0.0:  # overflows: the full path refuses it
                    break
                counters[key] = total
            elif kind == "ms" or kind == "h" or kind == "d":
                timer = timers.get(key)
                if timer is None or (value < 0.0 and kind == "ms"):
                    break
                if len(timer) < max_timer_samples:
                    timer.append(value)
                else:
                    self.dropped_timer_samples += 1
                timer_counts[key] += 1.0
            elif kind == "g":
                if key not in gauges:
                    break
                if value_text[0] in "+-":
                    total = gauges[key] + value
                    if total - total != 0.0:  # overflows: the full path refuses it
                        break
                    gauges[key] = total
                else:
                    gauges[key] = value
                self._gauge_ttl[key] = self.settings.gauges_max_ttl
            else:
                break
            lines += 1
        else:
            self.metrics_received += lines
            return []
        self.metrics_received += lines
        return self._ingest_parsed(b"\n".join(parts[index:]), count_lines=True)

    def _ingest_parsed(self, data: bytes, count_lines: bool) -> list[tuple[bytes, str]]:
        """The full parser's path for ``data`` (the packet is already counted)."""
        samples = self._scratch
        bad: list[tuple[bytes, str]] = []
        lines = parse_statsd_packet_into(data, samples, bad, self.settings.max_name_length)
        if count_lines:
            self.metrics_received += lines
        self.bad_lines_seen += len(bad)
        if samples:
            self.add(samples, bad)
            samples.clear()
        return bad

    def _room(self) -> bool:
        size = len(self._counters) + len(self._timers) + len(self._gauges) + len(self._sets)
        if size >= self.settings.max_metrics:
            self.dropped_metrics += 1
            return False
        return True

    def _overflow(self, bad: list[tuple[bytes, str]] | None, name: str, what: str) -> None:
        """Count a sample refused because it would make a value infinite."""
        self.bad_lines_seen += 1
        if bad is not None:
            bad.append((name.encode("utf-8", "replace"), f"{what} would overflow to infinity"))

    def add(self, samples: Iterable[Sample], bad: list[tuple[bytes, str]] | None = None) -> None:
        """Fold parsed samples into the current interval.

        A counter or gauge sample that would make its value infinite is
        refused, counted as a bad line and, with ``bad``, reported there.
        """
        keys = self._keys
        tagged = self._tagged
        counters = self._counters
        for sample in samples:
            name, value, kind, rate, delta, tags = sample
            raw = (name, tags) if tagged else name
            key = keys.get(raw)
            if key is None:
                key = self._canonical(name, tags)
                if len(keys) < 4 * self.settings.max_metrics:
                    keys[raw] = key
            if not tagged and (
                tags or key in self._has_tags or key not in self._common or ";" in name
            ):
                self._note_tags(key, name, tags)
            if kind == "c":
                total = counters.get(key)
                add = value / rate  # type: ignore[operator]
                new = add if total is None else total + add
                if new - new != 0.0:
                    self._overflow(bad, name, "counter")
                elif total is not None or self._room():
                    counters[key] = new
            elif kind == "ms":
                timer = self._timers.get(key)
                if timer is None:
                    if not self._room():
                        continue
                    timer = self._timers[key] = []
                    self._timer_counts[key] = 0.0
                if len(timer) < self.settings.max_timer_samples:
                    timer.append(value)  # type: ignore[arg-type]
                else:
                    self.dropped_timer_samples += 1
                self._timer_counts[key] += 1.0 / rate
            elif kind == "g":
                gauges = self._gauges
                if key not in gauges and not self._room():
                    continue
                if delta:
                    new = gauges.get(key, 0.0) + value  # type: ignore[operator]
                    if new - new != 0.0:
                        self._overflow(bad, name, "gauge delta")
                        continue
                    gauges[key] = new
                else:
                    gauges[key] = value  # type: ignore[assignment]
                self._gauge_ttl[key] = self.settings.gauges_max_ttl
            else:
                members = self._sets.get(key)
                if members is None:
                    if not self._room():
                        continue
                    members = self._sets[key] = set()
                if len(members) < self.settings.max_set_size or value in members:
                    members.add(value)  # type: ignore[arg-type]
                else:
                    self.dropped_set_members += 1

    # -- output --------------------------------------------------------------

    def flush(self, now: float | None = None) -> list[StatsdPoint]:
        """Close the interval: the points to send, then reset as Etsy's options say.

        ``now`` stamps the points (default: the clock); central's merge passes
        the end of the interval it closes.
        """
        s = self.settings
        started = self._perf_counter()
        if now is None:
            stamp = int(self._clock())
            last = self._last_timestamp
            if s.flush_interval >= 1 and last > 0 and stamp <= last:
                # a late flush and the next punctual one must not share a second:
                # Graphite would keep only one of their values
                stamp = last + 1
        else:
            stamp = int(now)
        end = s.global_suffix_dot
        points: list[StatsdPoint] = []
        interval = s.flush_interval
        tags_of = self.tags_of

        def add(
            path: str, value: float, tags: tuple[str, ...], name: str, kind: str, stat: str
        ) -> None:
            points.append(StatsdPoint(path, value, stamp, tags, name, kind, stat))

        if self._last_timestamp > 0:
            self._gauges[self._lag_key] = stamp - self._last_timestamp - interval
        self._last_timestamp = stamp

        internal = zip(
            self._internal_counters,
            (self.bad_lines_seen, self.packets_received, self.metrics_received),
            strict=True,
        )
        counters: list[tuple[Key, float]] = [((name, ()), v) for name, v in internal]
        counters.extend(self._counters.items())
        counter = events.COUNTER
        for key, value in counters:
            name, tags = key[0], tags_of(key)
            add(
                f"{self._ns_counter}{name}{self._rate_suffix}{end}",
                value / interval,
                tags,
                name,
                counter,
                "rate",
            )
            if s.flush_counts:
                add(
                    f"{self._ns_count}{name}{self._count_suffix}{end}",
                    value,
                    tags,
                    name,
                    counter,
                    "count",
                )
        num_stats = len(counters)

        exact = self._timer_exact
        for key, values in self._timers.items():
            name, tags = key[0], tags_of(key)
            stats = timer_stats(s, name, values, self._timer_counts[key])
            if exact and key in exact:
                stats = exact_timer_stats(stats, exact[key])
            for suffix, value in stats:
                if keep_timer_stat(s, suffix):
                    add(
                        f"{self._ns_timer}{name}.{suffix}{end}",
                        value,
                        tags,
                        name,
                        events.TIMER,
                        suffix,
                    )
            num_stats += 1

        for key, value in self._gauges.items():
            name = key[0]
            add(f"{self._ns_gauge}{name}{end}", value, tags_of(key), name, events.GAUGE, "value")
        num_stats += len(self._gauges)

        for key, members in self._sets.items():
            name = key[0]
            add(
                f"{self._ns_set}{name}.count{end}",
                len(members),
                tags_of(key),
                name,
                events.SET,
                "count",
            )
        num_stats += len(self._sets)

        own = self.settings.prefix_stats
        add(self._num_stats, num_stats, (), f"{own}.numStats", events.GAUGE, "value")
        elapsed_ms = round((self._perf_counter() - started) * 1000.0, 3)
        add(self._processing, elapsed_ms, (), f"{own}.processing_time", events.GAUGE, "value")
        self._reset()
        return points

    def _reset(self) -> None:
        s = self.settings
        self.bad_lines_seen = self.packets_received = self.metrics_received = 0
        if s.deletes_counters:
            self._counters.clear()
        else:
            self._counters = dict.fromkeys(self._counters, 0.0)
        if s.deletes_timers:
            self._timers.clear()
            self._timer_counts.clear()
        else:
            self._timers = {key: [] for key in self._timers}
            self._timer_counts = dict.fromkeys(self._timer_counts, 0.0)
        self._timer_exact.clear()
        if s.deletes_sets:
            self._sets.clear()
        else:
            self._sets = {key: set() for key in self._sets}
        if s.deletes_gauges:
            for key in list(self._gauge_ttl):
                ttl = self._gauge_ttl[key] - 1
                if ttl < 1:
                    del self._gauge_ttl[key]
                    self._gauges.pop(key, None)
                else:
                    self._gauge_ttl[key] = ttl
        else:
            self._gauge_ttl.clear()
        if len(self._keys) > 2 * s.max_metrics:
            self._keys.clear()
        if self._common:
            alive = (self._counters, self._timers, self._gauges, self._sets)
            self._common = {k: v for k, v in self._common.items() if any(k in d for d in alive)}
            self._has_tags.intersection_update(self._common)


__all__: Final = [
    "HistogramConfig",
    "MetricPoint",
    "StatsdAggregator",
    "StatsdPoint",
    "StatsdSettings",
    "clean_tags",
    "js_number",
    "percentile_suffix",
]
