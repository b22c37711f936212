"""The output seam: batching, retries, drops, backpressure, health and drain."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from obsd.config.model import BufferConfig
from obsd.delivery.contract import PermanentError, SendResult, backoff_delay
from obsd.delivery.leftovers import has_records
from obsd.testing import CapturingConfig, CapturingOutput, make_output_context
from tests.helpers import assert_no_result, success_result_of


def make(clock: Clock, tmp_path: Path, **settings: object) -> CapturingOutput:
    buffer = settings.pop("buffer", BufferConfig())
    config = CapturingConfig(type="capture", buffer=buffer, **settings)  # type: ignore[arg-type]
    output = CapturingOutput("capture", config, make_output_context(clock, tmp_path))
    output.startService()
    return output


def event(i: int, pad: str = "") -> dict[str, object]:
    return {"id": f"e{i}", "event": f"n{i}{pad}", "kind": "log", "timestamp": 1.0}


class TestBatching:
    def test_by_count(self, clock: Clock, tmp_path: Path) -> None:
        """A batch goes out as soon as batch_size events are queued."""
        out = make(clock, tmp_path, batch_size=3, batch_timeout=10.0)
        for i in range(2):
            out.accept(event(i))
        assert out.sent == []
        out.accept(event(2))
        assert [len(b) for b in out.sent] == [3]

    def test_by_bytes(self, clock: Clock, tmp_path: Path) -> None:
        """A batch goes out once batch_bytes are queued, before batch_size."""
        out = make(clock, tmp_path, batch_size=100, batch_bytes=300, batch_timeout=10.0)
        out.accept(event(0, "x" * 50))  # each record is about 130 bytes
        out.accept(event(1, "x" * 50))
        assert out.sent == []
        out.accept(event(2, "x" * 50))
        assert [len(b) for b in out.sent] == [2]
        assert sum(map(len, out.sent[0])) <= 300

    def test_by_age(self, clock: Clock, tmp_path: Path) -> None:
        """A partial batch goes out batch_timeout seconds after it started."""
        out = make(clock, tmp_path, batch_size=100, batch_timeout=2.0)
        out.accept(event(0))
        clock.advance(1.9)
        assert out.sent == []
        clock.advance(0.1)
        assert [len(b) for b in out.sent] == [1]
        assert clock.getDelayedCalls() == []

    def test_max_in_flight(self, clock: Clock, tmp_path: Path) -> None:
        """No second batch is sent while max_in_flight batches await an answer."""
        out = make(clock, tmp_path, batch_size=1, max_in_flight=1)
        pending: defer.Deferred[SendResult | None] = defer.Deferred()
        out.results = [pending]
        out.accept(event(0))
        out.accept(event(1))
        assert len(out.sent) == 1
        pending.callback(None)
        assert len(out.sent) == 2


    def test_zero_timeout_with_in_flight_full_does_not_spin(
        self, clock: Clock, tmp_path: Path
    ) -> None:
        """With batch_timeout 0 and max_in_flight reached, the age timer fires once, not forever."""
        out = make(clock, tmp_path, batch_size=1, batch_timeout=0.0, max_in_flight=1)
        pending: defer.Deferred[SendResult | None] = defer.Deferred()
        out.results = [pending]
        for i in range(3):
            out.accept(event(i))
        clock.advance(0)  # would never return if the timer re-armed itself at 0
        assert len(out.sent) == 1
        assert clock.getDelayedCalls() == []
        pending.callback(None)
        clock.advance(0)
        assert len(out.sent) == 3


class TestRetry:
    def test_backoff_delay_grows_and_caps(self) -> None:
        """Delays double per failure, half fixed and half jitter, up to the cap."""
        assert backoff_delay(1, 1.0, 8.0, lambda: 0.0) == 0.5
        assert backoff_delay(1, 1.0, 8.0, lambda: 1.0) == 1.0
        assert backoff_delay(3, 1.0, 8.0, lambda: 0.5) == 3.0
        assert backoff_delay(10, 1.0, 8.0, lambda: 1.0) == 8.0
        assert backoff_delay(10, 1.0, 8.0, lambda: 0.0) == 4.0

    def test_failed_batch_is_retried_in_order_with_backoff(
        self, clock: Clock, tmp_path: Path
    ) -> None:
        """A failed send keeps its events at the head and retries after the backoff."""
        out = make(clock, tmp_path, batch_size=2, retry_initial=1.0, retry_max=4.0)
        out.results = [ConnectionError("down"), ConnectionError("down"), ConnectionError("down")]
        out.accept(event(0))
        out.accept(event(1))
        delays = []
        queue = out.queues[""]
        for _ in range(3):
            call = queue._backoff
            assert call is not None
            delays.append(call.getTime() - clock.seconds())
            clock.advance(call.getTime() - clock.seconds())
        # rand is 0.5: delay = d/2 + d/4 with d = 1, 2, 4 (capped at 4)
        assert delays == [0.75, 1.5, 3.0]
        assert len(out.sent) == 4
        assert all(batch == out.sent[0] for batch in out.sent)
        assert [e["id"] for e in out.delivered[-2:]] == ["e0", "e1"]
        assert out.health()["state"] == "ok"

    def test_partial_result_retries_and_dead_letters(self, clock: Clock, tmp_path: Path) -> None:
        """Items marked retry are sent again; rejected ones go to the dead-letter file."""
        out = make(clock, tmp_path, batch_size=3, retry_initial=1.0)
        out.results = [SendResult(retry=[1], rejected=[(2, "mapping conflict")])]
        for i in range(3):
            out.accept(event(i))
        clock.advance(1.0)
        assert [[json.loads(r)["id"] for r in b] for b in out.sent] == [
            ["e0", "e1", "e2"],
            ["e1"],
        ]
        dead = (tmp_path / "dead-letter.jsonl").read_text().splitlines()
        assert len(dead) == 1 and "mapping conflict" in dead[0] and '"e2"' in dead[0]
        tel = out.context.telemetry
        assert tel.value("obsd.output.capture.rejected") == 1
        assert tel.value("obsd.output.capture.sent") == 2

    def test_permanent_error_dead_letters_whole_batch(self, clock: Clock, tmp_path: Path) -> None:
        """A PermanentError sends every event of the batch to the dead-letter file."""
        out = make(clock, tmp_path, batch_size=2)
        out.results = [PermanentError("401 unauthorized")]
        out.accept(event(0))
        out.accept(event(1))
        assert len((tmp_path / "dead-letter.jsonl").read_text().splitlines()) == 2
        out.context.throttle.stop()
        assert clock.getDelayedCalls() == []


class TestHealth:
    def test_degraded_then_failing_then_ok(self, clock: Clock, tmp_path: Path) -> None:
        """Health goes degraded on failure, failing after failing_after, ok on success."""
        out = make(clock, tmp_path, batch_size=1, retry_initial=1.0, retry_max=1.0,
                   failing_after=5.0)
        out.results = [ConnectionError("refused")] * 10
        out.accept(event(0))
        assert out.health()["state"] == "degraded"
        assert out.health()["destinations"]["default"]["last_error"] == "refused"
        clock.advance(5.0)
        assert out.health()["state"] == "failing"
        out.results = []
        clock.advance(1.0)
        assert out.health()["state"] == "ok"


class TestWhenFull:
    @pytest.mark.parametrize(
        ("policy", "kept", "reason"),
        [
            ("drop_newest", ["e0", "e1"], "full"),
            ("drop_oldest", ["e2", "e3"], "full"),
        ],
    )
    def test_drop_policies(
        self, clock: Clock, tmp_path: Path, policy: str, kept: list[str], reason: str
    ) -> None:
        """A full queue drops the newest or the oldest events, and counts them."""
        buffer = BufferConfig(max_events=2, when_full=policy)  # type: ignore[arg-type]
        out = make(clock, tmp_path, buffer=buffer, batch_size=10, batch_timeout=1.0)
        for i in range(4):
            out.accept(event(i))
        clock.advance(1.0)
        assert [e["id"] for e in out.delivered] == kept
        assert out.context.telemetry.value(f"obsd.output.capture.dropped.{reason}") == 2

    def test_block_takes_overshoot_up_to_hard_cap(self, clock: Clock, tmp_path: Path) -> None:
        """block keeps events past the limit (inputs are paused) up to twice it, then drops."""
        buffer = BufferConfig(max_events=2, when_full="block")
        out = make(clock, tmp_path, buffer=buffer, batch_size=10, batch_timeout=1.0)
        for i in range(6):
            out.accept(event(i))
        clock.advance(1.0)
        assert [e["id"] for e in out.delivered] == ["e0", "e1", "e2", "e3"]
        assert out.context.telemetry.value("obsd.output.capture.dropped.overflow") == 2


class TestBackpressure:
    def test_stream_paused_at_high_and_resumed_at_low_watermark(
        self, clock: Clock, tmp_path: Path
    ) -> None:
        """A stream input's transport pauses past the high watermark and resumes below the low."""
        buffer = BufferConfig(max_events=10, high_watermark=0.8, low_watermark=0.5)
        out = make(clock, tmp_path, buffer=buffer, batch_size=3, batch_timeout=1.0)
        transport = StringTransport()
        out.context.flow_control.register(transport)
        pending: defer.Deferred[SendResult | None] = defer.Deferred()
        out.results = [pending]
        for i in range(10):  # 3 go out at once and hang; 7 stay queued
            out.accept(event(i))
        assert transport.producerState == "producing"
        out.accept(event(10))  # 8 queued: the high watermark
        assert transport.producerState == "paused"
        assert out.context.flow_control.congested
        pending.callback(None)  # the next batches go out: queue falls under 5
        clock.advance(1.0)
        assert transport.producerState == "producing"
        assert not out.context.flow_control.congested


