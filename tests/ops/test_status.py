"""/status, /readyz and the status page: exact numbers, rates over a window, last errors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock

from obsd.config.loader import parse_config
from obsd.daemon.topology import ObsdService, build_service
from obsd.ops.status import ErrorRecorder, RateSampler
from obsd.ops.telemetry import Telemetry
from tests.helpers import success_result_of


def get(service: ObsdService, path: str) -> tuple[int, str]:
    http = StubTreq(service.http_root)
    response = success_result_of(http.get(f"http://obsd{path}"))
    return response.code, success_result_of(response.text())


def make_service(tmp_path: Path, **raw: Any) -> tuple[ObsdService, MemoryReactorClock]:
    reactor = MemoryReactorClock()
    config = parse_config({"daemon": {"data_dir": str(tmp_path)}, **raw})
    return build_service(config, reactor, lock=False), reactor


class TestRateSampler:
    def test_rate_over_the_window(self, clock: Clock) -> None:
        """Rates are the change since the oldest kept copy, per second."""
        tel = Telemetry()
        sent = tel.counter("obsd.output.file.sent")
        sampler = RateSampler(tel, clock, interval=5, window=10)
        sampler.startService()
        sent.inc(50)
        clock.advance(5)
        assert sampler.rates()["obsd.output.file.sent"] == 10.0
        sent.inc(50)
        clock.advance(5)
        assert sampler.rates()["obsd.output.file.sent"] == 10.0
        clock.advance(5)  # the copy at t=0 falls off: 100 over the last 10 s
        assert sampler.rates()["obsd.output.file.sent"] == 5.0
        sampler.stopService()
        assert clock.getDelayedCalls() == []

    def test_keeps_a_bounded_number_of_copies(self, clock: Clock) -> None:
        """However long it runs, the sampler holds window/interval + 1 copies."""
        sampler = RateSampler(Telemetry(), clock, interval=1, window=4)
        sampler.startService()
        clock.pump([1] * 100)
        assert len(sampler._samples) == 5
        assert sampler.window == 4
        sampler.stopService()


class TestErrorRecorder:
    @pytest.mark.parametrize(
        ("key", "fields", "component"),
        [
            ("x", {"input": "syslog"}, "input.syslog"),
            ("x", {"output": "es"}, "output.es"),
            ("input:syslog:framing", {}, "input.syslog"),
            ("statsd:bad_line", {}, "input.statsd"),
            ("es/node1:retry", {}, "output.es"),
            ("processor:x", {}, "obsd"),
        ],
    )
    def test_component_of_a_report(self, clock: Clock, key: str, fields: dict[str, Any], component: str) -> None:
        """Fields name the component first, then the key's first part."""
        recorder = ErrorRecorder(Telemetry(), clock, ["syslog", "statsd"], ["es"])
        assert recorder.component(key, fields) == component

    def test_throttled_reports_still_update_the_last_error(self, clock: Clock, tmp_path: Path) -> None:
        """Every report, shown or suppressed by the throttle, is the component's last error."""
        service, reactor = make_service(tmp_path, outputs={"file": {}})
        reactor.advance(7)
        for i in range(3):
            service.throttle.warning("file:x", "cannot write", output="file", reason=f"disk {i}")
        noted = service.telemetry.errors()["output.file"]
        assert (noted.message, noted.when, noted.count) == ("cannot write: disk 2", 7.0, 3)
        service.throttle.stop()


class TestStatusDocument:
    def test_counters_rates_and_errors_per_output(self, tmp_path: Path) -> None:
        """/status shows each output's counters, rates over the window and last error."""
        service, reactor = make_service(tmp_path, outputs={"file": {}})
        service.startService()
        service.telemetry.counter("obsd.output.file.sent").inc(30)
        reactor.advance(5)
        service.throttle.error("file:encode", "output cannot encode event", output="file", error="boom")
        code, text = get(service, "/status")
        doc = json.loads(text)
        out = doc["outputs"]["file"]
        assert code == 200
        assert out["counters"]["sent"] == 30
        assert out["rates"]["sent"] == 6.0
        assert out["gauges"]["queued"] == 0
        assert (out["last_error"], out["last_error_at"]) == ("output cannot encode event: boom", 5.0)
        assert doc["uptime"] == 5.0
        assert doc["ready"] is True
        success_result_of(service.stopService())


class TestReadiness:
    def test_listener_down_is_not_ready(self, tmp_path: Path) -> None:
        """A started service whose HTTP listener is not bound answers 503 naming it."""
        service, _ = make_service(tmp_path, http={"listen": ["tcp:0:interface=127.0.0.1"]})
        service.startService()
        assert get(service, "/readyz")[0] == 200  # MemoryReactor "binds" every port
        listener = next(s for s in service.inputs_group if getattr(s, "owner", "") == "http")
        listener.port = None
        code, text = get(service, "/readyz")
        assert code == 503
        assert json.loads(text)["reasons"] == ["listener http tcp:0:interface=127.0.0.1 down"]
        success_result_of(service.stopService())

    def test_failing_output_past_threshold_then_recovered(self, tmp_path: Path) -> None:
        """/readyz is 503 once an output has failed for failing_after seconds, 200 after it recovers."""
        service, reactor = make_service(
            tmp_path, outputs={"file": {"failing_after": 30, "batch_timeout": 0, "retry_max": 1}}
        )
        queue = service.outputs["file"].queues[""]
        answers: list[defer.Deferred[None]] = []

        def send(batch: list[bytes]) -> defer.Deferred[None]:
            answers.append(defer.Deferred())
            return answers[-1]

        queue.destination = type("D", (), {"key": "", "send": staticmethod(send)})()
        service.startService()
        service.outputs["file"].accept({"kind": "log", "event": "x"})
        reactor.advance(0)
        answers[-1].errback(RuntimeError("disk gone"))
        for _ in range(40):
            reactor.advance(1)
            if answers[-1].called is False and len(answers) > 1:
                answers[-1].errback(RuntimeError("disk gone"))
        code, text = get(service, "/readyz")
        assert code == 503
        assert json.loads(text)["reasons"] == ["output file failing"]
        reactor.advance(1)
        answers[-1].callback(None)
        assert get(service, "/readyz")[0] == 200
        stopped = service.stopService()
        reactor.advance(service.config.daemon.shutdown_timeout)  # the obsd.* flush never answered
        success_result_of(stopped)


class TestPage:
    def test_page_shows_the_same_numbers(self, tmp_path: Path) -> None:
        """GET / is HTML whose value cells hold the /status numbers, refreshing itself."""
        service, _ = make_service(tmp_path, outputs={"file": {}})
        service.startService()
        service.telemetry.counter("obsd.output.file.sent").inc(12)
        code, page = get(service, "/")
        assert code == 200
        assert '<meta http-equiv="refresh" content="2">' in page
        cells = dict(re.findall(r'data-name="([^"]+)">([^<]+)<', page))
        assert cells["obsd.output.file.sent"] == "12"
        assert "<script" not in page
        service.throttle.warning("file:x", "cannot write", output="file", reason="disk full")
        assert "cannot write: disk full" in get(service, "/")[1]
        success_result_of(service.stopService())
