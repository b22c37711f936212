"""An output's delivery queue: one per destination, the same for every output.

The queue takes encoded records and does the rest the same way for all
outputs: the bounded buffer (memory or disk), batching by count, bytes and
age, ``max_in_flight``, retry with exponential backoff and jitter up to a cap,
health, drop counters by reason, the dead-letter file for permanent refusals,
backpressure signals at the watermarks, and a drain with a deadline on stop.
An output only says how to send a batch (``Destination.send``).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from obsd.config.model import BufferConfig, OutputConfig
from obsd.delivery.buffer import BoundedBuffer
from obsd.delivery.deadletter import DeadLetterFile
from obsd.delivery.diskbuffer import DiskBuffer
from obsd.delivery.flowcontrol import FlowControl
from obsd.delivery.leftovers import has_records, remove_spool, spool_directory, write_records
from obsd.ops.log import get_logger
from obsd.ops.telemetry import Telemetry
from obsd.ops.throttle import ThrottledLogger

OK = "ok"
DEGRADED = "degraded"
FAILING = "failing"


class PermanentError(Exception):
    """A destination refused a whole batch for good: dead-letter it, do not retry."""


@attrs.define
class SendResult:
    """What became of a batch that was answered: indices to retry and to reject.

    Indices not named were delivered.  A sender returns ``None`` when all were.
    """

    retry: list[int] = attrs.field(factory=list)
    rejected: list[tuple[int, str]] = attrs.field(factory=list)
    #: why records are retried, for logs and health
    retry_reason: str = ""
    #: a destination's own "come back after" (Retry-After), overriding backoff
    retry_after: float | None = None
    #: records the destination asks to hold back until a time (a rate limit), with what
    #: to send then (None: the record itself); they stay queued, so a spool keeps them
    held: list[tuple[int, float, bytes | None]] = attrs.field(factory=list)


class Destination(Protocol):
    """Where one queue delivers."""

    key: str

    def send(self, batch: list[bytes]) -> defer.Deferred[SendResult | None]: ...


@attrs.define
class OutputContext:
    """What topology hands every output."""

    clock: IReactorTime
    telemetry: Telemetry
    dead_letter: DeadLetterFile
    flow_control: FlowControl
    throttle: ThrottledLogger
    reactor: Any = None
    data_dir: Any = None
    hostname: str = ""
    random: Callable[[], float] = random.random
    shutdown_timeout: float = 10.0
    #: disk buffers: seconds between writes, fsync or not, and how blocking I/O runs
    sync_interval: float = 1.0
    fsync: bool = False
    run_io: Any = None
    #: the ``[http]`` site's root, for outputs that are scraped (Prometheus)
    http: Any = None


def backoff_delay(
    attempt: int, initial: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, capped.

    ``attempt`` counts failures in a row, from 1.  The fixed half keeps retries
    from hammering a destination; the random half spreads many obsd instances.
    """
    delay = min(cap, initial * 2 ** (attempt - 1))
    return float(delay / 2 + rand() * delay / 2)


