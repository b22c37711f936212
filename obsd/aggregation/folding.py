"""Central's side of fleet-wide StatsD: partial aggregates from agents folded into the interval.

Part of ``StatsdAggregator`` (a mixin): each ``fold_*`` adds what the
fleet's agents summed to the series, within the same bounds as local samples.
"""

from __future__ import annotations

from collections.abc import Iterable

from obsd.aggregation.naming import Key
from obsd.aggregation.settings import StatsdSettings


class FoldPartials:
    """Merged counters, gauges, sets and timers added to the current interval."""

    settings: StatsdSettings
    bad_lines_seen: int
    dropped_set_members: int
    _tagged: bool
    _counters: dict[Key, float]
    _gauges: dict[Key, float]
    _gauge_ttl: dict[Key, int]
    _sets: dict[Key, set[str]]
    _timers: dict[Key, list[float]]
    _timer_counts: dict[Key, float]
    _timer_exact: dict[Key, tuple[int, float, float, float, float]]

    def _room(self) -> bool:
        raise NotImplementedError

    def _canonical(self, name: str, tags: tuple[str, ...]) -> Key:
        raise NotImplementedError

    def _note_tags(self, key: Key, name: str, tags: tuple[str, ...]) -> None:
        raise NotImplementedError

    def fold_counter(self, name: str, tags: tuple[str, ...], total: float) -> None:
        """Add a merged counter sum (rates already applied) to the interval."""
        key = self._fold_key(name, tags)
        if key in self._counters or self._room():
            new = self._counters.get(key, 0.0) + total
            if new - new != 0.0:  # the fleet's sum overflows: refused like a bad line
                self.bad_lines_seen += 1
                return
            self._counters[key] = new

    def fold_gauge(
        self, name: str, tags: tuple[str, ...], value: float | None, delta: float
    ) -> None:
        """Set a gauge to ``value`` (if any) plus ``delta``, or move it by ``delta``."""
        key = self._fold_key(name, tags)
        gauges = self._gauges
        if key not in gauges and not self._room():
            return
        new = (gauges.get(key, 0.0) if value is None else value) + delta
        if new - new != 0.0:
            self.bad_lines_seen += 1
            return
        gauges[key] = new
        self._gauge_ttl[key] = self.settings.gauges_max_ttl

    def fold_set(self, name: str, tags: tuple[str, ...], members: Iterable[str]) -> None:
        """Add merged set members to the interval (``max_set_size`` still holds)."""
        key = self._fold_key(name, tags)
        held = self._sets.get(key)
        if held is None:
            if not self._room():
                return
            held = self._sets[key] = set()
        cap = self.settings.max_set_size
        for member in members:
            if len(held) < cap or member in held:
                held.add(member)
            else:
                self.dropped_set_members += 1

    def fold_timer(
        self,
        name: str,
        tags: tuple[str, ...],
        samples: list[float],
        count: float,
        exact: tuple[int, float, float, float, float] | None = None,
    ) -> None:
        """Add merged timer samples; ``exact`` (n, sum, sum², min, max) when they are a sample."""
        key = self._fold_key(name, tags)
        timer = self._timers.get(key)
        if timer is None:
            if not self._room():
                return
            timer = self._timers[key] = []
            self._timer_counts[key] = 0.0
        timer.extend(samples)
        self._timer_counts[key] += count
        if exact is not None:
            self._timer_exact[key] = exact

    def _fold_key(self, name: str, tags: tuple[str, ...]) -> Key:
        key = self._canonical(name, tags)
        if not self._tagged:
            self._note_tags(key, name, tags)
        return key
