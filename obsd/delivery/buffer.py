"""The bounded queue every output owns: records in order, limits, watermarks, drops.

Pure and synchronous: records are the output's encoded bytes, so sizes are
exact and a spool can hold them as they are.  ``when_full`` decides what a full
queue does with a new record: ``drop_newest`` refuses it, ``drop_oldest`` evicts
from the head, ``block`` still takes it (the inputs have been asked to pause at
the high watermark, so only what was already read arrives) up to a hard cap of
twice the limits, past which it drops as ``overflow``.  Every drop is counted
by reason.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from typing import Any

BLOCK = "block"
DROP_NEWEST = "drop_newest"
DROP_OLDEST = "drop_oldest"

#: the hard cap of a ``block`` queue, as a multiple of its limits
BLOCK_HARD_CAP = 2


class BoundedBuffer:
    """A FIFO of encoded records with count and byte limits."""

    #: what is left at shutdown is lost (a DiskBuffer keeps it)
    durable = False

    __slots__ = (
        "_high_bytes",
        "_high_count",
        "_low_bytes",
        "_low_count",
        "_records",
        "bytes",
        "dropped",
        "dropped_total",
        "max_bytes",
        "max_events",
        "pressured",
        "when_full",
    )

    def __init__(
        self,
        max_events: int,
        max_bytes: int,
        when_full: str = BLOCK,
        high_watermark: float = 0.8,
        low_watermark: float = 0.5,
    ) -> None:
        if when_full not in (BLOCK, DROP_NEWEST, DROP_OLDEST):
            raise ValueError(f"unknown when_full policy {when_full!r}")
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.when_full = when_full
        self._high_count = max(1, int(max_events * high_watermark))
        self._high_bytes = max(1, int(max_bytes * high_watermark))
        self._low_count = int(max_events * low_watermark)
        self._low_bytes = int(max_bytes * low_watermark)
        self._records: deque[bytes] = deque()
        self.bytes = 0
        #: drops by reason: full, overflow, too_large, shutdown, ...
        self.dropped: Counter[str] = Counter()
        #: the sum of ``dropped``, cheap to compare after each put
        self.dropped_total = 0
        #: whether the high watermark was passed and the low one not reached since
        self.pressured = False

    def __len__(self) -> int:
        return len(self._records)

    def put(self, record: bytes) -> bool:
        """Add a record at the tail; False when it was dropped instead."""
        size = len(record)
        if size > self.max_bytes:
            self.count_drop("too_large")
            return False
        if len(self._records) >= self.max_events or self.bytes + size > self.max_bytes:
            if self.when_full == DROP_NEWEST:
                self.count_drop("full")
                return False
            if self.when_full == DROP_OLDEST:
                records = self._records
                while records and (
                    len(records) >= self.max_events or self.bytes + size > self.max_bytes
                ):
                    self.bytes -= len(records.popleft())
                    self.count_drop("full")
            elif (
                len(self._records) >= self.max_events * BLOCK_HARD_CAP
                or self.bytes + size > self.max_bytes * BLOCK_HARD_CAP
            ):
                self.count_drop("overflow")
                return False
        self._records.append(record)
        self.bytes += size
        if not self.pressured and (
            len(self._records) >= self._high_count or self.bytes >= self._high_bytes
        ):
            self.pressured = True
        return True

    def count_drop(self, reason: str, count: int = 1) -> None:
        """Count ``count`` records given up for ``reason`` (also those the queue gives up)."""
        self.dropped[reason] += count
        self.dropped_total += count

    def take(self, max_count: int, max_bytes: int) -> list[bytes]:
        """Remove and return up to ``max_count`` records and about ``max_bytes`` bytes.

        At least one record is returned when any is queued, so a record larger
        than ``max_bytes`` still goes out alone.
        """
        records = self._records
        batch: list[bytes] = []
        size = 0
        while records and len(batch) < max_count:
            nxt = len(records[0])
            if batch and size + nxt > max_bytes:
                break
            batch.append(records.popleft())
            size += nxt
        self.bytes -= size
        self._update_pressure()
        return batch

    #: records waiting outside memory (only a DiskBuffer has any)
    backlog = 0

    @property
    def ready(self) -> int:
        """Records that can be taken now."""
        return len(self._records)

    def take_batch(self, max_count: int, max_bytes: int) -> tuple[list[bytes], None]:
        """``take``, with the (empty) token a DiskBuffer uses for acknowledgements."""
        return self.take(max_count, max_bytes), None

    def ack(self, token: Any) -> None:
        """Delivered records need no bookkeeping in memory."""

    def give_back(self, records: Iterable[bytes], token: None = None) -> None:
        """Put records taken earlier back at the head, in their order (for retries).

        They were accepted already, so limits do not apply to them.
        """
        batch = list(records)
        self._records.extendleft(reversed(batch))
        self.bytes += sum(len(r) for r in batch)

    def drain(self) -> list[bytes]:
        """Remove and return everything."""
        records = list(self._records)
        self._records.clear()
        self.bytes = 0
        self._update_pressure()
        return records

    def _update_pressure(self) -> None:
        if (
            self.pressured
            and len(self._records) <= self._low_count
            and self.bytes <= self._low_bytes
        ):
            self.pressured = False

    @property
    def ready_bytes(self) -> int:
        return self.bytes
