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

The consumer never blocks the reactor: a ``LoopingCall`` runs
``consume(timeout=0)``; while outputs are congested the assigned partitions
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

from obsd.codecs.relaywire import decode_event
from obsd.config.model import InputConfig, ObsdConfig
from obsd.config.schema import Problems, at_least, setting
from obsd.contracts import InputContext
from obsd.errors import ParseError
from obsd.inputs.relayed import relayed_emitter
from obsd.net.kafka import KafkaClientConfig, check_client, client_settings
from obsd.ops.log import get_logger
from obsd.twistedtypes import Service

LISTEN_TYPES: frozenset[str] = frozenset()
#: no listeners, and nothing on [http] either: it reads from the brokers
MOUNTS_ON_HTTP = False
#: seconds a stop waits for the last batches to reach the disk before leaving the group
STOP_WAIT = 5.0


@attrs.frozen(kw_only=True)
class Config(KafkaClientConfig, InputConfig):
    """``[inputs.kafka]``."""

    topics: list[str] = setting(
        factory=lambda: ["obsd-log", "obsd-error", "obsd-metric", "obsd-span", "obsd-sentry"],
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


def consumer_settings(config: Config, client_id: str) -> dict[str, Any]:
    conf = client_settings(config, client_id)
    conf.update({
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

            consumer = Consumer(consumer_settings(config, f"obsd-{context.hostname or name}"))
        self._consumer = consumer
        self._hand_on = relayed_emitter(context.make_ingest(), name)
        self._poll = LoopingCall(self._poll_once)
        self._poll.clock = context.clock
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
            list(self.config.topics), on_assign=self._assigned, on_revoke=self._revoked
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
        waited: defer.Deferred[Any] = defer.DeferredList(list(self._pending))
        waited.addTimeout(STOP_WAIT, self.context.clock)
        waited.addErrback(lambda _: None)
        return waited.addCallback(lambda _: self._close())

    def _close(self) -> defer.Deferred[None]:
        """Commit the stored offsets and leave the group, in a thread (both may wait)."""
        self._closed = True
        consumer = self._consumer

        def finish() -> None:
            # nothing stored since the last commit raises; that is fine
            with contextlib.suppress(Exception):
                consumer.commit(asynchronous=False)
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
        self._log.info(
            "kafka partitions assigned", input=self.name,
            partitions=sorted(f"{p.topic}/{p.partition}" for p in partitions),
        )
        if self._paused:
            consumer.pause(partitions)

    def _revoked(self, consumer: Any, partitions: list[Any]) -> None:
        """Partitions move to another process: what is not committed is read again there."""
        self.lag = {k: v for k, v in self.lag.items()
                    if (k[0], k[1]) not in {(p.topic, p.partition) for p in partitions}}
        self._log.info(
            "kafka partitions revoked", input=self.name,
            partitions=sorted(f"{p.topic}/{p.partition}" for p in partitions),
        )

    # -- one turn ------------------------------------------------------------------

    def _poll_once(self) -> None:
        self._flow()
        messages = self._consumer.consume(num_messages=self.config.max_batch, timeout=0)
        offsets: dict[tuple[str, int], int] = {}
        for message in messages:
            if message.error() is not None:
                self.context.throttle.warning(
                    f"input:{self.name}:kafka", "kafka consumer error",
                    input=self.name, error=str(message.error()),
                )
                continue
            offsets[(message.topic(), message.partition())] = message.offset() + 1
            self._take(message)
        if offsets:
            self._commit_when_durable(offsets)
        self._note_lag()

    def _take(self, message: Any) -> None:
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
        self._hand_on(event)

    def _commit_when_durable(self, offsets: dict[tuple[str, int], int]) -> None:
        from confluent_kafka import TopicPartition

        partitions = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]

        def durable(_: Any) -> None:
            if self._closed:
                return  # left the group meanwhile: it reads these again
            try:
                self._consumer.store_offsets(offsets=partitions)
                if self.running:  # at stop, the closing commit takes them
                    self._consumer.commit(asynchronous=True)
                self._commits.inc()
            except Exception as exc:  # noqa: BLE001 - a rebalance took the partition: re-read
                self._commit_errors.inc()
                self.context.throttle.warning(
                    f"input:{self.name}:commit", "kafka offsets not committed; they are read again",
                    input=self.name, error=str(exc),
                )

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
