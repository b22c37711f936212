"""The output seam: every output is an ``Output`` with one ``DeliveryQueue`` per destination.

An output only says how to encode an event (``encode``) and how to send a batch
of encoded records to a destination (``Destination.send``).  The queue does the
rest the same way for all: the bounded buffer, batching by count, bytes and age,
``max_in_flight``, retry with exponential backoff and jitter up to a cap,
health, drop counters by reason, the dead-letter file for permanent refusals,
backpressure signals at the watermarks, and a drain with a deadline on stop.
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

import attrs
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from obsd.config.model import BufferConfig, OutputConfig
from obsd.delivery.buffer import BoundedBuffer
from obsd.delivery.deadletter import DeadLetterFile
from obsd.delivery.diskbuffer import DiskBuffer
from obsd.delivery.flowcontrol import FlowControl
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


def backoff_delay(
    attempt: int, initial: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, capped.

    ``attempt`` counts failures in a row, from 1.  The fixed half keeps retries
    from hammering a destination; the random half spreads many obsd instances.
    """
    delay = min(cap, initial * 2 ** (attempt - 1))
    return delay / 2 + rand() * delay / 2


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
        #: what was still queued or in flight when the drain deadline passed
        self.leftovers: list[bytes] = []
        self._log = get_logger(f"obsd.output.{output_name}")

    def _make_buffer(self, buf: BufferConfig) -> BoundedBuffer | DiskBuffer:
        if buf.type == "memory":
            return BoundedBuffer(
                buf.max_events, buf.max_bytes, buf.when_full, buf.high_watermark, buf.low_watermark
            )
        ctx = self._ctx
        key = self.destination.key
        directory = Path(ctx.data_dir) / "spool" / self.name
        if key:
            directory = directory / "".join(c if c.isalnum() or c in "-._" else "_" for c in key)
        run_io = ctx.run_io
        if run_io is None:
            from twisted.internet.threads import deferToThreadPool

            reactor = ctx.reactor
            run_io = functools.partial(deferToThreadPool, reactor, reactor.getThreadPool())

        def report(event: str, reason: str) -> None:
            ctx.throttle.warning(f"{self.queue_id}:{event}", event, output=self.name, reason=reason)

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
            clock=self._clock,
            sync_interval=ctx.sync_interval,
            fsync=ctx.fsync,
            run_io=run_io,
            report=report,
        )
        disk.on_ready = self._kick
        return disk

    def open(self) -> None:
        """Start the buffer (a disk buffer replays what a previous run left)."""
        if isinstance(self.buffer, DiskBuffer):
            self.buffer.open()
            if len(self.buffer):
                self._log.info(
                    "replaying spool", output=self.name, records=len(self.buffer)
                )
            self._kick()

    def close(self) -> defer.Deferred[None]:
        """Persist a disk buffer's state; nothing to do for memory."""
        if isinstance(self.buffer, DiskBuffer):
            return self.buffer.close()
        return defer.succeed(None)

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
            "failures_in_row": self.failures_in_row,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "dropped": dict(self.buffer.dropped),
        }

    def drain(self, timeout: float) -> defer.Deferred[None]:
        """Send everything left, waiting at most ``timeout`` seconds.

        What is still queued or in flight at the deadline is counted as dropped
        for ``shutdown`` and returned by ``leftovers()`` (a spool keeps it).
        """
        self._draining = True
        self._drained = defer.Deferred()
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
        leftovers = self.buffer.drain()
        for batch, _token in self._in_flight.values():
            leftovers.extend(batch)
        self.leftovers = leftovers
        if leftovers:
            self.buffer._drop("shutdown", len(leftovers))
            self._count_drops()
            self._log.warning(
                "shutdown deadline reached with events undelivered",
                output=self.name,
                destination=self.destination.key or None,
                undelivered=len(leftovers),
            )
        self._finish()
        for d in list(self._in_flight):
            d.cancel()

    def _finish(self) -> None:
        for attr in ("_timer", "_backoff", "_deadline_call"):
            call = getattr(self, attr, None)
            if call is not None and call.active():
                call.cancel()
            setattr(self, attr, None)
        self._ctx.flow_control.report(self.queue_id, False)
        assert self._drained is not None
        if not self._drained.called:
            self._drained.callback(None)


def public_fields(event: dict[str, Any]) -> dict[str, Any]:
    """The event without private ``_`` keys (what outputs that do not ask see)."""
    return {k: v for k, v in event.items() if not k.startswith("_")}


