"""The status page's history: a fixed ring per series, sampled on the injected clock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from obsd.ops.history import HISTORY_SAMPLES, SAMPLE_INTERVAL, History, RingBuffer
from obsd.ops.status import RateSampler, StatusReport
from obsd.ops.telemetry import Telemetry
from tests.helpers import success_result_of
from tests.ops.test_status import get, make_service


class TestRingBuffer:
    def test_keeps_the_last_values_oldest_first(self) -> None:
        """Past capacity, the oldest values are overwritten and the order holds."""
        ring = RingBuffer(3)
        for value in range(1, 6):
            ring.append(value)
        assert ring.values() == [3.0, 4.0, 5.0]
        assert len(ring) == 3

    def test_partly_filled(self) -> None:
        """Before it is full it holds only what was appended."""
        ring = RingBuffer(4)
        ring.append(7)
        assert ring.values() == [7.0]

    def test_memory_is_fixed(self) -> None:
        """The values take capacity x 8 bytes from the start, whatever is appended."""
        ring = RingBuffer(HISTORY_SAMPLES)
        before = ring.nbytes()
        for value in range(10_000):
            ring.append(value)
        assert before == ring.nbytes() == HISTORY_SAMPLES * 8 == 1440

    def test_refuses_no_capacity(self) -> None:
        """A ring of zero values is a mistake, said at once."""
        with pytest.raises(ValueError, match="at least one"):
            RingBuffer(0)


class TestHistory:
    def test_series_disappear_with_their_component(self) -> None:
        """A series missing from a sample (its output was reloaded away) is dropped."""
        history = History(capacity=5)
        history.record(0, {"output.a.rate": 1, "output.b.rate": 2})
        history.record(5, {"output.a.rate": 3})
        assert list(history.names()) == ["output.a.rate"]
        assert history.series("output.a.rate") == [1.0, 3.0]
        assert history.series("output.b.rate") == []
        assert history.times() == [0.0, 5.0]

    def test_bound_is_series_times_capacity(self) -> None:
        """(series + 1) x capacity x 8 bytes, however long it runs."""
        history = History(capacity=10)
        for t in range(1000):
            history.record(t, {"a": t, "b": t})
        assert history.nbytes() == 3 * 10 * 8


class TestSampledHistory:
    def test_sampler_fills_the_history_every_interval(self, tmp_path: Path) -> None:
        """Every 5 s on the clock, one sample per series: last-interval rates and queue depths."""
        service, reactor = make_service(
            tmp_path, inputs={"syslog": {"listen": []}}, outputs={"file": {}}
        )
        service.startService()
        report: StatusReport = service.status
        received = service.telemetry.counter("obsd.input.syslog.received")
        sent = service.telemetry.counter("obsd.output.file.sent")
        for step in range(4):
            received.inc(10 * step)
            sent.inc(5 * step)
            reactor.advance(SAMPLE_INTERVAL)
        assert report.history.times() == [0.0, 5.0, 10.0, 15.0, 20.0]
        assert report.history.series("input.syslog.rate") == [0.0, 0.0, 2.0, 4.0, 6.0]
        assert report.history.series("output.file.rate") == [0.0, 0.0, 1.0, 2.0, 3.0]
        assert report.history.series("output.file.queued") == [0.0] * 5
        code, text = get(service, "/status")
        doc = json.loads(text)
        assert code == 200
        assert doc["history"]["series"]["input.syslog.rate"] == [0.0, 0.0, 2.0, 4.0, 6.0]
        assert doc["history"]["capacity"] == HISTORY_SAMPLES
        success_result_of(service.stopService())

    def test_fifteen_minutes_then_the_oldest_go(self, tmp_path: Path) -> None:
        """After an hour the history still holds 180 samples: the last 15 minutes."""
        service, reactor = make_service(tmp_path, outputs={"file": {}})
        service.startService()
        reactor.pump([SAMPLE_INTERVAL] * 720)
        report: StatusReport = service.status
        times = report.history.times()
        assert len(times) == HISTORY_SAMPLES
        assert times[-1] - times[0] == (HISTORY_SAMPLES - 1) * SAMPLE_INTERVAL
        success_result_of(service.stopService())


class TestSampledRates:
    def test_rates_change_only_at_a_sample(self) -> None:
        """Between two copies, sampled rates and their time stay put."""
        clock = Clock()
        tel = Telemetry()
        sent = tel.counter("x")
        sampler = RateSampler(tel, clock, interval=5, window=10)
        sampler.startService()
        sent.inc(20)
        clock.advance(5)
        first = sampler.sampled_rates()
        sent.inc(100)
        clock.advance(2)
        assert sampler.sampled_rates() == first == (5, {"x": 4.0})
        clock.advance(3)
        assert sampler.sampled_rates() == (10, {"x": 12.0})
        assert sampler.sampled_rates(last_interval=True) == (10, {"x": 20.0})
        sampler.stopService()
