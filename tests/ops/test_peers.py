"""``[daemon] workers``: adding up the workers' documents and numbers."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from obsd.daemon.workers import WorkerRole
from obsd.ops.peers import Peers, SummedJson, SummedPrometheus, add_up, sum_documents
from obsd.ops.telemetry import Telemetry


class FakePeers(Peers):
    """The other workers' answers, given (None: that worker does not answer)."""

    def __init__(self, answers: dict[str, list[Any]]) -> None:
        super().__init__(WorkerRole(0, 3, (1, 2, 3), "t"), reactor=None)
        self.answers = answers
        self.asked: list[str] = []

    def gather(self, path: str) -> defer.Deferred[list[tuple[int, Any]]]:
        self.asked.append(path)
        return defer.succeed(list(zip(self.others, self.answers[path.split("?")[0]], strict=True)))


class TestAddingUp:
    def test_amounts_add_windows_and_lists_do_not(self) -> None:
        a = {"uptime": 10.0, "rate_window": 60.0, "received": 3, "rates": {"received": 1.5},
             "ready": True, "listeners": [{"port": 1}], "last_error": None}
        b = {"uptime": 12.0, "rate_window": 60.0, "received": 4, "rates": {"received": 2.0},
             "ready": False, "listeners": [{"port": 2}], "last_error": "boom", "only_b": 1}
        total = add_up(a, b)
        assert total == {
            "uptime": 10.0, "rate_window": 60.0, "received": 7, "rates": {"received": 3.5},
            "ready": False, "listeners": [{"port": 1}], "last_error": "boom", "only_b": 1,
        }
        assert a["received"] == 3  # the inputs are not changed

    def test_sum_lists_every_worker_and_who_did_not_answer(self) -> None:
        mine = {"worker": {"index": 0, "pid": 10}, "ready": True, "n": 1}
        other = {"worker": {"index": 1, "pid": 11}, "ready": True, "n": 2}
        total = sum_documents(mine, [(1, other), (2, None)])
        assert total["n"] == 3
        assert total["ready"] is False  # worker 2 did not answer
        assert [(w["index"], w["pid"], w["answered"]) for w in total["workers"]] == [
            (0, 10, True), (1, 11, True), (2, None, False)
        ]


class TestResources:
    def test_status_is_summed_unless_asked_for_one_worker(self) -> None:
        peers = FakePeers({"/status": [{"worker": {"index": 1, "pid": 2}, "received": 5}, None]})
        resource = SummedJson(lambda: {"received": 3}, peers, "/status")
        request = DummyRequest([b""])
        assert resource.render_GET(request) == NOT_DONE_YET
        doc = json.loads(b"".join(request.written))
        assert doc["received"] == 8
        assert peers.asked == ["/status?local=1"]
        local = DummyRequest([b""])
        local.args = {b"local": [b"1"]}
        assert json.loads(resource.render_GET(local))["received"] == 3

    def test_metrics_add_every_workers_counters_and_gauges(self) -> None:
        tel = Telemetry()
        tel.counter("obsd.input.syslog.received").inc(3)
        tel.gauge("obsd.output.file.queued", lambda: 2)
        theirs = {"counters": {"obsd.input.syslog.received": 4},
                  "gauges": {"obsd.output.file.queued": 5}}
        peers = FakePeers({"/api/obsd/v1/worker/numbers": [theirs, None]})
        request = DummyRequest([b""])
        assert SummedPrometheus(tel, peers).render_GET(request) == NOT_DONE_YET
        text = b"".join(request.written).decode()
        assert "obsd_input_syslog_received_total 7.0" in text
        assert "obsd_output_file_queued 7.0" in text
