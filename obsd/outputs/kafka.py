"""The ``kafka`` output: events to Apache Kafka topics, leaving the queue only once acknowledged.

Each event becomes one message: its topic from the ``topic`` template
(``obsd-{kind}`` by default), its key from a field chosen per kind (metrics
and StatsD partials by metric name, so one consumer sees every point of a
series; everything else by host), its value the relay wire's JSON line
(``obsd.codecs.relaywire``, the same bytes an agent POSTs to central) and a
``obsd-format`` header with the format's version.

The client is confluent-kafka (librdkafka, in its wheels).  ``produce()``
only enqueues into librdkafka's own threads; a ``LoopingCall`` on the
injected clock runs the non-blocking ``poll(0)`` that delivers the broker's
acknowledgements, so the reactor never waits on the client.  A batch's
``send`` fires when every message in it is acknowledged (``acks=all``,
idempotent producer): then the delivery queue drops it, so a disk buffer and
the lossless SIGTERM hold across a broker outage.  A message the broker
refuses for good (too large, invalid) is dead-lettered; others are retried
by the queue.  Topics missing at the first send are created with
``partitions`` partitions.  An event whose message would pass
``message_max_bytes`` is refused when encoded (dead-lettered, counted).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Final, Literal

import attrs
from twisted.internet import defer
from twisted.internet.task import LoopingCall

from obsd import events
from obsd.codecs.relaywire import decode_event, encode_event
from obsd.config.model import ObsdConfig, OutputConfig
from obsd.config.schema import Problems, at_least, setting
from obsd.net.kafka import ClientLog, KafkaClientConfig, check_client, client_settings
from obsd.outputs.base import Output, OutputContext, SendResult

ACCEPTS = frozenset(events.KINDS)
DEFAULT_KINDS = frozenset(
    {events.LOG, events.ERROR, events.METRIC, events.SPAN, events.STATSD_PARTIAL}
)

#: the value's format: the relay wire's JSON line, version 1
FORMAT_VERSION: Final = b"1"
FORMAT_HEADER: Final = "obsd-format"
#: the key of each kind when ``keys`` does not name one
DEFAULT_KEYS: Final = {events.METRIC: events.METRIC_NAME, events.STATSD_PARTIAL: "metric"}


@attrs.frozen(kw_only=True)
class Config(KafkaClientConfig, OutputConfig):
    """``[outputs.kafka]``."""

    topic: str = setting("obsd-{kind}", help="topic name; {kind} is the event's kind")
    keys: dict[str, str] = setting(
        factory=dict,
        help="message key field per kind (default: metric name for metric and "
             "statsd_partial, host for the rest)",
    )
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = setting(
        "lz4", help="compression of message batches"
    )
    partitions: int = setting(4, check=at_least(1), help="partitions of a topic obsd creates")
    replication_factor: int = setting(
        1, check=at_least(1), help="replicas of a topic obsd creates"
    )
    create_topics: bool = setting(True, help="create missing topics at the first send")
    message_max_bytes: int = setting(
        1_000_000, check=at_least(1024),
        help="largest message; set it to the broker's message.max.bytes",
        client_sees="nothing: a larger event is dead-lettered with the reason (encode_errors)",
    )
    request_timeout: float = setting(
        30.0, check=at_least(1.0), help="seconds a message may wait for the broker's ack",
        client_sees="a message not acknowledged in time is retried by the queue with backoff",
    )
    poll_interval: float = setting(
        0.01, check=at_least(0.001), help="seconds between polls for the broker's acks"
    )
    batch_size: int = setting(1000, check=at_least(1), help="messages per send at most")


def check_config(name: str, cfg: Config, whole: ObsdConfig, problems: Problems) -> None:
    """Brokers named, a topic template that formats, SASL with credentials."""
    path = f"outputs.{name}"
    check_client(path, cfg, problems)
    try:
        cfg.topic.format(kind="log")
    except (KeyError, IndexError, ValueError) as exc:
        problems.add(f"{path}.topic", f"only {{kind}} may appear in braces: {exc}")


def producer_settings(
    config: Config, client_id: str, log: ClientLog | None = None
) -> dict[str, Any]:
    """librdkafka's settings for ``config`` (``partitioner`` as Java clients place keys)."""
    conf = client_settings(config, client_id, log)
    conf.update({
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": config.compression,
        "partitioner": "murmur2_random",
        "linger.ms": 5,
        "message.max.bytes": config.message_max_bytes,
        "message.timeout.ms": int(config.request_timeout * 1000),
    })
    return conf


def split_record(record: bytes) -> tuple[str, str, bytes]:
    """A queued record back to (topic, key, value)."""
    head, _, value = record.partition(b"\n")
    topic, key = json.loads(head)
    return str(topic), str(key), value


class _Batch:
    """The acks a batch waits for; fires with what to retry and reject."""

    def __init__(self, size: int) -> None:
        self.waiting = size
        self.result = SendResult()
        self.done: defer.Deferred[SendResult | None] = defer.Deferred()

    def report(self, index: int, error: Any) -> None:
        if error is not None:
            if _permanent(error):
                self.result.rejected.append((index, f"kafka refused: {error.str()}"))
            else:
                self.result.retry.append(index)
                self.result.retry_reason = f"kafka: {error.str()}"
        self.waiting -= 1
        self.finish_if_done()

    def finish_if_done(self) -> None:
        if self.waiting == 0 and not self.done.called:
            result = self.result
            self.done.callback(result if result.retry or result.rejected else None)


