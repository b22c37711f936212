"""Which offset of each partition the Kafka input may commit: on disk, and partials settled.

Pure (no Twisted, no client).  An offset may be committed once every message
before it is safe: its events are on every output's disk (``durable``), and
a StatsD partial among them is in an interval whose points are on disk too
(``hold``, released by the merge's ``settled_through``).  Kafka then reads
from the first message that is not safe when the partition moves or the
process dies, so nothing is lost.

Each assignment of a partition has its own generation: what a batch read
under an earlier assignment says (it became durable after the partition
left and came back) is ignored, since the partials it held were forgotten
and are read again.
"""

from __future__ import annotations

from collections import deque

#: (topic, partition)
Partition = tuple[str, int]


class CommitGate:
    """Durable marks and held partials per partition; what is committable now."""

    def __init__(self) -> None:
        self._generation: dict[Partition, int] = {}
        #: the next offset after the last message whose events are on disk
        self._durable: dict[Partition, int] = {}
        #: partials not yet settled, in offset order: (offset, interval they may sit in)
        self._held: dict[Partition, deque[tuple[int, float]]] = {}
        #: what the broker has acknowledged, and what a commit in flight asks for
        self._committed: dict[Partition, int] = {}
        self._asked: dict[Partition, int] = {}

    def assigned(self, partition: Partition) -> None:
        self._generation[partition] = self._generation.get(partition, 0) + 1

    def revoked(self, partition: Partition) -> None:
        """The partition left: forget everything about it (its partials are read again)."""
        self._generation[partition] = self._generation.get(partition, 0) + 1
        for table in (self._durable, self._held, self._committed, self._asked):
            table.pop(partition, None)

    def generation(self, partition: Partition) -> int:
        return self._generation.get(partition, 0)

    def read(self, partition: Partition, offset: int) -> None:
        """A message was read: the group was at least at the first one read (no commit needed)."""
        self._committed.setdefault(partition, offset)

    def hold(self, partition: Partition, offset: int, interval: float) -> None:
        """The partial at ``offset`` is safe once ``interval`` is settled."""
        self._held.setdefault(partition, deque()).append((offset, interval))

    def durable(self, offsets: dict[Partition, tuple[int, int]]) -> None:
        """Messages before each next offset are on disk: ``{partition: (next, generation)}``."""
        for partition, (after, generation) in offsets.items():
            if generation != self.generation(partition):
                continue
            self._durable[partition] = max(self._durable.get(partition, 0), after)

    def committable(self, settled_through: float) -> dict[Partition, int]:
        """The offsets to commit now (only those past what was committed or asked)."""
        ready: dict[Partition, int] = {}
        for partition, after in self._durable.items():
            held = self._held.get(partition)
            while held and held[0][1] <= settled_through:
                held.popleft()
            if held and held[0][0] < after:
                after = held[0][0]
            known = max(self._committed.get(partition, -1), self._asked.get(partition, -1))
            if after > known:
                ready[partition] = after
        return ready

    def asked(self, offsets: dict[Partition, int]) -> None:
        """A commit of ``offsets`` is in flight."""
        for partition, after in offsets.items():
            self._asked[partition] = max(self._asked.get(partition, -1), after)

    def acknowledged(self, partition: Partition, after: int, ok: bool) -> None:
        """The broker answered a commit: on failure it is asked for again at the next turn."""
        if ok:
            self._committed[partition] = max(self._committed.get(partition, -1), after)
        if self._asked.get(partition, -1) <= after or not ok:
            self._asked.pop(partition, None)

    def pending(self) -> int:
        """Partials held, waiting for their interval's points to reach the disk."""
        return sum(len(q) for q in self._held.values())


__all__ = ["CommitGate", "Partition"]
