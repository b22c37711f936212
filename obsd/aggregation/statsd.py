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

import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, NamedTuple

from obsd.codecs.graphite import MetricPoint, sanitise_name
from obsd.codecs.statsd import Sample, parse_statsd_packet_into


@dataclass(frozen=True, slots=True)
class AggregatorSettings:
    """The ``[inputs.statsd]`` options that shape aggregation, with Etsy statsd's defaults.

    ``listen``, ``receive_buffer_bytes`` and ``repeat_to`` belong to the input
    itself, not here.  ``delete_counters`` (and the other three) left at
    ``None`` follow ``delete_idle_stats``, as in Etsy.
    """

    flush_interval: float = 10.0
    percentiles: tuple[float, ...] = (90.0,)
    legacy_namespace: bool = True
    graphite_tags: bool = False
    delete_idle_stats: bool = False
    delete_counters: bool | None = None
    delete_timers: bool | None = None
    delete_gauges: bool | None = None
    delete_sets: bool | None = None
    #: Flushes a gauge may stay idle before ``delete_gauges`` removes it (Etsy's gaugesMaxTTL).
    gauges_max_ttl: int = 1
    #: Also send the raw count of counters (``stats_counts.NAME``).
    flush_counts: bool = True
    prefix_stats: str = "statsd"
    global_prefix: str = "stats"
    prefix_counter: str = "counters"
    prefix_timer: str = "timers"
    prefix_gauge: str = "gauges"
    prefix_set: str = "sets"
    global_suffix: str = ""
    #: ``((name_substring, (bin, ...)), ...)``; a bin is a number or ``"inf"``.
    histogram: tuple[tuple[str, tuple[float | str, ...]], ...] = ()
    #: Timer stats to keep (``mean``, ``mean_percent``, ``histogram``...); empty keeps all.
    calculated_timer_metrics: tuple[str, ...] = ()
    max_metrics: int = 200_000
    max_set_size: int = 100_000
    #: Samples one timer keeps per flush interval; its ``count`` still counts every one.
    max_timer_samples: int = 100_000

    @property
    def global_suffix_dot(self) -> str:
        """``global_suffix`` as it is appended to names: empty, or with its leading dot."""
        return "." + self.global_suffix if self.global_suffix else ""

    def _delete(self, value: bool | None) -> bool:
        return self.delete_idle_stats if value is None else value

    @property
    def deletes_counters(self) -> bool:
        """Whether idle counters are dropped instead of sent as zero."""
        return self._delete(self.delete_counters)

    @property
    def deletes_timers(self) -> bool:
        """Whether idle timers are dropped instead of sent with a zero count."""
        return self._delete(self.delete_timers)

    @property
    def deletes_gauges(self) -> bool:
        """Whether gauges idle for ``gauges_max_ttl`` flushes are dropped."""
        return self._delete(self.delete_gauges)

    @property
    def deletes_sets(self) -> bool:
        """Whether idle sets are dropped instead of sent with a zero count."""
        return self._delete(self.delete_sets)


def js_number(value: float | str) -> str:
    """Format a number as JavaScript's ``String(n)`` does, for names such as ``mean_99_9``."""
    if isinstance(value, str):
        return value
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    return repr(value)


def percentile_suffix(pct: float) -> str:
    """Name part for a percentile as Etsy writes it: 90 -> ``90``, 99.9 -> ``99_9``, -10 -> ``top10``."""
    return js_number(pct).replace(".", "_", 1).replace("-", "top", 1)


#: Etsy's filter maps ``mean_90`` to ``mean_percent``; obsd also maps ``mean_99_9``
#: (Etsy's pattern misses fractional percentiles and drops their stats).
_PERCENT_STAT = re.compile(r"_(top)?\d+(_\d+)?$")

#: A canonical series key: (sanitised name, sorted tags).
Key = tuple[str, tuple[str, ...]]


class _TimerStat(NamedTuple):
    suffix: str
    value: float


