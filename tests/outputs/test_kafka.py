"""The Kafka output against a fake producer: keys, topics, acks, refusals, a full queue."""

from __future__ import annotations

import json
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from twisted.internet.task import Clock

from obsd.codecs.relaywire import decode_event
from obsd.config.loader import parse_config
from obsd.delivery.deadletter import DeadLetterFile
from obsd.delivery.flowcontrol import FlowControl
from obsd.ops.telemetry import Telemetry
from obsd.ops.throttle import ThrottledLogger
from obsd.outputs import kafka
from obsd.outputs.base import OutputContext
from obsd.testing import ListLog
from tests.helpers import success_result_of


class FakeMessage:
    def __init__(self, topic: str, key: bytes | None, value: bytes) -> None:
        self._topic, self._key, self._value = topic, key, value


class FakeProducer:
    """Keeps what was produced; ``ack`` runs the delivery callbacks as ``poll`` would."""

    def __init__(self, room: int = 10_000) -> None:
        self.produced: list[dict[str, Any]] = []
        self.waiting: list[Any] = []
        self.room = room
        self.polls = 0

    def produce(self, topic: str, value: bytes, key: bytes | None, headers: Any,
                on_delivery: Any) -> None:
        if len(self.waiting) >= self.room:
            raise BufferError("Local: Queue full")
        self.produced.append({"topic": topic, "key": key, "value": value, "headers": headers})
        self.waiting.append(on_delivery)

    def poll(self, timeout: float) -> int:
        self.polls += 1
        return 0

    def ack(self, error: Any = None, only: int | None = None) -> None:
        waiting, self.waiting = self.waiting, []
        for i, callback in enumerate(waiting):
            callback(error if only is None or i == only else None, None)

    def __len__(self) -> int:
        return len(self.waiting)


class FakeAdmin:
    def __init__(self, fail: KafkaError | None = None) -> None:
        self.created: list[tuple[str, int]] = []
        self.futures: list[Future[None]] = []
        self.fail = fail

    def create_topics(self, topics: list[Any]) -> dict[str, Future[None]]:
        out = {}
        for topic in topics:
            self.created.append((topic.topic, topic.num_partitions))
            future: Future[None] = Future()
            self.futures.append(future)
            out[topic.topic] = future
        return out

    def answer(self) -> None:
        futures, self.futures = self.futures, []
        for future in futures:
            if self.fail is None:
                future.set_result(None)
            else:
                future.set_exception(KafkaException(self.fail))


class ThreadlessReactor(Clock):
    def callFromThread(self, f: Any, *args: Any) -> None:
        f(*args)


def make(tmp_path: Path, admin: FakeAdmin | None = None, **settings: Any) -> tuple[
    kafka.KafkaOutput, FakeProducer, ThreadlessReactor
]:
    reactor = ThreadlessReactor()
    config = parse_config(
        {"outputs": {"k": {"type": "kafka", "batch_timeout": 0.1, **settings}}}
    ).outputs["k"]
    context = OutputContext(
        clock=reactor, telemetry=Telemetry(), dead_letter=DeadLetterFile(tmp_path / "dl.jsonl"),
        flow_control=FlowControl(), throttle=ThrottledLogger(ListLog(), reactor),
        reactor=reactor, data_dir=tmp_path,
    )
    producer = FakeProducer()
    out = kafka.KafkaOutput("k", config, context, producer, (lambda: admin) if admin else None)
    out.startService()
    return out, producer, reactor


def send(out: kafka.KafkaOutput, *events: dict[str, Any]) -> None:
    for event in events:
        out.accept(event)


LOG = {"kind": "log", "event": "hello", "host": "web1", "level": "info", "id": "a1"}
METRIC = {"kind": "metric", "event": "m", "metric": "shop.orders", "value": 3.0, "host": "web2"}


