"""The Kafka input against a fake consumer: hand on, commit after the disk, pause, lag.

The fake stands in for confluent-kafka's ``Consumer`` (the real one, against a
real broker, is in tests/integration/test_kafka*.py): it records commits, and
a test answers them as the broker would (``ack``).
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from confluent_kafka import TopicPartition
from twisted.internet import defer
from twisted.internet.task import Clock

from obsd import events
from obsd.aggregation.ledger import ORIGIN, MergeLedger
from obsd.aggregation.merge import PartialMerger
from obsd.aggregation.partials import CounterPartial
from obsd.aggregation.partials_wire import partial_event
from obsd.aggregation.statsd import StatsdSettings
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
        #: each commit asked for: [(topic, partition, next offset)], and whether it was async
        self.asked: list[list[tuple[str, int, int]]] = []
        self.sync: list[bool] = []
        self.paused: list[Any] = []
        self.subscribed: list[str] = []
        self.closed = False
        self.parts = [TopicPartition("obsd-log", 0)]

    def subscribe(self, topics: list[str], on_assign: Any, on_revoke: Any, on_lost: Any) -> None:
        self.subscribed = topics
        self.on_assign, self.on_revoke, self.on_lost = on_assign, on_revoke, on_lost
        on_assign(self, self.parts)

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        taken, self.waiting = self.waiting[:num_messages], self.waiting[num_messages:]
        return taken

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        self.asked.append([(p.topic, p.partition, p.offset) for p in offsets])
        self.sync.append(not asynchronous)

    def ack(self, service: kafka.KafkaInput, error: Any = None) -> None:
        """The broker answers the last commit (``on_commit``, called inside ``consume``)."""
        parts = [TopicPartition(t, p, o) for t, p, o in self.asked[-1]]
        service._committed(error, parts)

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
    merge_ledger: MergeLedger = attrs.Factory(MergeLedger)

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


def make(
    context: Context | None = None, **settings: Any
) -> tuple[kafka.KafkaInput, FakeConsumer, Context]:
    config = kafka.Config(type="kafka", **settings)
    context = context or Context()
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
    assert consumer.asked == []  # not yet on disk
    context.durable[0].callback(None)
    assert consumer.asked == [[("obsd-log", 0, 3)]] and consumer.sync == [False]
    consumer.ack(_service)
    assert context.telemetry.counters()["obsd.input.kafka.commits"] == 1


def test_a_batch_that_never_reaches_the_disk_is_not_committed() -> None:
    _service, consumer, context = make()
    consumer.waiting = [Message(event(0), offset=0)]
    context.clock.advance(0.01)
    context.durable[0].errback(RuntimeError("disk full"))
    context.clock.advance(0.01)
    assert consumer.asked == []
    assert context.telemetry.counters()["obsd.input.kafka.commit_errors"] == 1


def test_a_message_that_is_not_an_event_is_counted_and_skipped_but_committed() -> None:
    _service, consumer, context = make()
    consumer.waiting = [Message(b"not json", offset=0), Message(event(1), offset=1)]
    context.clock.advance(0.01)
    context.durable[0].callback(None)
    assert len(context.ingest.events) == 1
    assert context.telemetry.counters()["obsd.input.kafka.bad_messages"] == 1
    assert consumer.asked == [[("obsd-log", 0, 2)]]


def test_a_full_poll_polls_again_at_the_next_turn() -> None:
    """A backlog drains max_batch messages a turn, not max_batch per poll_interval."""
    _service, consumer, context = make(max_batch=2)
    consumer.waiting = [Message(event(i), offset=i) for i in range(5)]
    context.clock.advance(0.01)  # one tick: the full polls chain through zero-delay calls
    assert len(context.ingest.events) == 5
    (tick,) = context.clock.getDelayedCalls()  # the last poll was not full: back to the ticks
    assert tick.getTime() == pytest.approx(0.02)


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
    assert consumer.asked == [[("obsd-log", 0, 1)]]
    assert consumer.closed and consumer.sync == [True]  # the closing, synchronous commit
    assert stopped.called


def test_stop_does_not_wait_for_ever_for_the_disk() -> None:
    service, consumer, context = make()
    consumer.waiting = [Message(event(0), offset=0)]
    context.clock.advance(0.01)
    stopped = service.stopService()
    context.clock.advance(kafka.STOP_WAIT)
    assert consumer.closed and stopped.called
    context.durable[0].callback(None)  # too late: the group reads it again
    assert consumer.asked == []


INTERVAL = 10.0
K = 177_000_000


class Merging:
    """Central's StatsD merge as the router would feed it: a real merger on the ledger."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.merger = PartialMerger(
            StatsdSettings(flush_interval=INTERVAL), grace=2.0, now=K * INTERVAL + 1
        )
        context.merge_ledger.attach(self.merger)
        ingest = context.ingest

        def route(fields: dict[str, Any]) -> None:
            ingest.events.append((events.STATSD_PARTIAL, fields))
            self.merger.add(fields, fields.get(ORIGIN))

        ingest.statsd_partial = route  # type: ignore[attr-defined]

    def counted(self, interval: int) -> dict[str, float]:
        return {key[1]: series.part.total  # type: ignore[attr-defined]
                for key, series in self.merger.close(interval).items()}