def decode_json_record(record: bytes) -> Any:
    """Best-effort decoding of a record for the dead-letter file."""
    try:
        return json.loads(record)
    except ValueError:
        return record.decode("utf-8", "replace")


class Output(Service):
    """Base of every output: routes events to its queues, reports health, drains on stop.

    Subclasses set ``type_name`` and implement ``encode``, and either implement
    ``send`` (one destination) or override ``make_destinations`` and
    ``destination_for`` (several, one queue each).
    """

    name: str
    type_name: ClassVar[str] = ""
    #: whether ``encode`` wants private ``_`` keys (Sentry and relay outputs)
    wants_private: ClassVar[bool] = False
    #: seconds ``stopService`` lets the queues drain; None: the daemon's shutdown_timeout
    #: (a reload sets 0 to hand a disk buffer's spool straight to the output's successor)
    drain_timeout: float | None = None

    def __init__(self, name: str, config: OutputConfig, context: OutputContext) -> None:
        self.name = name
        self.config = config
        self.context = context
        self.queues: dict[str, DeliveryQueue] = {
            dest.key: DeliveryQueue(name, dest, config, context, self.decode)
            for dest in self.make_destinations()
        }
        self._single = next(iter(self.queues.values())) if len(self.queues) == 1 else None
        self._encode_errors = context.telemetry.counter(f"obsd.output.{name}.encode_errors")
        self._received = context.telemetry.counter(f"obsd.output.{name}.received")
        for key, queue in self.queues.items():
            suffix = f".{key}" if key else ""
            context.telemetry.gauge(
                f"obsd.output.{name}{suffix}.queued", functools.partial(len, queue.buffer)
            )

    # -- what subclasses provide ---------------------------------------------------

    key = ""

    def make_destinations(self) -> Sequence[Destination]:
        """The destinations; by default the output itself is its one destination."""
        return [self]  # type: ignore[list-item]

    def destination_for(self, event: dict[str, Any]) -> str:
        """Which destination's queue an event goes to (several-destination outputs)."""
        return ""

    def encode(self, event: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def decode(self, record: bytes) -> Any:
        """A record as the dead-letter file shows it."""
        return decode_json_record(record)

    def send(self, batch: list[bytes]) -> defer.Deferred[SendResult | None]:
        raise NotImplementedError

    # -- the router's side ----------------------------------------------------------

    def accept(self, event: dict[str, Any]) -> None:
        """Take one routed event: encode it and queue it."""
        self._received.inc()
        try:
            record = self.encode(event)
        except Exception as exc:  # noqa: BLE001 - one bad event must not stop the others
            self._encode_errors.inc()
            self.context.dead_letter.write(self.name, f"cannot encode: {exc!r}", repr(event))
            self.context.throttle.error(
                f"{self.name}:encode",
                "output cannot encode event",
                output=self.name,
                error=repr(exc),
            )
            return
        if self._single is not None:
            self._single.put(record)
        else:
            self.queues[self.destination_for(event)].put(record)

    def health(self) -> dict[str, Any]:
        """The worst state of the queues, and each queue's report."""
        reports = {key or "default": q.health() for key, q in self.queues.items()}
        order = {OK: 0, DEGRADED: 1, FAILING: 2}
        worst = max(reports.values(), key=lambda r: order[r["state"]])
        return {
            "type": self.type_name,
            "state": worst["state"],
            "since": worst["since"],
            "destinations": reports,
        }

    def startService(self) -> None:
        """Open the queues (disk buffers replay what a previous run left)."""
        super().startService()
        for queue in self.queues.values():
            queue.open()

    def stopService(self) -> defer.Deferred[Any]:
        """Drain every queue within the daemon's shutdown deadline, then persist spools."""
        super().stopService()
        timeout = self.drain_timeout
        if timeout is None:
            timeout = self.context.shutdown_timeout
        drains = [q.drain(timeout) for q in self.queues.values()]
        d = defer.gatherResults(drains, consumeErrors=True)
        d.addCallback(lambda _: self.before_close())
        d.addCallback(lambda _: defer.gatherResults([q.close() for q in self.queues.values()]))
        d.addCallback(lambda _: self.after_drain())
        return d

    def before_close(self) -> None:
        """After the drain, before spools close: the last moment to queue records to disk."""

    def wait_durable(self) -> defer.Deferred[Any]:
        """Fires when every event this output has accepted is on disk (disk buffers)."""
        return defer.gatherResults([q.wait_durable() for q in self.queues.values()])

    def after_drain(self) -> None:
        """Release resources (connections, files) once drained."""