class TestDrain:
    def test_drain_sends_everything_left(self, clock: Clock, tmp_path: Path) -> None:
        """Stopping sends the partial batch at once and fires when it is delivered."""
        out = make(clock, tmp_path, batch_size=100, batch_timeout=60.0)
        out.accept(event(0))
        d = out.stopService()
        success_result_of(d)
        assert [e["id"] for e in out.delivered] == ["e0"]
        assert clock.getDelayedCalls() == []

    def test_drain_deadline(self, clock: Clock, tmp_path: Path) -> None:
        """A destination that never answers holds the stop only until the deadline."""
        out = make(clock, tmp_path, batch_size=1)
        out.results = [defer.Deferred()]
        out.accept(event(0))
        out.accept(event(1))
        d = out.stopService()
        assert_no_result(d)
        clock.advance(out.context.shutdown_timeout)
        success_result_of(d)
        assert out.context.telemetry.value("obsd.output.capture.dropped.shutdown") == 0
        out.context.throttle.stop()  # the daemon stops its throttle after the outputs
        assert clock.getDelayedCalls() == []

    def test_leftovers_go_first_at_next_start(self, clock: Clock, tmp_path: Path) -> None:
        """What a memory queue holds at the deadline is on disk and sent first after a restart."""
        out = make(clock, tmp_path, batch_size=1)
        out.results = [defer.Deferred()]
        for i in range(3):
            out.accept(event(i))
        d = out.stopService()
        clock.advance(out.context.shutdown_timeout)
        success_result_of(d)
        spool = tmp_path / "spool" / "capture"
        assert has_records(spool)

        again = make(clock, tmp_path, batch_size=10, batch_timeout=0.5)
        again.accept(event(3))
        clock.advance(0.5)
        assert [e["id"] for e in again.delivered] == ["e0", "e1", "e2", "e3"]
        assert not spool.exists()  # delivered: the spool is gone, the queue is memory again
        assert not again.queues[""].buffer.durable
        success_result_of(again.stopService())

    def test_unwritable_leftovers_are_counted_lost(self, clock: Clock, tmp_path: Path) -> None:
        """Only what cannot be written at shutdown counts as dropped.shutdown."""
        blocker = tmp_path / "file"
        blocker.write_text("not a directory")
        buffer = BufferConfig()
        config = CapturingConfig(type="capture", buffer=buffer, batch_size=1)
        out = CapturingOutput("capture", config, make_output_context(clock, tmp_path))
        out.context = attrs.evolve(out.context, data_dir=blocker)
        for queue in out.queues.values():
            queue._ctx = out.context
        out.startService()
        out.results = [defer.Deferred()]
        out.accept(event(0))
        out.accept(event(1))
        d = out.stopService()
        clock.advance(out.context.shutdown_timeout)
        success_result_of(d)
        assert out.context.telemetry.value("obsd.output.capture.dropped.shutdown") == 2


