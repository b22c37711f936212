"""The Kafka input against a fake consumer: hand on, commit after the disk, pause, lag."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from confluent_kafka import TopicPartition
from twisted.internet import defer
from twisted.internet.task import Clock

from obsd.codecs.relaywire import encode_event
from obsd.config.loader import parse_config
from obsd.delivery.flowcontrol import FlowControl
from obsd.errors import ConfigError
from obsd.inputs import kafka
from obsd.ops.telemetry import Telemetry
from obsd.ops.throttle import ThrottledLogger
from obsd.testing import ListLog


class Message:
    def __init__(self, value: bytes, offset: int, partition: int = 0, topic: str = "obsd-log"):
        self._value, self._offset, self._partition, self._topic = value, offset, partition, topic

    def error(self) -> None:
        return None

    def value(self) -> bytes:
        return self._value

    def offset(self) -> int:
        return self._offset

    def partition(self) -> int:
        return self._partition

    def topic(self) -> str:
        return self._topic


class FakeConsumer:
    def __init__(self) -> None:
        self.waiting: list[Message] = []
        self.stored: list[list[tuple[str, int, int]]] = []
        self.commits = 0
        self.paused: list[Any] = []
        self.subscribed: list[str] = []
        self.closed = False
        self.parts = [TopicPartition("obsd-log", 0)]

    def subscribe(self, topics: list[str], on_assign: Any, on_revoke: Any) -> None:
        self.subscribed = topics
        self.on_assign, self.on_revoke = on_assign, on_revoke

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        taken, self.waiting = self.waiting[:num_messages], self.waiting[num_messages:]
        return taken

    def store_offsets(self, offsets: list[Any]) -> None:
        self.stored.append([(p.topic, p.partition, p.offset) for p in offsets])

    def commit(self, asynchronous: bool) -> None:
        self.commits += 1

    def assignment(self) -> list[Any]:
        return self.parts

    def pause(self, parts: list[Any]) -> None:
        self.paused = list(parts)

    def resume(self, parts: list[Any]) -> None:
        self.paused = []

    def get_watermark_offsets(self, part: Any, cached: bool) -> tuple[int, int]:
        return 0, 100

    def position(self, parts: list[Any]) -> list[Any]:
        return [TopicPartition(p.topic, p.partition, 60) for p in parts]

    def close(self) -> None:
        self.closed = True


class Ingest:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, kind: str) -> Any:
        return lambda fields: self.events.append((kind, fields))


@attrs.define
class Context:
    name: str = "kafka"
    clock: Clock = attrs.Factory(Clock)
    telemetry: Telemetry = attrs.Factory(Telemetry)
    flow_control: FlowControl = attrs.Factory(FlowControl)
    log: ListLog = attrs.Factory(ListLog)
    ingest: Ingest = attrs.Factory(Ingest)
    hostname: str = "central1"
    durable: list[defer.Deferred[None]] = attrs.Factory(list)

    @property
    def reactor(self) -> Clock:
        return self.clock

    @property
    def throttle(self) -> ThrottledLogger:
        return ThrottledLogger(self.log, self.clock)

    def make_ingest(self, **bound: Any) -> Ingest:
        return self.ingest

    def wait_durable(self) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        self.durable.append(d)
        return d


def make(**settings: Any) -> tuple[kafka.KafkaInput, FakeConsumer, Context]:
    config = kafka.Config(type="kafka", **settings)
    context = Context()
    consumer = FakeConsumer()
    service = kafka.KafkaInput("kafka", config, context, consumer)  # type: ignore[arg-type]
    service.startService()
    return service, consumer, context


def event(i: int) -> bytes:
    return encode_event({"kind": "log", "event": f"line {i}", "id": f"e{i}", "host": "web1"})


def test_events_are_handed_on_and_committed_only_once_on_disk() -> None:
    _service, consumer, context = make()
    consumer.waiting = [Message(event(i), offset=i) for i in range(3)]
    context.clock.advance(0.01)
    assert [f["event"] for _k, f in context.ingest.events] == ["line 0", "line 1", "line 2"]
    assert [f["id"] for _k, f in context.ingest.events] == ["e0", "e1", "e2"]  # ids kept
    assert consumer.stored == [] and consumer.commits == 0  # not yet on disk
    context.durable[0].callback(None)
    assert consumer.stored == [[("obsd-log", 0, 3)]] and consumer.commits == 1


def test_a_batch_that_never_reaches_the_disk_is_not_committed() -> None:
    _service, consumer, context = make()
    consumer.waiting = [Message(event(0), offset=0)]
    context.clock.advance(0.01)
    context.durable[0].errback(RuntimeError("disk full"))
    assert consumer.stored == []
    assert context.telemetry.counters()["obsd.input.kafka.commit_errors"] == 1


def test_a_message_that_is_not_an_event_is_counted_and_skipped_but_committed() -> None:
    _service, consumer, context = make()
    consumer.waiting = [Message(b"not json", offset=0), Message(event(1), offset=1)]
    context.clock.advance(0.01)
    context.durable[0].callback(None)
    assert len(context.ingest.events) == 1
    assert context.telemetry.counters()["obsd.input.kafka.bad_messages"] == 1
    assert consumer.stored == [[("obsd-log", 0, 2)]]


def test_partitions_pause_while_outputs_are_congested() -> None:
    _service, consumer, context = make()
    context.flow_control.report("out", True)
    context.clock.advance(0.01)
    assert consumer.paused == consumer.parts
    new = [TopicPartition("obsd-log", 1)]
    consumer.on_assign(consumer, new)  # partitions that arrive meanwhile start paused
    assert consumer.paused == new
    context.flow_control.report("out", False)
    context.clock.advance(0.01)
    assert consumer.paused == []


def test_lag_per_partition_and_in_all() -> None:
    service, consumer, context = make()
    context.clock.advance(0.01)
    assert service.lag == {("obsd-log", 0): 40}
    assert context.telemetry.gauges()["obsd.input.kafka.lag"] == 40
    consumer.on_revoke(consumer, consumer.parts)
    assert service.lag == {}


def test_stop_commits_what_reaches_the_disk_then_leaves_the_group() -> None:
    service, consumer, context = make()
    consumer.waiting = [Message(event(0), offset=0)]
    context.clock.advance(0.01)
    stopped = service.stopService()
    assert not consumer.closed  # waiting for the last batch to reach the disk
    context.durable[0].callback(None)
    assert consumer.stored == [[("obsd-log", 0, 1)]]
    assert consumer.closed and consumer.commits == 1  # the closing, synchronous commit
    assert stopped.called


def test_stop_does_not_wait_for_ever_for_the_disk() -> None:
    service, consumer, context = make()
    consumer.waiting = [Message(event(0), offset=0)]
    context.clock.advance(0.01)
    stopped = service.stopService()
    context.clock.advance(kafka.STOP_WAIT)
    assert consumer.closed and stopped.called
    context.durable[0].callback(None)  # too late: the group reads it again
    assert consumer.stored == []


@pytest.mark.parametrize(
    ("toml", "reason"),
    [
        ({}, 'needs [daemon] durability = "sync"'),
        ({"daemon": {"durability": "sync"}, "outputs": {"file": {}}},
         'needs buffer.type = "disk" on every output (not on: file)'),
    ],
)
def test_commits_follow_the_disk_so_the_config_must_say_so(
    toml: dict[str, Any], reason: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({**toml, "inputs": {"kafka": {}}})
    assert any(line.startswith("inputs.kafka: ") and reason in line
               for line in info.value.problems), info.value.problems


def test_a_durable_config_is_accepted() -> None:
    config = parse_config({
        "daemon": {"durability": "sync"},
        "inputs": {"kafka": {"group_id": "central"}},
        "outputs": {"file": {"buffer": {"type": "disk"}}},
    })
    assert config.inputs["kafka"].group_id == "central"
