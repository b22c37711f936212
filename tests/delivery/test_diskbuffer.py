"""Disk buffers: written ahead every sync_interval, replayed in order after a restart,
spilled when the memory window is full, damage skipped and counted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from obsd.config.model import BufferConfig
from obsd.delivery.contract import SendResult
from obsd.testing import CapturingConfig, CapturingOutput, make_output_context
from tests.helpers import success_result_of


def run_now(job: Any) -> defer.Deferred[Any]:
    """Blocking I/O run at once instead of in a thread (deterministic tests)."""
    return defer.maybeDeferred(job)


def make(clock: Clock, tmp_path: Path, **buffer: Any) -> CapturingOutput:
    settings = {"type": "disk", "max_events": 1000, "max_bytes": 1_000_000, **buffer}
    config = CapturingConfig(
        type="capture", buffer=BufferConfig(**settings), batch_size=100, batch_timeout=0.5,
        retry_initial=1.0, retry_max=1.0,
    )
    context = make_output_context(clock, tmp_path, run_io=run_now, sync_interval=1.0)
    context.shutdown_timeout = 2.0
    out = CapturingOutput("capture", config, context)
    out.startService()
    return out


def ev(i: int) -> dict[str, Any]:
    return {"id": f"e{i:03d}", "event": "x", "timestamp": 1.0}


def ids(out: CapturingOutput) -> list[str]:
    return [e["id"] for e in out.delivered]


def stop(out: CapturingOutput, clock: Clock) -> None:
    d = out.stopService()
    clock.advance(out.context.shutdown_timeout)
    success_result_of(d)
    out.context.throttle.stop()
    assert clock.getDelayedCalls() == []


class TestWriteAhead:
    def test_on_disk_after_sync_interval(self, tmp_path: Path) -> None:
        """Accepted records reach the spool within sync_interval, and wait_durable says when."""
        clock = Clock()
        out = make(clock, tmp_path)
        out.results = [defer.Deferred()]  # the destination hangs
        out.accept(ev(0))
        durable = out.wait_durable()
        success_result_of(durable)  # waiting for durability forces a write
        segments = list((tmp_path / "spool" / "capture").glob("*.seg"))
        assert segments and b"e000" in segments[0].read_bytes()
        stop(out, clock)


class TestReplay:
    def test_undelivered_events_are_replayed_in_order_after_restart(self, tmp_path: Path) -> None:
        """What a failing destination did not take at stop is delivered by the next run."""
        clock = Clock()
        out = make(clock, tmp_path)
        out.results = [ConnectionError("down")] * 100
        for i in range(5):
            out.accept(ev(i))
        clock.advance(3)
        assert ids(out) == [f"e{i:03d}" for i in range(5)] * len(out.sent)  # every try failed
        stop(out, clock)
        assert out.context.telemetry.value("obsd.output.capture.dropped.shutdown") == 0

        clock2 = Clock()
        again = make(clock2, tmp_path)
        clock2.advance(1)
        assert ids(again) == [f"e{i:03d}" for i in range(5)]
        stop(again, clock2)

        clock3 = Clock()
        third = make(clock3, tmp_path)
        clock3.advance(2)
        assert ids(third) == []  # acked: not delivered twice
        stop(third, clock3)

    def test_replay_starts_at_the_lowest_undelivered(self, tmp_path: Path) -> None:
        """The ack is the lowest undelivered record: those before it never come again,
        one delivered after it may (at least once; outputs dedupe by event id)."""
        clock = Clock()
        out = make(clock, tmp_path)
        out.results = [SendResult(retry=[1]), defer.Deferred()]
        for i in range(3):
            out.accept(ev(i))
        clock.advance(0.5)
        stop(out, clock)
        clock2 = Clock()
        again = make(clock2, tmp_path)
        clock2.advance(1)
        assert ids(again) == ["e001", "e002"]
        stop(again, clock2)


class TestSpill:
    def test_memory_window_spills_to_disk_and_refills_in_order(self, tmp_path: Path) -> None:
        """Past the memory window records live on disk only, and come back in order."""
        clock = Clock()
        out = make(clock, tmp_path, memory_events=3)
        out.results = [ConnectionError("down")] * 3
        for i in range(20):
            out.accept(ev(i))
        assert out.queues[""].buffer.ready <= 3
        assert len(out.queues[""].buffer) == 20
        for _ in range(10):  # three failures, then the destination takes everything
            clock.advance(1)
        assert max(len(batch) for batch in out.sent) <= 3  # the window, never more
        delivered = [json.loads(r)["id"] for b in out.sent[3:] for r in b]
        assert delivered == [f"e{i:03d}" for i in range(20)]
        stop(out, clock)


class TestDamage:
    @pytest.mark.parametrize("damage", ["flip", "truncate"])
    def test_damaged_records_are_skipped_counted_and_the_rest_delivered(
        self, tmp_path: Path, damage: str
    ) -> None:
        """A flipped byte or a torn tail costs exactly the damaged record."""
        clock = Clock()
        out = make(clock, tmp_path)
        out.results = [ConnectionError("down")] * 100
        for i in range(6):
            out.accept(ev(i))
        stop(out, clock)
        (segment,) = (tmp_path / "spool" / "capture").glob("*.seg")
        data = bytearray(segment.read_bytes())
        if damage == "flip":
            data[len(data) // 2] ^= 0xFF  # inside record 2 or 3
        else:
            data = data[:-5]  # the last record is torn
        segment.write_bytes(bytes(data))
        clock2 = Clock()
        again = make(clock2, tmp_path)
        clock2.advance(2)
        assert len(ids(again)) == 5
        assert again.context.telemetry.value("obsd.output.capture.dropped.corrupt") == 1
        stop(again, clock2)


class TestLimits:
    def test_drop_newest_refuses_past_the_limit(self, tmp_path: Path) -> None:
        """Past max_events on disk, drop_newest refuses new records (counted as full)."""
        clock = Clock()
        out = make(clock, tmp_path, max_events=5, when_full="drop_newest", memory_events=2)
        out.results = [defer.Deferred()]
        for i in range(8):
            out.accept(ev(i))
        clock.advance(1)  # the sync sees 8 > 5 stored
        out.accept(ev(8))
        assert out.context.telemetry.value("obsd.output.capture.dropped.full") == 1
        stop(out, clock)

    def test_drop_oldest_deletes_the_oldest_segment(self, tmp_path: Path) -> None:
        """Past max_bytes on disk, drop_oldest gives up the oldest segment, counted as full."""
        clock = Clock()
        out = make(clock, tmp_path, max_bytes=4096, segment_bytes=4096, when_full="drop_oldest",
                   memory_events=5)
        out.results = [defer.Deferred()]  # the first batch hangs: nothing is delivered
        for i in range(120):  # about 9 KB of records: three segments
            out.accept(ev(i))
            if i % 40 == 39:
                clock.advance(1)
        dropped = out.context.telemetry.value("obsd.output.capture.dropped.full")
        assert dropped > 0
        assert out.queues[""].buffer.disk_bytes <= 3 * 4096
        stop(out, clock)

    def test_block_pauses_inputs_past_the_high_watermark(self, tmp_path: Path) -> None:
        """A disk queue filling up asks the stream inputs to pause, like a memory one."""
        clock = Clock()
        out = make(clock, tmp_path, max_events=10, when_full="block", memory_events=5)
        out.results = [defer.Deferred()]
        for i in range(9):
            out.accept(ev(i))
        clock.advance(1)
        out.accept(ev(9))
        assert out.context.flow_control.congested
        stop(out, clock)


class TestOrder:
    def test_batches_failing_out_of_order_keep_the_window_sorted(self, tmp_path: Path) -> None:
        """A later batch failing before an earlier one must not move the ack past the earlier."""
        from obsd.delivery.diskbuffer import DiskBuffer

        clock = Clock()
        buffer = DiskBuffer(
            tmp_path, max_events=100, max_bytes=100_000, when_full="block", high_watermark=0.8,
            low_watermark=0.5, memory_events=100, memory_bytes=100_000, segment_bytes=4096,
            clock=clock, sync_interval=1.0, fsync=False, run_io=run_now, report=lambda *a: None,
        )
        buffer.open()
        for i in range(3):
            buffer.put(f"r{i}".encode())
        first, first_token = buffer.take_batch(1, 1000)
        second, second_token = buffer.take_batch(1, 1000)
        buffer.give_back(first, first_token)
        buffer.give_back(second, second_token)
        assert len(buffer) == 3
        records, _token = buffer.take_batch(10, 1000)
        assert records == [b"r0", b"r1", b"r2"]
        success_result_of(buffer.close())