def _permanent(error: Any) -> bool:
    from confluent_kafka import KafkaError

    return bool(
        error.code() in (KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_MSG_SIZE,
                         KafkaError.INVALID_MSG, KafkaError.TOPIC_AUTHORIZATION_FAILED)
    )


class KafkaOutput(Output):
    """Produce each record; a batch is done when the broker acknowledged all of it."""

    type_name = "kafka"
    wants_private = True  # the Sentry raw body rides along, as over the HTTP relay

    def __init__(
        self,
        name: str,
        config: Config,
        context: OutputContext,
        producer: Any = None,
        admin: Callable[[], Any] | None = None,
    ) -> None:
        self.kafka_config = config
        self._keys = {**DEFAULT_KEYS, **config.keys}
        if producer is None:
            from confluent_kafka import Producer

            producer = Producer(producer_settings(
                config, f"obsd-{context.hostname or name}",
                ClientLog(context.throttle, f"output:{name}"),
            ))
        self._producer = producer
        self._make_admin = admin or self._real_admin
        self._topics_ok: set[str] = set()
        self._waiters: dict[str, list[defer.Deferred[None]]] = {}
        super().__init__(name, config, context)
        self._poll = LoopingCall(self._producer.poll, 0)
        self._poll.clock = context.clock
        context.telemetry.gauge(f"obsd.output.{name}.producer_queue", lambda: len(self._producer))

    # -- lifecycle ---------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._poll.start(self.kafka_config.poll_interval, now=False)

    def after_drain(self) -> Any:
        """Acks are polled until the queues drained; then the client stops."""
        if self._poll.running:
            self._poll.stop()
        self._producer.poll(0)
        return None

    # -- encoding ----------------------------------------------------------------

    def encode(self, event: dict[str, Any]) -> bytes:
        kind = str(event.get(events.KIND) or events.LOG)
        topic = self.kafka_config.topic.format(kind=kind)
        key = event.get(self._keys.get(kind, events.HOST))
        value = encode_event(event)
        if len(value) > self.kafka_config.message_max_bytes:
            raise ValueError(
                f"event of {len(value)} bytes is over message_max_bytes "
                f"({self.kafka_config.message_max_bytes})"
            )
        head = json.dumps([topic, "" if key is None else str(key)]).encode()
        return head + b"\n" + value

    def decode(self, record: bytes) -> Any:
        topic, key, value = split_record(record)
        return {"topic": topic, "key": key, "event": decode_event(value)}

    # -- sending -----------------------------------------------------------------

    def send(self, batch: list[bytes]) -> defer.Deferred[SendResult | None]:
        records = [split_record(record) for record in batch]
        waits = [self._topic_ready(t) for t in sorted({t for t, _k, _v in records})]
        d = defer.gatherResults(waits, consumeErrors=True)
        return d.addCallback(lambda _: self._produce(records))

    def _produce(
        self, records: Sequence[tuple[str, str, bytes]]
    ) -> defer.Deferred[SendResult | None]:
        pending = _Batch(len(records))
        for index, (topic, key, value) in enumerate(records):
            try:
                self._producer.produce(
                    topic, value=value, key=key.encode() if key else None,
                    headers=[(FORMAT_HEADER, FORMAT_VERSION)],
                    on_delivery=lambda err, _msg, i=index: pending.report(i, err),
                )
            except BufferError:  # librdkafka's own queue is full: the queue retries these
                pending.result.retry.append(index)
                pending.result.retry_reason = "kafka producer queue full"
                pending.result.retry_after = 0.1
                pending.waiting -= 1
        pending.finish_if_done()
        return pending.done

    def _topic_ready(self, topic: str) -> defer.Deferred[None]:
        """Fires once ``topic`` exists (created at its first use when ``create_topics``)."""
        if topic in self._topics_ok or not self.kafka_config.create_topics:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        waiters = self._waiters.get(topic)
        if waiters is not None:
            waiters.append(waiter)
            return waiter
        self._waiters[topic] = [waiter]
        from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

        config = self.kafka_config
        futures = self._make_admin().create_topics(
            [NewTopic(topic, num_partitions=config.partitions,
                      replication_factor=config.replication_factor)]
        )
        reactor = self.context.reactor
        futures[topic].add_done_callback(
            lambda future: reactor.callFromThread(self._created, topic, future.exception())
        )
        return waiter

    def _created(self, topic: str, error: BaseException | None) -> None:
        """The admin's answer (on the reactor thread): wake every send that waits."""
        from confluent_kafka import KafkaError

        waiters = self._waiters.pop(topic, [])
        code = error.args[0].code() if error is not None and error.args and hasattr(
            error.args[0], "code") else None
        if error is None or code == KafkaError.TOPIC_ALREADY_EXISTS:
            self._topics_ok.add(topic)
            for waiter in waiters:
                waiter.callback(None)
            return
        for waiter in waiters:  # the next send asks again
            waiter.errback(RuntimeError(f"cannot create topic {topic}: {error}"))

    def _real_admin(self) -> Any:
        from confluent_kafka.admin import AdminClient

        self._admin = AdminClient(client_settings(self.kafka_config, f"obsd-admin-{self.name}"))
        return self._admin


def build_output(name: str, config: Config, context: OutputContext) -> KafkaOutput:
    return KafkaOutput(name, config, context)