def test_topic_per_kind_key_per_kind_and_a_versioned_value(tmp_path: Path) -> None:
    admin = FakeAdmin()
    out, producer, clock = make(tmp_path, admin)
    send(out, LOG, METRIC)
    clock.advance(0.1)
    assert sorted(admin.created) == [("obsd-log", 4), ("obsd-metric", 4)]
    admin.answer()
    by_topic = {m["topic"]: m for m in producer.produced}
    assert by_topic["obsd-log"]["key"] == b"web1"  # logs by host
    assert by_topic["obsd-metric"]["key"] == b"shop.orders"  # metrics by name
    assert by_topic["obsd-log"]["headers"] == [("obsd-format", b"1")]
    assert decode_event(by_topic["obsd-log"]["value"])["event"] == "hello"
    assert out.queues[""].health()["in_flight"] == 2  # until the broker acknowledges
    producer.ack()
    assert out.queues[""].health()["in_flight"] == 0
    assert out.context.telemetry.counters()["obsd.output.k.sent"] == 2


def test_unacknowledged_messages_stay_queued_and_are_retried(tmp_path: Path) -> None:
    out, producer, clock = make(tmp_path, create_topics=False, retry_initial=1.0)
    send(out, LOG)
    clock.advance(0.1)
    producer.ack(KafkaError(KafkaError._MSG_TIMED_OUT))
    health = out.queues[""].health()
    assert health["state"] == "degraded" and health["queued"] == 1
    clock.advance(1.0)
    producer.ack()
    assert len(producer.produced) == 2 and len(out.queues[""]) == 0


def test_a_message_the_broker_refuses_for_good_is_dead_lettered(tmp_path: Path) -> None:
    out, producer, clock = make(tmp_path, create_topics=False)
    send(out, LOG)
    clock.advance(0.1)
    producer.ack(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    (line,) = (tmp_path / "dl.jsonl").read_text().splitlines()
    dead = json.loads(line)
    assert "kafka refused" in dead["reason"] and dead["event"]["topic"] == "obsd-log"


def test_an_event_over_message_max_bytes_is_refused_when_encoded(tmp_path: Path) -> None:
    out, producer, clock = make(tmp_path, create_topics=False, message_max_bytes=1024)
    send(out, {**LOG, "event": "x" * 2000})
    clock.advance(0.1)
    assert producer.produced == []
    assert out.context.telemetry.counters()["obsd.output.k.encode_errors"] == 1
    assert "over message_max_bytes (1024)" in (tmp_path / "dl.jsonl").read_text()


def test_a_full_producer_queue_is_retried_later(tmp_path: Path) -> None:
    out, producer, clock = make(tmp_path, create_topics=False, retry_initial=0.1)
    producer.room = 1
    send(out, LOG, {**LOG, "id": "a2"})
    clock.advance(0.1)
    producer.ack()
    assert len(out.queues[""]) == 1  # the one librdkafka had no room for
    clock.advance(0.2)
    producer.ack()
    assert len(producer.produced) == 2 and len(out.queues[""]) == 0


def test_a_topic_that_cannot_be_created_holds_the_batch(tmp_path: Path) -> None:
    admin = FakeAdmin(fail=KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    out, producer, clock = make(tmp_path, admin, retry_initial=0.5)
    send(out, LOG)
    clock.advance(0.1)
    admin.answer()
    assert producer.produced == [] and len(out.queues[""]) == 1
    admin.fail = None
    clock.advance(0.5)
    admin.answer()
    producer.ack()
    assert len(producer.produced) == 1 and len(out.queues[""]) == 0


def test_the_client_is_polled_on_the_clock_until_drained(tmp_path: Path) -> None:
    out, producer, clock = make(tmp_path, create_topics=False, poll_interval=0.05)
    clock.pump([0.05] * 10)
    assert producer.polls == 10
    stopped = out.stopService()
    clock.advance(1)
    success_result_of(stopped)
    polls = producer.polls
    clock.pump([0.05] * 10)
    assert producer.polls == polls


@pytest.mark.parametrize(
    ("settings", "key", "reason"),
    [
        ({"bootstrap_servers": []}, "bootstrap_servers", "name at least one broker"),
        ({"topic": "obsd-{nope}"}, "topic", "only {kind}"),
        ({"security_protocol": "sasl_ssl"}, "sasl_username", "needs sasl_username"),
    ],
)
def test_config_problems(settings: dict[str, Any], key: str, reason: str) -> None:
    from obsd.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        parse_config({"outputs": {"k": {"type": "kafka", **settings}}})
    assert any(
        line.startswith(f"outputs.k.{key}: ") and reason in line for line in info.value.problems
    ), info.value.problems