class StatsdAggregator:
    """Counters, timers, gauges and sets between two flushes, named as Etsy statsd names them.

    Args:
        settings: what to compute and how to name it.
        clock: seconds since the epoch; read once per flush for the timestamp.
        perf_counter: a monotonic clock for ``processing_time``.
    """

    def __init__(
        self,
        settings: AggregatorSettings,
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

    # -- naming --------------------------------------------------------------

    def _build_namespaces(self) -> None:
        s = self.settings
        if s.legacy_namespace:
            self._ns_counter = "stats."
            self._ns_count = "stats_counts."
            self._ns_timer = "stats.timers."
            self._ns_gauge = "stats.gauges."
            self._ns_set = "stats.sets."
            self._rate_suffix = ""
            self._count_suffix = ""
            self._num_stats = f"{s.prefix_stats}.numStats{s.global_suffix_dot}"
            self._processing = f"stats.{s.prefix_stats}.processing_time{s.global_suffix_dot}"
        else:
            root = [s.global_prefix] if s.global_prefix else []

            def ns(prefix: str) -> str:
                parts = [*root, prefix] if prefix else root
                return "".join(part + "." for part in parts)

            self._ns_counter = self._ns_count = ns(s.prefix_counter)
            self._ns_timer = ns(s.prefix_timer)
            self._ns_gauge = ns(s.prefix_gauge)
            self._ns_set = ns(s.prefix_set)
            self._rate_suffix = ".rate"
            self._count_suffix = ".count"
            base = ns("") + s.prefix_stats
            self._num_stats = f"{base}.numStats{s.global_suffix_dot}"
            self._processing = f"{base}.processing_time{s.global_suffix_dot}"
        self._lag_key: Key = (f"{s.prefix_stats}.timestamp_lag", ())
        self._internal_counters = tuple(
            f"{s.prefix_stats}.{what}"
            for what in ("bad_lines_seen", "packets_received", "metrics_received")
        )

    def _canonical(self, name: str, tags: tuple[str, ...]) -> Key:
        """Sanitise a name as Etsy does; Graphite-style ``;k=v`` in a name become tags."""
        if ";" in name:
            name, *extra = name.split(";")
            tags = (*tags, *(part.replace("=", ":", 1) for part in extra if part))
        clean_name = sanitise_name(name)
        if not self._tagged or not tags:
            return (clean_name, ())
        clean: set[str] = set()
        for tag in tags:
            key, colon, value = tag.partition(":")
            key = sanitise_name(key)
            value = sanitise_name(value)
            if key and value:
                clean.add(f"{key}:{value}")
            elif key and not colon:
                clean.add(key)
        return (clean_name, tuple(sorted(clean)))

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
            try:
                value = float(value_text)
            except ValueError:
                break
            if value - value != 0.0:  # NaN or infinite
                break
            if kind == "c":
                if key not in counters:
                    break
                counters[key] += value
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
                    gauges[key] += value
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
        lines = parse_statsd_packet_into(data, samples, bad)
        if count_lines:
            self.metrics_received += lines
        self.bad_lines_seen += len(bad)
        if samples:
            self.add(samples)
            samples.clear()
        return bad

    def _room(self) -> bool:
        size = len(self._counters) + len(self._timers) + len(self._gauges) + len(self._sets)
        if size >= self.settings.max_metrics:
            self.dropped_metrics += 1
            return False
        return True

    def add(self, samples: Iterable[Sample]) -> None:
        """Fold parsed samples into the current interval."""
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
            if kind == "c":
                if key in counters:
                    counters[key] += value / rate  # type: ignore[operator]
                elif self._room():
                    counters[key] = value / rate  # type: ignore[operator]
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
                    gauges[key] = gauges.get(key, 0.0) + value  # type: ignore[operator]
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

    def _timer_stats(self, name: str, values: list[float], count: float) -> list[_TimerStat]:
        """Etsy's process_metrics for one timer, stat by stat."""
        s = self.settings
        interval = s.flush_interval
        if not values:
            return [_TimerStat("count", 0), _TimerStat("count_ps", 0)]
        values.sort()
        n = len(values)
        low, high = values[0], values[-1]
        cumulative = list(_accumulate(values))
        cumulative_sq = list(_accumulate(v * v for v in values))
        out: list[_TimerStat] = []
        for pct in s.percentiles:
            in_threshold = n
            total, total_sq, mean, boundary = low, low * low, low, high
            if n > 1:
                in_threshold = _js_round(abs(pct) / 100 * n)
                if in_threshold == 0:
                    continue
                if pct > 0:
                    boundary = values[in_threshold - 1]
                    total = cumulative[in_threshold - 1]
                    total_sq = cumulative_sq[in_threshold - 1]
                else:
                    boundary = values[n - in_threshold]
                    before = n - in_threshold - 1
                    total = cumulative[-1] - (cumulative[before] if before >= 0 else 0.0)
                    total_sq = cumulative_sq[-1] - (cumulative_sq[before] if before >= 0 else 0.0)
                mean = total / in_threshold
            suffix = percentile_suffix(pct)
            out.append(_TimerStat("count_" + suffix, in_threshold))
            out.append(_TimerStat("mean_" + suffix, mean))
            out.append(_TimerStat(("upper_" if pct > 0 else "lower_") + suffix, boundary))
            out.append(_TimerStat("sum_" + suffix, total))
            out.append(_TimerStat("sum_squares_" + suffix, total_sq))
        total = cumulative[-1]
        mean = total / n
        mid = n // 2
        median = values[mid] if n % 2 else (values[mid - 1] + values[mid]) / 2
        out.extend(
            (
                _TimerStat("std", math.sqrt(sum((v - mean) ** 2 for v in values) / n)),
                _TimerStat("upper", high),
                _TimerStat("lower", low),
                _TimerStat("count", count),
                _TimerStat("count_ps", count / interval),
                _TimerStat("sum", total),
                _TimerStat("sum_squares", cumulative_sq[-1]),
                _TimerStat("mean", mean),
                _TimerStat("median", median),
            )
        )
        for pattern, bins in s.histogram:
            if pattern in name:
                index = 0
                for edge in bins:
                    freq = 0
                    while index < n and (edge == "inf" or values[index] < edge):  # type: ignore[operator]
                        freq += 1
                        index += 1
                    bin_name = "bin_" + js_number(edge).replace(".", "_", 1)
                    out.append(_TimerStat("histogram." + bin_name, freq))
                break
        return out

    def _keep_timer_stat(self, suffix: str) -> bool:
        wanted = self.settings.calculated_timer_metrics
        if not wanted:
            return True
        if suffix.startswith("histogram."):
            return "histogram" in wanted
        return _PERCENT_STAT.sub("_percent", suffix) in wanted

    def flush(self) -> list[MetricPoint]:
        """Close the interval: the points to send, then reset as Etsy's options say."""
        s = self.settings
        started = self._perf_counter()
        now = int(self._clock())
        suffix = s.global_suffix_dot
        points: list[MetricPoint] = []
        add = points.append
        interval = s.flush_interval

        if self._last_timestamp > 0:
            self._gauges[self._lag_key] = now - self._last_timestamp - interval
        self._last_timestamp = now

        internal = zip(
            self._internal_counters,
            (self.bad_lines_seen, self.packets_received, self.metrics_received),
            strict=True,
        )
        counters: list[tuple[Key, float]] = [((name, ()), v) for name, v in internal]
        counters.extend(self._counters.items())
        for (name, tags), value in counters:
            add(
                MetricPoint(
                    f"{self._ns_counter}{name}{self._rate_suffix}{suffix}",
                    value / interval,
                    now,
                    tags,
                )
            )
            if s.flush_counts:
                add(
                    MetricPoint(
                        f"{self._ns_count}{name}{self._count_suffix}{suffix}",
                        value,
                        now,
                        tags,
                    )
                )
        num_stats = len(counters)

        for key, values in self._timers.items():
            name, tags = key
            for stat in self._timer_stats(name, values, self._timer_counts[key]):
                if self._keep_timer_stat(stat.suffix):
                    add(
                        MetricPoint(
                            f"{self._ns_timer}{name}.{stat.suffix}{suffix}",
                            stat.value,
                            now,
                            tags,
                        )
                    )
            num_stats += 1

        for (name, tags), value in self._gauges.items():
            add(MetricPoint(f"{self._ns_gauge}{name}{suffix}", value, now, tags))
        num_stats += len(self._gauges)

        for (name, tags), members in self._sets.items():
            add(MetricPoint(f"{self._ns_set}{name}.count{suffix}", len(members), now, tags))
        num_stats += len(self._sets)

        add(MetricPoint(self._num_stats, num_stats, now, ()))
        elapsed_ms = (self._perf_counter() - started) * 1000.0
        add(MetricPoint(self._processing, round(elapsed_ms, 3), now, ()))
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


def _accumulate(values: Iterable[float]) -> Iterable[float]:
    total = 0.0
    for value in values:
        total += value
        yield total


def _js_round(value: float) -> int:
    """JavaScript's ``Math.round``: halves go up (Python rounds them to even)."""
    return math.floor(value + 0.5)


__all__: Final = [
    "AggregatorSettings",
    "MetricPoint",
    "StatsdAggregator",
    "js_number",
    "percentile_suffix",
]
