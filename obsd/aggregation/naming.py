"""How StatsD series are keyed and named: Etsy's namespaces, sanitised names, tags.

Part of ``StatsdAggregator`` (a mixin): the namespaces come from the settings
once, and every sample's name and tags become a canonical ``Key``.
"""

from __future__ import annotations

from collections.abc import Iterable

from obsd.aggregation.settings import StatsdSettings
from obsd.codecs.graphite import sanitise_name

#: A canonical series key: (sanitised name, sorted tags).
Key = tuple[str, tuple[str, ...]]


class SeriesNames:
    """Namespaces, canonical keys and the tags a series carries."""

    settings: StatsdSettings
    _tagged: bool
    _common: dict[Key, tuple[str, ...]]
    _has_tags: set[Key]

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
        return (clean_name, clean_tags(tags))

    def _note_tags(self, key: Key, name: str, tags: tuple[str, ...]) -> None:
        """Without ``graphite_tags``: keep the tags every sample of the series carried."""
        if ";" in name:
            tags = (*tags, *(part.replace("=", ":", 1) for part in name.split(";")[1:] if part))
        common = self._common.get(key)
        if common is None:  # the series' first sample
            common = self._common[key] = clean_tags(tags) if tags else ()
            if common:
                self._has_tags.add(key)
        elif common:
            kept = tuple(t for t in clean_tags(tags) if t in common) if tags else ()
            if kept != common:
                self._common[key] = kept
                if not kept:
                    self._has_tags.discard(key)

    def tags_of(self, key: Key) -> tuple[str, ...]:
        """The tags a series' points carry: its own, or (untagged mode) the common ones."""
        return key[1] if self._tagged else self._common.get(key, ())


def clean_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """DogStatsD tags cleaned with the name rule, empty ones dropped, sorted, each once."""
    clean: set[str] = set()
    for tag in tags:
        key, colon, value = tag.partition(":")
        key = sanitise_name(key)
        value = sanitise_name(value)
        if key and value:
            clean.add(f"{key}:{value}")
        elif key and not colon:
            clean.add(key)
    return tuple(sorted(clean))