class DeliveryQueue:
    """One destination's queue: buffer, batches, retries, health."""

    def __init__(
        self,
        output_name: str,
        destination: Destination,
        config: OutputConfig,
        context: OutputContext,
        decode: Callable[[bytes], Any],
    ) -> None:
        self.name = output_name
        self.destination = destination
        self.config = config
        self._ctx = context
        self._clock = context.clock
        self._decode = decode
        self.queue_id = f"{output_name}/{destination.key}" if destination.key else output_name
        self.buffer: BoundedBuffer | DiskBuffer = self._make_buffer(config.buffer)
        self._batch_size = config.batch_size
        self._batch_bytes = config.batch_bytes
        prefix = f"obsd.output.{output_name}"
        tel = context.telemetry
        self._sent = tel.counter(f"{prefix}.sent")
        self._batches = tel.counter(f"{prefix}.batches")
        self._retried = tel.counter(f"{prefix}.retried")
        self._rejected = tel.counter(f"{prefix}.rejected")
        self._drop_prefix = f"{prefix}.dropped"
        self._counted_drops = 0
        self._kicking = False
        self._kick_again = False
        self._in_flight: dict[defer.Deferred[Any], tuple[list[bytes], Any]] = {}
        self._timer: IDelayedCall | None = None
        self._backoff: IDelayedCall | None = None
        self._flush_due = False
        self._draining = False
        self._drained: defer.Deferred[None] | None = None
        self.failures_in_row = 0
        self.state = OK
        self.state_since = self._clock.seconds()
        self._failing_since: float | None = None
        self.last_error = ""
        self.last_error_at: float | None = None
        self._deadline_call: IDelayedCall | None = None
        #: what was still queued or in flight when the drain deadline passed (memory
        #: queues write it to their spool directory on close)
        self.leftovers: list[bytes] = []
        #: a memory queue sending what the last run left: a disk buffer until delivered
        self._replaying = False
        #: (until, record, token) held back for a destination's rate limit, in hold order;
        #: taken from the buffer but never acked, so a disk buffer's spool keeps them
        self._held: list[tuple[float, bytes, Any]] = []
        self._release_call: IDelayedCall | None = None
        #: how many records may wait in the held state; past it the oldest is dead-lettered
        self.max_held = config.buffer.max_events
        self._held_dropped = tel.counter(f"{prefix}.dropped.rate_limited")
        self._log = get_logger(f"obsd.output.{output_name}")

    def _make_buffer(self, buf: BufferConfig) -> BoundedBuffer | DiskBuffer:
        if buf.type == "memory":
            return BoundedBuffer(
                buf.max_events, buf.max_bytes, buf.when_full, buf.high_watermark, buf.low_watermark
            )
        return self._make_disk_buffer(buf)

    @property
    def spool_directory(self) -> Path:
        """Where this queue's spool lives (a disk buffer's, or a memory queue's leftovers)."""
        return spool_directory(self._ctx.data_dir, self.name, self.destination.key)

    def _run_io(self) -> Callable[[Callable[[], Any]], defer.Deferred[Any]]:
        run_io = self._ctx.run_io
        if run_io is None:
            from twisted.internet.threads import deferToThreadPool

            reactor = self._ctx.reactor
            run_io = functools.partial(deferToThreadPool, reactor, reactor.getThreadPool())
        return run_io  # type: ignore[no-any-return]

    def _make_disk_buffer(self, buf: BufferConfig) -> DiskBuffer:
        ctx = self._ctx

        def report(event: str, reason: str) -> None:
            ctx.throttle.warning(f"{self.queue_id}:{event}", event, output=self.name, reason=reason)

        disk = DiskBuffer(
            self.spool_directory,
            max_events=buf.max_events,
            max_bytes=buf.max_bytes,
            when_full=buf.when_full,
            high_watermark=buf.high_watermark,
            low_watermark=buf.low_watermark,
            memory_events=buf.memory_events,
            memory_bytes=buf.memory_bytes,
            segment_bytes=buf.segment_bytes,
            clock=self._clock,
            sync_interval=ctx.sync_interval,
            fsync=ctx.fsync,
            run_io=self._run_io(),
            report=report,
        )
        disk.on_ready = self._kick
        return disk

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
        d.addCallback(lambda _: self._run_io()(functools.partial(remove_spool, directory)))
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
        directory = self.spool_directory
        job = functools.partial(
            write_records, directory, leftovers, self.config.buffer.segment_bytes, True
        )
        d: defer.Deferred[Any] = self._run_io()(job)

        def written(count: int) -> None:
            self._log.info(
                "kept undelivered events on disk; they are sent first at the next start",
                output=self.name,
                destination=self.destination.key or None,
                kept=count,
                spool=str(directory),
            )

        def failed(failure: Failure) -> None:
            self.buffer.count_drop("shutdown", len(leftovers))
            self._count_drops()
            self._log.error(
                "LOST events at shutdown: cannot write them to data_dir",
                output=self.name,
                destination=self.destination.key or None,
                lost=len(leftovers),
                spool=str(directory),
                error=failure.getErrorMessage(),
            )

        d.addCallbacks(written, failed)
        return d

    def __len__(self) -> int:
        """Records queued (the buffer may change: a memory queue replays on disk first)."""
        return len(self.buffer)

    def wait_durable(self) -> defer.Deferred[None]:
        """Fires when everything queued so far is on disk (at once for memory buffers)."""
        if isinstance(self.buffer, DiskBuffer):
            return self.buffer.wait_durable()
        return defer.succeed(None)

    # -- accepting -------------------------------------------------------------------

    def put(self, record: bytes) -> bool:
        """Queue one encoded record; False (and counted) when the policy dropped it."""
        buffer = self.buffer
        before = buffer.dropped_total
        accepted = buffer.put(record)
        if buffer.dropped_total != before:
            self._count_drops()
        if buffer.pressured:
            self._ctx.flow_control.report(self.queue_id, True)
        if (
            self._timer is not None
            and buffer.ready < self._batch_size
            and buffer.bytes < self._batch_bytes
        ):
            return accepted  # fast path: the age timer will send this batch
        self._kick()
        return accepted

    def _count_drops(self) -> None:
        self._counted_drops = self.buffer.dropped_total
        tel = self._ctx.telemetry
        for reason, count in self.buffer.dropped.items():
            counter = tel.counter(f"{self._drop_prefix}.{reason}")
            if counter.value != count:
                counter.inc(count - counter.value)
                self._ctx.throttle.warning(
                    f"{self.queue_id}:drop:{reason}",
                    "output queue dropped events",
                    output=self.name,
                    reason=reason,
                    dropped_total=count,
                    policy=self.buffer.when_full,
                )

    # -- sending ---------------------------------------------------------------------

    def _kick(self) -> None:
        """Send what is due; otherwise make sure the age timer runs.

        Not re-entrant: a disk buffer that refills while a batch is being taken
        asks for another round, which runs when this one is done.
        """
        if self._kicking:
            self._kick_again = True
            return
        self._kicking = True
        try:
            self._kick_again = True
            while self._kick_again:
                self._kick_again = False
                self._kick_once()
        finally:
            self._kicking = False

    def _kick_once(self) -> None:
        cfg = self.config
        buffer = self.buffer
        if buffer.dropped_total != self._counted_drops:  # a disk buffer dropped on its own
            self._count_drops()
        while (
            buffer.ready
            and len(self._in_flight) < cfg.max_in_flight
            and self._backoff is None
            and (
                self._flush_due
                or self._draining
                or buffer.ready >= cfg.batch_size
                or buffer.bytes >= cfg.batch_bytes
                or buffer.backlog  # more waits on disk: the window is a full batch
            )
        ):
            self._send(*buffer.take_batch(cfg.batch_size, cfg.batch_bytes))
            self._flush_due = False
        if buffer.ready and self._timer is None and self._backoff is None and not self._flush_due:
            # once a flush is due, the next answer kicks; re-arming here would spin
            # (a zero batch_timeout with max_in_flight reached re-fires at once, forever)
            self._timer = self._clock.callLater(cfg.batch_timeout, self._age_reached)
        elif not buffer.ready and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _age_reached(self) -> None:
        self._timer = None
        self._flush_due = True
        self._kick()

    def _send(self, batch: list[bytes], token: Any) -> None:
        self._update_pressure()
        try:
            d = self.destination.send(batch)
        except Exception:  # noqa: BLE001 - a sender bug must not lose the batch
            d = defer.fail(Failure())
        self._in_flight[d] = (batch, token)
        self._batches.inc()
        d.addCallbacks(self._sent_ok, self._sent_failed, callbackArgs=(d,), errbackArgs=(d,))

    def _sent_ok(self, result: SendResult | None, d: defer.Deferred[Any]) -> None:
        batch, token = self._in_flight.pop(d)
        if result is not None and result.held:
            batch, token = self._park(batch, token, result)
        if result is None or (not result.retry and not result.rejected):
            self._sent.inc(len(batch))
            self.buffer.ack(token)
            self._succeeded()
        else:
            for index, reason in result.rejected:
                self._reject(batch[index], reason)
            delivered = len(batch) - len(result.retry) - len(result.rejected)
            self._sent.inc(delivered)
            if result.retry:
                records = [batch[i] for i in result.retry]
                retry_token = [token[i] for i in result.retry] if token is not None else None
                if token is not None:
                    done = set(range(len(batch))) - set(result.retry)
                    self.buffer.ack([token[i] for i in sorted(done)])
                self._retry(records, result.retry_reason or "retry", result.retry_after,
                            retry_token)
            else:
                self.buffer.ack(token)
                self._succeeded()
        self._kick()
        self._check_drained()
        self._end_replay()

    def _park(
        self, batch: list[bytes], token: Any, result: SendResult
    ) -> tuple[list[bytes], Any]:
        """Move the held records of an answered batch to the held state.

        Returns the rest of the batch (and token), with ``result``'s indices renumbered.
        """
        held = {index: (until, replacement) for index, until, replacement in result.held}
        rest = [i for i in range(len(batch)) if i not in held]
        for index, (until, replacement) in held.items():
            element = token[index] if token is not None else None
            self._held.append((until, replacement or batch[index], element))
        while len(self._held) > self.max_held:
            _until, record, element = self._held.pop(0)  # the longest held
            self._held_dropped.inc()
            self._reject(record, "rate-limit hold list full")
            if element is not None:
                self.buffer.ack([element])
        renumber = {old: new for new, old in enumerate(rest)}
        result.retry = [renumber[i] for i in result.retry if i in renumber]
        result.rejected = [(renumber[i], r) for i, r in result.rejected if i in renumber]
        result.held = []
        self._schedule_release()
        new_token = [token[i] for i in rest] if token is not None else None
        return [batch[i] for i in rest], new_token

    @property
    def held(self) -> int:
        """Records waiting for a destination's rate limit to end."""
        return len(self._held)

    def _schedule_release(self) -> None:
        if self._release_call is not None and self._release_call.active():
            self._release_call.cancel()
        self._release_call = None
        if self._held and not self._draining:
            delay = max(0.0, min(item[0] for item in self._held) - self._clock.seconds())
            self._release_call = self._clock.callLater(delay, self._release)

    def _release(self) -> None:
        """Held records whose time has come go back to the front of the queue."""
        if self._release_call is not None and self._release_call.active():
            self._release_call.cancel()  # called directly (at drain), not by the timer
        self._release_call = None
        now = self._clock.seconds()
        due = [item for item in self._held if item[0] <= now]
        self._held = [item for item in self._held if item[0] > now]
        if due:
            tokens: Any = [element for _u, _r, element in due]
            self.buffer.give_back(
                [record for _u, record, _e in due], tokens if tokens[0] is not None else None
            )
            self._kick()
        self._schedule_release()

    def _sent_failed(self, failure: Failure, d: defer.Deferred[Any]) -> None:
        batch, token = self._in_flight.pop(d)
        stopped = self._drained is not None and self._drained.called
        if failure.check(defer.CancelledError) and stopped:
            return None
        if failure.check(PermanentError):
            for record in batch:
                self._reject(record, str(failure.value))
            self.buffer.ack(token)
            self._kick()
            self._check_drained()
            return None
        reason = failure.getErrorMessage() or failure.type.__name__  # type: ignore[union-attr]
        self._retry(batch, reason, None, token)
        self._kick()
        self._check_drained()
        return None

    def _reject(self, record: bytes, reason: str) -> None:
        self._rejected.inc()
        self._ctx.dead_letter.write(self.name, reason, self._decode(record))
        self._ctx.throttle.warning(
            f"{self.queue_id}:rejected",
            "destination rejected an event for good; written to the dead-letter file",
            output=self.name,
            destination=self.destination.key or None,
            reason=reason,
        )

    def _retry(
        self, records: list[bytes], reason: str, retry_after: float | None, token: Any = None
    ) -> None:
        self.buffer.give_back(records, token)
        self._retried.inc(len(records))
        self.failures_in_row += 1
        now = self._clock.seconds()
        self.last_error = reason
        self.last_error_at = now
        if self._failing_since is None:
            self._failing_since = now
        state = FAILING if now - self._failing_since >= self.config.failing_after else DEGRADED
        self._set_state(state)
        delay = backoff_delay(
            self.failures_in_row, self.config.retry_initial, self.config.retry_max, self._ctx.random
        )
        if retry_after is not None:
            delay = max(delay, retry_after)
        self._ctx.throttle.warning(
            f"{self.queue_id}:retry",
            "delivery failed; retrying with backoff",
            output=self.name,
            destination=self.destination.key or None,
            reason=reason,
            failures_in_row=self.failures_in_row,
            retry_in=round(delay, 3),
            queued=len(self.buffer),
        )
        if self._backoff is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._backoff = self._clock.callLater(delay, self._backoff_over)

    def _backoff_over(self) -> None:
        self._backoff = None
        self._flush_due = True
        self._kick()

    def _succeeded(self) -> None:
        if self.failures_in_row:
            self._log.info(
                "delivery recovered",
                output=self.name,
                destination=self.destination.key or None,
                after_failures=self.failures_in_row,
            )
        self.failures_in_row = 0
        self._failing_since = None
        self._set_state(OK)

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.state_since = self._clock.seconds()

    def _update_pressure(self) -> None:
        if not self.buffer.pressured:
            self._ctx.flow_control.report(self.queue_id, False)

    # -- health and stop -------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """State (ok, degraded, failing) and since when, with the numbers behind it."""
        since = self._failing_since
        if since is not None and self._clock.seconds() - since >= self.config.failing_after:
            self._set_state(FAILING)
        return {
            "state": self.state,
            "since": self.state_since,
            "queued": len(self.buffer),
            "queued_bytes": self.buffer.bytes,
            "spool_bytes": getattr(self.buffer, "disk_bytes", 0),
            "in_flight": sum(len(batch) for batch, _token in self._in_flight.values()),
            "held": len(self._held),
            "failures_in_row": self.failures_in_row,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "dropped": dict(self.buffer.dropped),
        }

    def drain(self, timeout: float) -> defer.Deferred[None]:
        """Send everything left, waiting at most ``timeout`` seconds.

        What is still queued or in flight at the deadline stays in a disk
        buffer's spool, or (memory) is kept in ``leftovers`` for ``close`` to write.
        """
        self._draining = True
        self._drained = defer.Deferred()
        if self._held:
            self._release()  # what a rate limit no longer holds goes out with the rest
        if self._backoff is not None and timeout > 0:
            # a destination that failed gets one more chance within the deadline
            self._backoff.cancel()
            self._backoff = None
        self._deadline_call = self._clock.callLater(timeout, self._deadline)
        self._kick()
        self._check_drained()
        return self._drained

    def _check_drained(self) -> None:
        if (
            self._drained is not None
            and not self._drained.called
            and not self.buffer.ready
            and not len(self.buffer)
            and not self._in_flight
        ):
            self._finish()

    def _deadline(self) -> None:
        self._deadline_call = None
        if self.buffer.durable:
            if len(self.buffer):
                self._log.info(
                    "shutdown deadline reached; undelivered events stay in the spool",
                    output=self.name,
                    destination=self.destination.key or None,
                    kept=len(self.buffer),
                )
            self._finish()
            for d in list(self._in_flight):
                d.cancel()
            return
        leftovers = [record for batch, _token in self._in_flight.values() for record in batch]
        leftovers.extend(self.buffer.drain())  # in flight first: they are the oldest
        self.leftovers = leftovers
        if leftovers:
            self._log.warning(
                "shutdown deadline reached with events undelivered; keeping them in data_dir",
                output=self.name,
                destination=self.destination.key or None,
                undelivered=len(leftovers),
            )
        self._finish()
        for d in list(self._in_flight):
            d.cancel()

    def _finish(self) -> None:
        if self._held and not self.buffer.durable:
            self.leftovers.extend(record for _until, record, _element in self._held)
            self._log.info(
                "records held for a rate limit are kept for the next run",
                output=self.name, held=len(self._held),
            )
        # a disk buffer never acked them: its spool keeps them for the next run
        self._held = []
        for attr in ("_timer", "_backoff", "_deadline_call", "_release_call"):
            call = getattr(self, attr, None)
            if call is not None and call.active():
                call.cancel()
            setattr(self, attr, None)
        self._ctx.flow_control.report(self.queue_id, False)
        assert self._drained is not None
        if not self._drained.called:
            self._drained.callback(None)