def partial(name: str, total: float, interval: int = K) -> bytes:
    fields = partial_event(("counter", name, ()), CounterPartial(total), interval, INTERVAL)
    return encode_event({**fields, "kind": events.STATSD_PARTIAL, "id": f"p-{name}", "host": "w"})


def test_a_partial_is_committed_only_once_its_interval_is_flushed_to_disk() -> None:
    """Logs after a held partial wait too: Kafka reads from the first offset not safe."""
    merging = Merging(Context())
    _service, consumer, context = make(merging.context)
    consumer.waiting = [Message(partial("req", 3.0), offset=0), Message(event(1), offset=1)]
    context.clock.advance(0.01)
    assert context.ingest.events[0][1][ORIGIN] == "kafka:obsd-log/0"
    context.durable[0].callback(None)
    context.clock.advance(0.01)
    assert consumer.asked == []  # offset 0 is in an open interval: nothing is safe
    context.merge_ledger.flushed(K)
    context.clock.advance(0.01)
    assert consumer.asked == []  # flushed is not on disk
    context.merge_ledger.settled(K)
    context.clock.advance(0.01)
    assert consumer.asked == [[("obsd-log", 0, 2)]]
    assert merging.counted(K) == {"req": 3.0}


def test_a_revoked_partition_takes_back_its_open_partials() -> None:
    """Its partials are read again by the next owner: here they would count twice."""
    merging = Merging(Context())
    _service, consumer, context = make(merging.context)
    consumer.waiting = [Message(partial("req", 3.0), offset=0)]
    context.clock.advance(0.01)
    context.durable[0].callback(None)
    consumer.on_revoke(consumer, consumer.parts)
    assert consumer.asked == []  # nothing flushed: nothing committed
    assert merging.counted(K) == {}
    assert context.telemetry.counters().get("obsd.input.kafka.commits", 0) == 0


def test_a_revoke_commits_what_is_flushed_though_not_yet_on_disk() -> None:
    """This process lives on, so its flushed points reach the disk; the owner starts after."""
    _service, consumer, context = make(Merging(Context()).context)
    consumer.waiting = [Message(partial("req", 3.0), offset=0)]
    context.clock.advance(0.01)
    context.durable[0].callback(None)
    context.merge_ledger.flushed(K)
    consumer.on_revoke(consumer, consumer.parts)
    assert consumer.asked == [[("obsd-log", 0, 1)]] and consumer.sync == [False]


def test_a_lost_partition_commits_nothing_and_forgets() -> None:
    merging = Merging(Context())
    _service, consumer, context = make(merging.context)
    consumer.waiting = [Message(partial("req", 3.0), offset=0)]
    context.clock.advance(0.01)
    context.durable[0].callback(None)
    context.merge_ledger.flushed(K)
    consumer.on_lost(consumer, consumer.parts)
    assert consumer.asked == [] and merging.counted(K) == {}


def test_a_batch_durable_after_its_partition_came_back_is_ignored() -> None:
    """A mark from an earlier assignment must not carry the offset past forgotten partials."""
    _service, consumer, context = make(Merging(Context()).context)
    consumer.waiting = [Message(event(0), offset=0)]
    context.clock.advance(0.01)
    consumer.on_revoke(consumer, consumer.parts)
    consumer.on_assign(consumer, consumer.parts)
    context.durable[0].callback(None)
    context.clock.advance(0.01)
    assert consumer.asked == []


def test_a_failed_commit_is_asked_for_again_after_a_pause() -> None:
    service, consumer, context = make()
    consumer.waiting = [Message(event(0), offset=0)]
    context.clock.advance(0.01)
    context.durable[0].callback(None)
    consumer.ack(service, error="coordinator not available")
    context.clock.advance(0.01)
    assert len(consumer.asked) == 1  # not at once: after COMMIT_RETRY
    context.clock.advance(kafka.COMMIT_RETRY)
    assert consumer.asked == [[("obsd-log", 0, 1)]] * 2
    consumer.ack(service)
    context.clock.advance(kafka.COMMIT_RETRY)
    assert len(consumer.asked) == 2
    counters = context.telemetry.counters()
    assert counters["obsd.input.kafka.commit_errors"] == 1
    assert counters["obsd.input.kafka.commits"] == 1


def test_partials_pass_untouched_where_nothing_merges() -> None:
    """A tier without a merging StatsD input routes partials on like any event."""
    _service, consumer, context = make()
    consumer.waiting = [Message(partial("req", 3.0), offset=0)]
    context.clock.advance(0.01)
    assert ORIGIN not in context.ingest.events[0][1]
    context.durable[0].callback(None)
    assert consumer.asked == [[("obsd-log", 0, 1)]]


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
