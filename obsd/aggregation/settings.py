"""The StatsD aggregation settings, declared once: ``[inputs.statsd]`` mixes them in."""

from __future__ import annotations

from typing import Final

import attrs

from obsd.codecs.statsd import DEFAULT_MAX_NAME_LENGTH
from obsd.config.schema import at_least, setting


@attrs.frozen(kw_only=True)
class HistogramConfig:
    """``[[inputs.statsd.histogram]]``: bins for timers whose name contains ``metric``."""

    metric: str = setting("", help="a substring of the timer name; the first match wins")
    bins: list[float | str] = setting(
        factory=list, help='upper bin edges, ascending; "inf" for the last open bin'
    )


@attrs.frozen(kw_only=True, slots=False)  # no slots: [inputs.statsd]'s Config mixes it in
class StatsdSettings:
    """What shapes StatsD aggregation, with Etsy statsd's defaults: declared once, here.

    ``[inputs.statsd]`` is these settings plus the input's own (``listen``,
    ``receive_buffer_bytes``, ``repeat_to``...); the aggregator takes that
    config object as it is.  ``delete_counters`` (and the other three) left at
    ``None`` follow ``delete_idle_stats``, as in Etsy.
    """

    flush_interval: float = setting(
        10.0, check=at_least(0.01), help="seconds between flushes (Etsy: flushInterval)"
    )
    percentiles: list[float] = setting(
        factory=lambda: [90.0], help="timer percentiles (Etsy: percentThreshold)"
    )
    legacy_namespace: bool = setting(True, help="stats.NAME / stats_counts.NAME names")
    graphite_tags: bool = setting(
        False,
        help="DogStatsD tags are part of a series: Graphite tagged series name;k=v "
        "(else series are keyed by name and carry the tags all their samples shared)",
    )
    delete_idle_stats: bool = setting(False, help="default for the four delete_* options")
    delete_counters: bool | None = setting(
        None, help="drop idle counters (else send 0); unset: delete_idle_stats decides"
    )
    delete_timers: bool | None = setting(
        None, help="drop idle timers (else count 0); unset: delete_idle_stats decides"
    )
    delete_gauges: bool | None = setting(
        None, help="drop idle gauges (else resend); unset: delete_idle_stats decides"
    )
    delete_sets: bool | None = setting(
        None, help="drop idle sets (else count 0); unset: delete_idle_stats decides"
    )
    gauges_max_ttl: int = setting(
        1, check=at_least(1), help="flushes a gauge stays idle before delete_gauges drops it"
    )
    flush_counts: bool = setting(True, help="also send the raw count (stats_counts.NAME)")
    prefix_stats: str = setting("statsd", help="name of statsd's own metrics (prefixStats)")
    global_prefix: str = setting("stats", help="root when legacy_namespace = false")
    prefix_counter: str = setting("counters", help="counter part when legacy_namespace = false")
    prefix_timer: str = setting("timers", help="timer part when legacy_namespace = false")
    prefix_gauge: str = setting("gauges", help="gauge part when legacy_namespace = false")
    prefix_set: str = setting("sets", help="set part when legacy_namespace = false")
    global_suffix: str = setting("", help="appended to every name")
    histogram: list[HistogramConfig] = setting(factory=list, help="timer histogram bins")
    calculated_timer_metrics: list[str] = setting(
        factory=list, help="timer stats to keep (mean, upper, mean_percent...); empty: all"
    )
    max_metrics: int = setting(
        200_000,
        check=at_least(1),
        help="series held at most between flushes (drops counted)",
        client_sees="nothing (UDP has no answer); samples of new series are dropped until the "
        "next flush and counted (dropped_metrics)",
    )
    max_set_size: int = setting(
        100_000,
        check=at_least(1),
        help="members one set holds at most (drops counted)",
        client_sees="nothing; further members are dropped and counted (dropped_set_members), so "
        "the set's count stops there",
    )
    max_timer_samples: int = setting(
        100_000,
        check=at_least(1),
        help="samples one timer keeps per flush interval (count stays exact; drops counted)",
        client_sees="nothing; count and count_ps stay exact, the other timer stats use the "
        "samples kept (mode = partials: a uniform sample; sum, mean, upper and lower stay "
        "exact too); drops counted (dropped_timer_samples)",
    )
    max_name_length: int = setting(
        DEFAULT_MAX_NAME_LENGTH,
        check=at_least(1),
        help="characters in a metric name at most; longer names are bad lines",
        client_sees="nothing (UDP has no answer); the line is dropped and counted as a bad line "
        "(bad_lines_seen) with the reason logged, throttled",
    )

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


__all__: Final = ["HistogramConfig", "StatsdSettings"]
