"""The ``kafka`` input: central reads what agents' Kafka outputs wrote, in a consumer group.

Any number of central processes join one ``group_id``; Kafka hands each its
share of the partitions and moves them on a rebalance.  Messages are the
Kafka output's: the relay wire's JSON (``obsd-format: 1``), and each event
keeps its ``id``, ``host`` and ``timestamp`` (as over the HTTP relay).

An offset is committed only once every event before it is on disk in every
output's buffer: the input hands a polled batch on, waits for the daemon's
``wait_durable()``, then stores and commits the batch's offsets.  That is why
the input needs ``[daemon] durability = "sync"`` and disk buffers on every
output (``check-config`` says so otherwise): a central process killed with -9
then loses nothing, and the partitions it held are read again from the last
commit by whichever process gets them (an event may come twice; its ``id``
lets Elasticsearch keep it once).  A clean stop commits what reaches the disk
within ``STOP_WAIT`` seconds before leaving the group.

StatsD partials (``statsd_partial``) go to central's merging StatsD input,
tagged with their partition; their offsets wait until the interval they were
merged into is flushed and its points are on disk (``obsd.aggregation.ledger``,
``obsd.inputs.kafka_offsets``).  When the group moves a partition away, what
its partials added to open intervals is taken back and the new owner reads
them again from the last commit: no point is lost or counted twice.  The
group uses the cooperative-sticky assignor, so a rebalance moves only the
partitions that change hands.

The consumer never blocks the reactor: a ``LoopingCall`` runs
``consume(timeout=0)`` (and, while a poll comes back full, the next reactor
turn polls again, ``max_batch`` messages a turn, so a backlog drains at the
speed of a core); while outputs are congested the assigned partitions
are paused (polling goes on, so the group keeps the process).  Consumer lag
per partition is a gauge, summed in ``obsd.input.NAME.lag``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from obsd import events
from obsd.aggregation.ledger import ORIGIN
from obsd.codecs.relaywire import decode_event
from obsd.config.model import InputConfig, ObsdConfig
from obsd.config.schema import Problems, at_least, setting
from obsd.contracts import InputContext
from obsd.errors import ParseError
from obsd.inputs.kafka_offsets import CommitGate, Partition
from obsd.inputs.relayed import relayed_emitter
from obsd.net.kafka import ClientLog, KafkaClientConfig, check_client, client_settings
from obsd.ops.log import get_logger
from obsd.twistedtypes import Service

LISTEN_TYPES: frozenset[str] = frozenset()
#: no listeners, and nothing on [http] either: it reads from the brokers
MOUNTS_ON_HTTP = False
#: seconds a stop waits for the last batches to reach the disk before leaving the group
STOP_WAIT = 5.0
#: seconds after a failed commit before the offsets are asked for again
COMMIT_RETRY = 1.0


@attrs.frozen(kw_only=True)
class Config(KafkaClientConfig, InputConfig):
    """``[inputs.kafka]``."""

    topics: list[str] = setting(
        factory=lambda: [
            "obsd-log", "obsd-error", "obsd-metric", "obsd-span", "obsd-sentry",
            "obsd-statsd_partial",
        ],
        help="topics to read (the Kafka output's obsd-{kind})",
    )
    group_id: str = setting("obsd-central", help="the consumer group every central joins")
    auto_offset_reset: str = setting(
        "earliest", help="where a group with no committed offset starts: earliest or latest"
    )
    max_batch: int = setting(
        1000, check=at_least(1), help="messages handed on per reactor turn at most",
        client_sees="nothing: the rest is read at the next turn",
    )
    poll_interval: float = setting(
        0.01, check=at_least(0.001), help="seconds between polls of the consumer"
    )
    session_timeout: float = setting(
        10.0, check=at_least(1.0),
        help="seconds without a heartbeat before the group gives this process's partitions away",
        client_sees="nothing: another central process takes the partitions from the last commit",
    )


def check_config(name: str, cfg: Config, whole: ObsdConfig, problems: Problems) -> None:
    """Commits follow the disk: durability sync and disk buffers are required."""
    path = f"inputs.{name}"
    check_client(path, cfg, problems)
    if not cfg.topics:
        problems.add(f"{path}.topics", "name at least one topic")
    if cfg.auto_offset_reset not in ("earliest", "latest"):
        problems.add(f"{path}.auto_offset_reset", "expected earliest or latest")
    if whole.daemon.durability != "sync":
        problems.add(
            f"{path}", 'needs [daemon] durability = "sync": an offset is committed only once its '
            "events are on disk"
        )
    memory = sorted(n for n, out in whole.outputs.items() if out.buffer.type != "disk")
    if memory:
        problems.add(
            f"{path}", f"needs buffer.type = \"disk\" on every output (not on: {', '.join(memory)})"
            ": an offset is committed only once its events are on disk",
        )


def consumer_settings(
    config: Config, client_id: str, on_commit: Any = None, log: ClientLog | None = None
) -> dict[str, Any]:
    conf = client_settings(config, client_id, log)
    if on_commit is not None:
        conf["on_commit"] = on_commit
    conf.update({
        "partition.assignment.strategy": "cooperative-sticky",
        "group.id": config.group_id,
        "auto.offset.reset": config.auto_offset_reset,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "session.timeout.ms": int(config.session_timeout * 1000),
        "enable.partition.eof": False,
        "topic.metadata.refresh.interval.ms": 5000,
    })
    return conf


class KafkaInput(Service):
    """Polls, hands events on, and commits once they are on disk."""

    def __init__(
        self, name: str, config: Config, context: InputContext, consumer: Any = None
    ) -> None:
        super().__init__()
        self.setName(name)
        self.config = config
        self.context = context
        if consumer is None:
            from confluent_kafka import Consumer

            consumer = Consumer(consumer_settings(
                config, f"obsd-{context.hostname or name}", on_commit=self._committed,
                log=ClientLog(context.throttle, f"input:{name}"),
            ))
        self._consumer = consumer
        self._gate = CommitGate()
        self._ledger = context.merge_ledger
        self._retry_commit_at = 0.0
        self._hand_on = relayed_emitter(context.make_ingest(), name)
        self._poll = LoopingCall(self._poll_once)
        self._poll.clock = context.clock
        #: the extra poll at the next turn while a backlog drains
        self._more: Any = None
        self._paused = False
        self._log = get_logger(f"obsd.input.{name}")
        #: polled batches handed on whose offsets wait for the disk
        self._pending: set[defer.Deferred[None]] = set()
        self._closed = False
        prefix = f"obsd.input.{name}"
        tel = context.telemetry
        self._received = tel.counter(f"{prefix}.received")
        self._bad = tel.counter(f"{prefix}.bad_messages")
        self._commits = tel.counter(f"{prefix}.commits")
        self._commit_errors = tel.counter(f"{prefix}.commit_errors")
        #: (topic, partition) -> lag, from the consumer's cached watermarks
        self.lag: dict[tuple[str, int], int] = {}
        tel.gauge(f"{prefix}.lag", lambda: float(sum(self.lag.values())))

    def startService(self) -> None:
        super().startService()
        self._consumer.subscribe(
            list(self.config.topics), on_assign=self._assigned, on_revoke=self._revoked,
            on_lost=self._lost,
        )
        self._poll.start(self.config.poll_interval, now=False)

    def stopService(self) -> defer.Deferred[None]:
        """Stop polling; commit what reaches the disk within a few seconds; leave the group.

        The outputs drain after the inputs stop, and their disk buffers sync
        on their own timer, so the last batches' offsets are usually committed
        here; what is not, the group reads again (at least once).
        """
        super().stopService()
        if self._poll.running:
            self._poll.stop()
        if self._more is not None and self._more.active():
            self._more.cancel()
        waited: defer.Deferred[Any] = defer.DeferredList(list(self._pending))
        waited.addTimeout(STOP_WAIT, self.context.clock)
        waited.addErrback(lambda _: None)
        return waited.addCallback(lambda _: self._close())

    def _close(self) -> defer.Deferred[None]:
        """Commit the stored offsets and leave the group, in a thread (both may wait)."""
        final = self._ready()
        self._closed = True
        consumer = self._consumer

        def finish() -> None:
            if final:
                with contextlib.suppress(Exception):  # not committed: read again
                    consumer.commit(offsets=final, asynchronous=False)
            consumer.close()

        reactor = self.context.reactor
        if hasattr(reactor, "getThreadPool"):
            from twisted.internet.threads import deferToThreadPool

            closed: defer.Deferred[None] = deferToThreadPool(
                reactor, reactor.getThreadPool(), finish
            )
            return closed.addErrback(lambda f: None)
        finish()
        return defer.succeed(None)

    def _assigned(self, consumer: Any, partitions: list[Any]) -> None:
        """The group gave this process partitions (called inside ``consume``)."""
        for p in partitions:
            self._gate.assigned((p.topic, p.partition))
        self._log.info(
            "kafka partitions assigned", input=self.name,
            partitions=sorted(f"{p.topic}/{p.partition}" for p in partitions),
        )
        if self._paused:
            consumer.pause(partitions)

    def _revoked(self, consumer: Any, partitions: list[Any]) -> None:
        """Partitions move to another process: commit what is flushed, let the rest go.

        This process lives on, so points already flushed reach the disk: their
        partials' offsets are committed now (asynchronously; the commit reaches
        the broker before the rejoin does), and what is not committed is read
        again by the new owner.
        """
        moving = {(p.topic, p.partition) for p in partitions}
        flushed = {tp: o for tp, o in self._ready(self._ledger.flushed_through, raw=True).items()
                   if tp in moving}
        if flushed and not self._closed:
            with contextlib.suppress(Exception):  # a failed commit means a re-read
                consumer.commit(offsets=self._offsets(flushed), asynchronous=True)
        self._let_go(moving, "kafka partitions revoked")

    def _lost(self, consumer: Any, partitions: list[Any]) -> None:
        """The group took partitions away without asking (session lost): no commit."""
        self._let_go({(p.topic, p.partition) for p in partitions}, "kafka partitions lost")

    def _let_go(self, moving: set[Partition], message: str) -> None:
        for tp in moving:
            self._gate.revoked(tp)
            self._ledger.forget(self._origin(tp))
            self.lag.pop(tp, None)
        self._log.info(message, input=self.name, partitions=sorted(f"{t}/{p}" for t, p in moving))

    @staticmethod
    def _origin(tp: Partition) -> str:
        return f"kafka:{tp[0]}/{tp[1]}"

    # -- one turn ------------------------------------------------------------------

    def _poll_once(self) -> None:
        self._flow()
        messages = self._consumer.consume(num_messages=self.config.max_batch, timeout=0)
        batch: dict[Partition, tuple[int, int]] = {}
        gate = self._gate
        for message in messages:
            if message.error() is not None:
                self.context.throttle.warning(
                    f"input:{self.name}:kafka", "kafka consumer error",
                    input=self.name, error=str(message.error()),
                )
                continue
            tp = (message.topic(), message.partition())
            gate.read(tp, message.offset())
            batch[tp] = (message.offset() + 1, gate.generation(tp))
            self._take(message, tp)
        if batch:
            self._commit_when_durable(batch)
        self._commit_ready()
        self._note_lag()
        if len(messages) >= self.config.max_batch and not self._paused and self._more is None:
            self._more = self.context.clock.callLater(0, self._poll_again)

    def _poll_again(self) -> None:
        self._more = None
        if self.running:
            self._poll_once()

    def _take(self, message: Any, tp: Partition) -> None:
        try:
            event = decode_event(message.value() or b"")
        except ParseError as exc:
            self._bad.inc()
            self.context.throttle.warning(
                f"input:{self.name}:bad", "kafka message is not an obsd event; skipped",
                input=self.name, topic=message.topic(), partition=message.partition(),
                offset=message.offset(), reason=str(exc),
            )
            return
        self._received.inc()
        ledger = self._ledger
        if event.get(events.KIND) != events.STATSD_PARTIAL or not ledger.merging:
            self._hand_on(event)
            return
        origin = self._origin(tp)
        event[ORIGIN] = origin
        ledger.note_origin(origin)
        self._hand_on(event)  # synchronous: the merge has it now
        self._gate.hold(tp, message.offset(), ledger.holding_through())

    def _commit_when_durable(self, batch: dict[Partition, tuple[int, int]]) -> None:
        def durable(_: Any) -> None:
            self._gate.durable(batch)
            self._commit_ready()

        def not_durable(failure: Failure) -> None:
            self._commit_errors.inc()
            self.context.throttle.error(
                f"input:{self.name}:durable", "events not on disk; offsets not committed",
                input=self.name, error=failure.getErrorMessage(),
            )

        waiting = self.context.wait_durable()
        waiting.addCallbacks(durable, not_durable)
        if not waiting.called:
            self._pending.add(waiting)

            def settled(result: Any) -> Any:
                self._pending.discard(waiting)
                return result

            waiting.addBoth(settled)

    def _ready(self, through: float | None = None, raw: bool = False) -> Any:
        """What may be committed: as ``TopicPartition`` s (or ``{partition: offset}``)."""
        ready = self._gate.committable(self._ledger.settled_through if through is None else through)
        return ready if raw else self._offsets(ready)

    @staticmethod
    def _offsets(ready: dict[Partition, int]) -> list[Any]:
        from confluent_kafka import TopicPartition

        return [TopicPartition(t, p, o) for (t, p), o in ready.items()]

    def _commit_ready(self) -> None:
        """Commit what became safe (asynchronously; ``_committed`` hears the answer)."""
        if self._closed or not self.running:
            return  # at stop, the closing commit takes them
        if self.context.clock.seconds() < self._retry_commit_at:
            return
        ready = self._ready(raw=True)
        if not ready:
            return
        self._gate.asked(ready)
        try:
            self._consumer.commit(offsets=self._offsets(ready), asynchronous=True)
        except Exception as exc:  # noqa: BLE001 - no coordinator now: ask again later
            for tp, after in ready.items():
                self._gate.acknowledged(tp, after, ok=False)
            self._commit_failed(str(exc))

    def _committed(self, error: Any, partitions: list[Any]) -> None:
        """The broker's answer to a commit (called inside ``consume``)."""
        if self._closed:
            return
        failed = None if error is None else str(error)
        for p in partitions:
            ok = failed is None and p.error is None
            self._gate.acknowledged((p.topic, p.partition), p.offset, ok)
            if not ok:
                failed = failed or str(p.error)
        if failed is None:
            self._commits.inc()
        else:
            self._commit_failed(failed)

    def _commit_failed(self, reason: str) -> None:
        self._commit_errors.inc()
        self._retry_commit_at = self.context.clock.seconds() + COMMIT_RETRY
        self.context.throttle.warning(
            f"input:{self.name}:commit", "kafka offsets not committed; asking again",
            input=self.name, error=reason,
        )

    def _flow(self) -> None:
        """Pause the assigned partitions while outputs are congested; resume after."""
        congested = self.context.flow_control.congested
        if congested == self._paused:
            return
        assignment = self._consumer.assignment()
        if congested:
            self._consumer.pause(assignment)
        else:
            self._consumer.resume(assignment)
        self._paused = congested

    def _note_lag(self) -> None:
        for partition in self._consumer.assignment():
            try:
                _low, high = self._consumer.get_watermark_offsets(partition, cached=True)
                (position,) = self._consumer.position([partition])
            except Exception:  # noqa: BLE001 - not known yet: try at the next turn
                continue
            if high >= 0 and position.offset >= 0:
                self.lag[(partition.topic, partition.partition)] = max(0, high - position.offset)


def build_input(name: str, config: Config, context: InputContext) -> KafkaInput:
    return KafkaInput(name, config, context)