class TestManyAtOnce:
    """``accept_many``: one TCP read's events, encoded and queued in one call."""

    def test_the_same_as_one_by_one(self, clock: Clock, tmp_path: Path) -> None:
        """Batches by count and by age, in order, as ``accept`` one by one would make."""
        one = make(clock, tmp_path / "one", batch_size=3, batch_timeout=1.0)
        many = make(clock, tmp_path / "many", batch_size=3, batch_timeout=1.0)
        for i in range(7):
            one.accept(event(i))
        many.accept_many([event(i) for i in range(7)])
        clock.advance(1.0)
        assert [e["id"] for e in many.delivered] == [e["id"] for e in one.delivered]
        assert many.context.telemetry.value("obsd.output.capture.received") == 7

    def test_an_event_that_cannot_be_encoded_is_dead_lettered_alone(
        self, clock: Clock, tmp_path: Path
    ) -> None:
        out = make(clock, tmp_path, batch_size=10, batch_timeout=1.0)
        bad = {"id": "bad", "event": "x", "kind": "log", "timestamp": 1.0, object(): 1}
        out.accept_many([event(0), bad, event(1)])
        clock.advance(1.0)
        assert [e["id"] for e in out.delivered] == ["e0", "e1"]
        assert out.context.telemetry.value("obsd.output.capture.encode_errors") == 1

    def test_a_full_queue_drops_and_counts_as_one_by_one(
        self, clock: Clock, tmp_path: Path
    ) -> None:
        buffer = BufferConfig(max_events=2, when_full="drop_newest")
        out = make(clock, tmp_path, buffer=buffer, batch_size=10, batch_timeout=1.0)
        out.accept_many([event(i) for i in range(4)])
        clock.advance(1.0)
        assert [e["id"] for e in out.delivered] == ["e0", "e1"]
        assert out.context.telemetry.value("obsd.output.capture.dropped.full") == 2

    def test_past_the_high_watermark_streams_pause(self, clock: Clock, tmp_path: Path) -> None:
        buffer = BufferConfig(max_events=10, high_watermark=0.8, low_watermark=0.5)
        out = make(clock, tmp_path, buffer=buffer, batch_size=100, batch_timeout=1.0)
        transport = StringTransport()
        out.context.flow_control.register(transport)
        out.accept_many([event(i) for i in range(9)])
        assert transport.producerState == "paused"
