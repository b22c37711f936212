"""The disk-backed form of an output's queue (``[outputs.NAME.buffer] type = "disk"``).

Same interface as ``BoundedBuffer``, so ``DeliveryQueue`` runs both alike; the
only extras are acknowledgements.  Every record accepted is written ahead to a
``SegmentLog`` (every ``sync_interval``, in a thread, one job at a time), and the
lowest undelivered sequence number is persisted as the ack.  A window of the
oldest records stays in memory for sending; when the window is full the newer
records live only on disk ("spilled") and are read back in order as the window
empties.  After a restart, everything from the ack on is replayed.  So a crash
loses at most the records of the last ``sync_interval``; a SIGTERM loses none.

Limits: ``max_events`` and ``max_bytes`` bound what is on disk, checked at every
sync; past them ``drop_oldest`` deletes the oldest segment, ``drop_newest``
refuses new records until there is room, and ``block`` asks inputs to pause
(and refuses past twice the limits).  Every drop is counted by reason, and so
is every damaged record skipped on replay (``corrupt``).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from obsd.delivery.buffer import BLOCK, BLOCK_HARD_CAP, DROP_NEWEST, DROP_OLDEST
from obsd.delivery.spool import SegmentLog

Token = list[int]


class SerialIO:
    """Run blocking jobs one at a time through ``run_io`` (a thread, normally)."""

    def __init__(self, run_io: Callable[[Callable[[], Any]], defer.Deferred[Any]]) -> None:
        self._run_io = run_io
        self._jobs: deque[tuple[Callable[[], Any], defer.Deferred[Any]]] = deque()
        self._busy = False

    def submit(self, job: Callable[[], Any]) -> defer.Deferred[Any]:
        done: defer.Deferred[Any] = defer.Deferred()
        self._jobs.append((job, done))
        if not self._busy:
            self._next()
        return done

    def _next(self) -> None:
        if not self._jobs:
            self._busy = False
            return
        self._busy = True
        job, done = self._jobs.popleft()
        d = self._run_io(job)

        def finished(result: Any) -> None:
            self._next()
            if isinstance(result, Failure):
                done.errback(result)
            else:
                done.callback(result)

        d.addBoth(finished)

    @property
    def idle(self) -> bool:
        return not self._busy


class DiskBuffer:
    """Records written ahead to disk, with a window of them in memory."""

    durable = True

    def __init__(
        self,
        directory: Path,
        *,
        max_events: int,
        max_bytes: int,
        when_full: str,
        high_watermark: float,
        low_watermark: float,
        memory_events: int,
        memory_bytes: int,
        segment_bytes: int,
        clock: Any,
        sync_interval: float,
        fsync: bool,
        run_io: Callable[[Callable[[], Any]], defer.Deferred[Any]],
        report: Callable[[str, str], None],
    ) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.when_full = when_full
        self._high = high_watermark
        self._low = low_watermark
        self.memory_events = memory_events
        self.memory_bytes = memory_bytes
        self._clock = clock
        self._sync_interval = sync_interval
        self._report = report
        self.log = SegmentLog(directory, segment_bytes, fsync)
        self._io = SerialIO(run_io)
        self._mem: deque[tuple[int, bytes]] = deque()
        self._mem_bytes = 0
        self._pending: list[tuple[int, bytes]] = []
        self._pending_bytes = 0
        self._in_flight: list[Token] = []
        self._next_seq = 0
        self._next_spill = 0
        self._refilling = False
        self._refused_full = False
        self._disk_bytes = 0
        self._persisted_ack = 0
        self._loop: LoopingCall | None = None
        self._durable_waiters: list[defer.Deferred[None]] = []
        self.dropped: Counter[str] = Counter()
        self.dropped_total = 0
        self.pressured = False
        self.bytes = 0
        #: called when records become ready in memory (the queue's kick)
        self.on_ready: Callable[[], None] = lambda: None

    # -- lifecycle -------------------------------------------------------------------

    def open(self) -> None:
        """Open the spool (small and bounded: the ack and the last segment) and start syncing."""
        self.log.open()
        for problem in self.log.problems:
            self._report("spool problem", problem)
        self._next_seq = self.log.next_seq
        self._next_spill = self.log.ack
        self._persisted_ack = self.log.ack
        self._disk_bytes = self.log.disk_bytes
        self._loop = LoopingCall(self.sync)
        self._loop.clock = self._clock
        self._loop.start(self._sync_interval, now=False)
        if self._spilled:
            self._refill()

    def close(self) -> defer.Deferred[None]:
        """Write what is pending and the ack, then close the files."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        d = self.sync()
        d.addBoth(lambda _: self._io.submit(self.log.close))
        d.addErrback(lambda f: self._report("spool close failed", f.getErrorMessage()))
        return d

    # -- the BoundedBuffer interface -------------------------------------------------

    @property
    def _spilled(self) -> bool:
        return self._next_spill < self._next_seq

    def __len__(self) -> int:
        """Records not yet delivered (in memory, in flight, or only on disk)."""
        return self._next_seq - self._ack_position()

    @property
    def disk_bytes(self) -> int:
        """Bytes of spool segments on disk (as of the last sync)."""
        return self._disk_bytes

    @property
    def backlog(self) -> int:
        """Records on disk only, waiting for room in the memory window."""
        return self._next_seq - self._next_spill

    @property
    def ready(self) -> int:
        """Records in memory that can be taken now."""
        return len(self._mem)

    def put(self, record: bytes) -> bool:
        size = len(record)
        if size > self.max_bytes:
            self.count_drop("too_large")
            return False
        if self._refused_full:
            self.count_drop("full" if self.when_full == DROP_NEWEST else "overflow")
            return False
        seq = self._next_seq
        self._next_seq = seq + 1
        self._pending.append((seq, record))
        self._pending_bytes += size
        if (
            self._next_spill == seq  # not spilled: the window holds everything so far
            and len(self._mem) < self.memory_events
            and self._mem_bytes + size <= self.memory_bytes
        ):
            self._mem.append((seq, record))
            self._mem_bytes += size
            self._next_spill = seq + 1
        self.bytes = self._mem_bytes
        return True

    def take_batch(self, max_count: int, max_bytes: int) -> tuple[list[bytes], Token | None]:
        mem = self._mem
        records: list[bytes] = []
        seqs: Token = []
        size = 0
        while mem and len(records) < max_count:
            nxt = len(mem[0][1])
            if records and size + nxt > max_bytes:
                break
            seq, record = mem.popleft()
            records.append(record)
            seqs.append(seq)
            size += nxt
        self._mem_bytes -= size
        self.bytes = self._mem_bytes
        if seqs:
            self._in_flight.append(seqs)
        if self._spilled and len(mem) <= self.memory_events * self._low:
            self._refill()
        return records, seqs

    def give_back(self, records: Iterable[bytes], token: Token | None = None) -> None:
        """Put records back for a retry, in sequence order.

        With several batches in flight they may fail in any order; merging them
        back by sequence number keeps the window sorted, which the ack (the
        lowest undelivered number) relies on.
        """
        assert token is not None
        records = list(records)
        self._forget(token)
        pairs = sorted(zip(token, records, strict=True))
        mem = self._mem
        head: list[tuple[int, bytes]] = []
        while mem and pairs and mem[0][0] < pairs[-1][0]:
            head.append(mem.popleft())
        mem.extendleft(reversed(sorted(head + pairs)) if head else reversed(pairs))
        added = sum(len(r) for r in records)
        self._mem_bytes += added
        self.bytes = self._mem_bytes

    def ack(self, token: Token | None) -> None:
        """These records are done with (delivered, or dead-lettered)."""
        if token:
            self._forget(token)
        if self._spilled and len(self._mem) <= self.memory_events * self._low:
            self._refill()

    def _forget(self, token: Token) -> None:
        wanted = set(token)
        for i, batch in enumerate(self._in_flight):
            if wanted.intersection(batch):
                rest = [s for s in batch if s not in wanted]
                if rest:
                    self._in_flight[i] = rest
                else:
                    del self._in_flight[i]
                return

    def drain(self) -> list[bytes]:
        """Nothing is given up at shutdown: what is left stays in the spool."""
        return []

    def count_drop(self, reason: str, count: int = 1) -> None:
        """Count ``count`` records given up for ``reason`` (also those the queue gives up)."""
        self.dropped[reason] += count
        self.dropped_total += count

    # -- acknowledgement, sync, refill -----------------------------------------------

    def _ack_position(self) -> int:
        candidates = [self._next_spill if self._spilled else self._next_seq]
        if self._mem:
            candidates.append(self._mem[0][0])
        candidates.extend(batch[0] for batch in self._in_flight if batch)
        return min(candidates)

    def wait_durable(self) -> defer.Deferred[None]:
        """Fires once every record put so far is on disk (``durability = "sync"``)."""
        d: defer.Deferred[None] = defer.Deferred()
        if not self._pending:
            d.callback(None)
        else:
            self._durable_waiters.append(d)
            if self._io.idle:
                self.sync()
        return d

    def sync(self) -> defer.Deferred[None]:
        """Write pending records and the ack; enforce the disk limits."""
        pending, self._pending = self._pending, []
        pending_bytes, self._pending_bytes = self._pending_bytes, 0
        waiters, self._durable_waiters = self._durable_waiters, []
        ack = self._ack_position()
        over = self._over_limits(pending_bytes)
        log = self.log

        def job() -> tuple[int, int, int | None]:
            if pending:
                log.append(pending)
            dropped_to = None
            if over and self.when_full == DROP_OLDEST:
                dropped_to = log.drop_oldest_segment()
            log.set_ack(max(ack, dropped_to or 0))
            return log.disk_bytes, log.ack, dropped_to

        d = self._io.submit(job)

        def done(result: tuple[int, int, int | None]) -> None:
            self._disk_bytes, self._persisted_ack, dropped_to = result
            if dropped_to is not None:
                self._skip_to(dropped_to, "full")
            self._update_limits()
            for waiter in waiters:
                waiter.callback(None)

        def failed(failure: Failure) -> None:
            # keep the records for the next sync: nothing accepted is given up
            self._pending[:0] = pending
            self._pending_bytes += pending_bytes
            self._durable_waiters[:0] = waiters
            self._report("spool write failed; retrying at the next sync", failure.getErrorMessage())

        d.addCallbacks(done, failed)
        return d

    def _over_limits(self, pending_bytes: int) -> bool:
        return (
            self._disk_bytes + pending_bytes > self.max_bytes
            or len(self) > self.max_events
        )

    def _update_limits(self) -> None:
        used = max(self._disk_bytes / self.max_bytes, len(self) / self.max_events)
        if self.when_full == BLOCK:
            if used >= self._high:
                self.pressured = True
            elif used <= self._low:
                self.pressured = False
            self._refused_full = used >= BLOCK_HARD_CAP
        elif self.when_full == DROP_NEWEST:
            self._refused_full = used >= 1
        else:
            self._refused_full = False

    def _skip_to(self, seq: int, reason: str) -> None:
        """Drop every undelivered record below ``seq`` (drop_oldest deleted them)."""
        skipped = 0
        while self._mem and self._mem[0][0] < seq:
            _s, record = self._mem.popleft()
            self._mem_bytes -= len(record)
            skipped += 1
        if self._spilled and self._next_spill < seq:
            skipped += min(seq, self._next_seq) - self._next_spill
            self._next_spill = min(seq, self._next_seq)
        self.bytes = self._mem_bytes
        if skipped:
            self.count_drop(reason, skipped)

    def _refill(self) -> None:
        if self._refilling:
            return
        self._refilling = True
        self.sync()  # what is pending must be on disk before it is read back
        start = self._next_spill
        in_flight = sum(len(batch) for batch in self._in_flight)
        room = self.memory_events - len(self._mem) - in_flight
        if room <= 0:
            self._refilling = False
            return  # the window is full with what is out for delivery
        room_bytes = max(1, self.memory_bytes - self._mem_bytes)
        log = self.log

        def job() -> tuple[list[tuple[int, bytes]], list[str], bool, int]:
            records, problems, at_end = log.read(start, room, room_bytes)
            return records, problems, at_end, log.next_seq

        d = self._io.submit(job)
        d.addCallbacks(self._refilled, self._refill_failed)

    def _refilled(self, result: tuple[list[tuple[int, bytes]], list[str], bool, int]) -> None:
        records, problems, at_end, written = result
        self._refilling = False
        for problem in problems:
            self.count_drop("corrupt")
            self._report("damaged spool record skipped", problem)
        for seq, record in records:
            if seq < self._next_spill:
                continue  # dropped or already read meanwhile
            self._mem.append((seq, record))
            self._mem_bytes += len(record)
            self._next_spill = seq + 1
        if at_end:
            # every record written before this read was seen (damaged ones skipped)
            self._next_spill = max(self._next_spill, min(written, self._next_seq))
        self.bytes = self._mem_bytes
        if self._spilled and len(self._mem) <= self.memory_events * self._low and records:
            self._refill()
        self.on_ready()

    def _refill_failed(self, failure: Failure) -> None:
        self._refilling = False
        self._report("spool read failed; retrying at the next sync", failure.getErrorMessage())
