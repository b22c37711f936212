"""Where a delivery queue keeps its records: a memory or disk buffer, and the spool
that holds a memory queue's leftovers across a restart.

``QueueStorage`` is the part of ``DeliveryQueue`` that opens, swaps and closes
its buffer (a memory queue replays the last run's leftovers from disk first);
the sending half is in ``delivery/queue.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from obsd.config.model import BufferConfig, OutputConfig
from obsd.delivery.buffer import BoundedBuffer
from obsd.delivery.contract import OutputContext
from obsd.delivery.diskbuffer import DiskBuffer
from obsd.delivery.leftovers import has_records, remove_spool, spool_directory, write_records

RunIO = Callable[[Callable[[], Any]], defer.Deferred[Any]]


def io_runner(ctx: OutputContext) -> RunIO:
    """How blocking disk work runs: the context's runner, or the reactor's thread pool."""
    run_io = ctx.run_io
    if run_io is None:
        from twisted.internet.threads import deferToThreadPool

        reactor = ctx.reactor
        run_io = functools.partial(deferToThreadPool, reactor, reactor.getThreadPool())
    return run_io  # type: ignore[no-any-return]


def memory_buffer(buf: BufferConfig) -> BoundedBuffer:
    return BoundedBuffer(
        buf.max_events, buf.max_bytes, buf.when_full, buf.high_watermark, buf.low_watermark
    )


def disk_buffer(
    directory: Path,
    buf: BufferConfig,
    ctx: OutputContext,
    report: Callable[[str, str], None],
    on_ready: Callable[[], None],
) -> DiskBuffer:
    """A disk buffer in ``directory`` with the config's limits and the daemon's sync rules."""
    disk = DiskBuffer(
        directory,
        max_events=buf.max_events,
        max_bytes=buf.max_bytes,
        when_full=buf.when_full,
        high_watermark=buf.high_watermark,
        low_watermark=buf.low_watermark,
        memory_events=buf.memory_events,
        memory_bytes=buf.memory_bytes,
        segment_bytes=buf.segment_bytes,
        clock=ctx.clock,
        sync_interval=ctx.sync_interval,
        fsync=ctx.fsync,
        run_io=io_runner(ctx),
        report=report,
    )
    disk.on_ready = on_ready
    return disk


def write_leftovers(
    directory: Path,
    records: list[bytes],
    segment_bytes: int,
    run_io: RunIO,
    log: Any,
    lost: Callable[[int], None],
    **where: Any,
) -> defer.Deferred[Any]:
    """Write a memory queue's undelivered ``records`` to its spool (sent first next start).

    ``lost(n)`` counts what could not be written (disk full); both outcomes are logged.
    """
    job = functools.partial(write_records, directory, records, segment_bytes, True)
    d: defer.Deferred[Any] = run_io(job)

    def written(count: int) -> None:
        log.info(
            "kept undelivered events on disk; they are sent first at the next start",
            kept=count, spool=str(directory), **where,
        )

    def failed(failure: Failure) -> None:
        lost(len(records))
        log.error(
            "LOST events at shutdown: cannot write them to data_dir",
            lost=len(records), spool=str(directory), error=failure.getErrorMessage(), **where,
        )

    d.addCallbacks(written, failed)
    return d


class QueueStorage:
    """The buffer side of a ``DeliveryQueue``: open, replay, keep and close."""

    # set by DeliveryQueue.__init__
    name: str
    queue_id: str
    destination: Any
    config: OutputConfig
    buffer: BoundedBuffer | DiskBuffer
    leftovers: list[bytes]
    _ctx: OutputContext
    _log: Any
    _replaying: bool
    _draining: bool
    _in_flight: dict[defer.Deferred[Any], tuple[list[bytes], Any]]

    def _kick(self) -> None:
        raise NotImplementedError

    def _count_drops(self) -> None:
        raise NotImplementedError

    def _make_buffer(self, buf: BufferConfig) -> BoundedBuffer | DiskBuffer:
        return memory_buffer(buf) if buf.type == "memory" else self._make_disk_buffer(buf)

    @property
    def spool_directory(self) -> Path:
        """Where this queue's spool lives (a disk buffer's, or a memory queue's leftovers)."""
        return spool_directory(self._ctx.data_dir, self.name, self.destination.key)

    def _make_disk_buffer(self, buf: BufferConfig) -> DiskBuffer:
        def report(event: str, reason: str) -> None:
            self._ctx.throttle.warning(
                f"{self.queue_id}:{event}", event, output=self.name, reason=reason
            )

        return disk_buffer(self.spool_directory, buf, self._ctx, report, self._kick)

    def open(self) -> None:
        """Start the buffer (a disk buffer replays what a previous run left).

        A memory queue whose last run left events at shutdown runs as a disk queue
        until they are delivered, so they go first and keep the spool's rules.
        """
        if (
            not isinstance(self.buffer, DiskBuffer)
            and self._ctx.data_dir is not None
            and has_records(self.spool_directory)
        ):
            self.buffer = self._make_disk_buffer(self.config.buffer)
            self._replaying = True
        if isinstance(self.buffer, DiskBuffer):
            self.buffer.open()
            if len(self.buffer):
                self._log.info(
                    "replaying spool", output=self.name, records=len(self.buffer)
                )
            self._kick()

    def _end_replay(self) -> None:
        """A memory queue's leftovers are all delivered: back to memory, spool removed."""
        if not self._replaying or self._draining or len(self.buffer) or self._in_flight:
            return
        self._replaying = False
        spool = self.buffer
        assert isinstance(spool, DiskBuffer)
        self.buffer = self._make_buffer(self.config.buffer)
        directory = self.spool_directory
        d = spool.close()
        d.addCallback(lambda _: io_runner(self._ctx)(functools.partial(remove_spool, directory)))
        d.addErrback(
            lambda f: self._log.warning(
                "cannot remove a delivered spool", directory=str(directory),
                error=f.getErrorMessage(),
            )
        )
        self._log.info("the last run's leftovers are delivered", output=self.name)

    def keep(self, record: bytes) -> None:
        """After the drain: keep a record for the next run (into the spool, not sent now)."""
        if self.buffer.durable:
            self.buffer.put(record)
        else:
            self.leftovers.append(record)

    def close(self) -> defer.Deferred[None]:
        """Persist a disk buffer's state; write a memory queue's leftovers to its spool."""
        if isinstance(self.buffer, DiskBuffer):
            return self.buffer.close()
        leftovers, self.leftovers = self.leftovers, []
        if not leftovers:
            return defer.succeed(None)

        def lost(count: int) -> None:
            self.buffer.count_drop("shutdown", count)
            self._count_drops()

        return write_leftovers(
            self.spool_directory, leftovers, self.config.buffer.segment_bytes,
            io_runner(self._ctx), self._log, lost,
            output=self.name, destination=self.destination.key or None,
        )

    def __len__(self) -> int:
        """Records queued (the buffer may change: a memory queue replays on disk first)."""
        return len(self.buffer)

    def wait_durable(self) -> defer.Deferred[None]:
        """Fires when everything queued so far is on disk (at once for memory buffers)."""
        if isinstance(self.buffer, DiskBuffer):
            return self.buffer.wait_durable()
        return defer.succeed(None)
