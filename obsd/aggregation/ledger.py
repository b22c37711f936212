"""Where central's StatsD merge stands, for an input that commits what it read (Kafka).

Pure (no Twisted).  A partial handed to the merge is not safe when it is
merged: it lives in memory until its interval is flushed, and its points are
safe only once they are on the outputs' disk.  The Kafka input must not
commit a partial's offset before that, or a central killed with -9 would lose
it; and when a partition moves to another process, what the partition added
to open intervals must be taken back (the new owner reads it again).

The merging StatsD input attaches its ``PartialMerger`` here and reports each
interval it flushes (``flushed``) and each whose points reached the disk
(``settled``).  The Kafka input tags each partial with its origin (the
partition), asks ``holding_through()`` right after handing it on (the
hand-on is synchronous: the merge has just said which interval it merged the
partial into), and commits past it once ``settled_through`` has reached that
interval.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from obsd.aggregation.merge import PartialMerger

#: Field of a ``statsd_partial`` event naming where it came from (a Kafka partition);
#: the merge keeps partials apart by it until their interval closes.
ORIGIN: Final = "_origin"


class MergeLedger:
    """The merge's progress: intervals flushed, intervals on disk, and ``forget``."""

    def __init__(self) -> None:
        self._merger: PartialMerger | None = None
        #: the newest interval flushed to the outputs' queues
        self.flushed_through: float = -math.inf
        #: the newest interval whose flushed points are on disk (``durability = "sync"``)
        self.settled_through: float = -math.inf
        #: origins whose partials are read again elsewhere if this process lets them go
        self.rereadable: set[Hashable] = set()
        #: the interval the merge put the last partial into (-inf: nowhere); taken once
        self._last: float | None = None

    @property
    def merging(self) -> bool:
        """Whether a StatsD input in this process merges partials."""
        return self._merger is not None

    def attach(self, merger: PartialMerger) -> None:
        self._merger = merger

    def detach(self, merger: PartialMerger) -> None:
        if self._merger is merger:
            self._merger = None

    def merged_into(self, interval: float) -> None:
        """The merge took a partial into ``interval`` (``-inf``: refused or dropped)."""
        self._last = interval

    def holding_through(self) -> float:
        """The interval the partial handed on just now sits in.

        What the merge said (``merged_into``) when it saw it; otherwise (it
        did not reach the merge) the newest open interval, which is safe.
        ``inf`` when nothing merges here: then a partial is not held at all
        (it went to the outputs like any event); callers check ``merging``.
        """
        last, self._last = self._last, None
        if last is not None:
            return last
        merger = self._merger
        if merger is None:
            return math.inf
        opened = merger.open_intervals()
        return max(opened[-1] if opened else -math.inf, merger.closed_through + 1)

    def flushed(self, interval: int) -> None:
        self.flushed_through = max(self.flushed_through, interval)

    def settled(self, interval: int) -> None:
        self.settled_through = max(self.settled_through, interval)

    def note_origin(self, origin: Hashable) -> None:
        """Partials from ``origin`` are read again from the last commit if dropped here."""
        self.rereadable.add(origin)

    def forget(self, origin: Hashable) -> int:
        """Take back what ``origin`` added to open intervals; returns the series dropped."""
        self.rereadable.discard(origin)
        return self._merger.forget(origin) if self._merger is not None else 0

    def let_go(self) -> int:
        """At stop: take back every re-readable origin's open partials (read again later)."""
        return sum(self.forget(origin) for origin in list(self.rereadable))


__all__ = ["ORIGIN", "MergeLedger"]
