"""``[daemon] workers = 2`` with real processes: one obsd, two workers, carbon and Etsy statsd.

One ``twistd obsd`` with two workers takes StatsD and syslog over TCP
(connections are spread over the workers by the kernel, ``SO_REUSEPORT``; the
test opens connections until both workers hold some, so both really take
traffic).  The StatsD lines also go to one Etsy statsd 0.9.0 writing to the
same carbon-cache: Graphite must hold from obsd exactly what Etsy flushed, as
with one worker, though each worker saw only part of the samples, and a
Prometheus scrape on the shared port gives the same sum.  Then:
every syslog line once in the file and once in one ``tail`` on the shared
port, ``/status`` and ``/metrics`` there add up both workers, SIGHUP reaches both, SIGTERM stops both with 0.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.fixtures.carbon import CarbonCache
from tests.integration.fleet_helpers import (
    assert_obsd_flushed_what_etsy_did,
    next_send_time,
    statsd_settings,
    traffic,
)
from tests.integration.relay_helpers import free_port

pytestmark = pytest.mark.integration


def config(http_port: int, carbon: CarbonCache, prefix: str) -> str:
    return (
        "[daemon]\ndata_dir = '{data_dir}'\nhostname = 'w'\nmetrics_interval = 1\n"
        "shutdown_timeout = 5\nworkers = 2\n"
        f"[http]\nlisten = ['tcp:{http_port}:interface=127.0.0.1']\n"
        "[inputs.statsd]\nlisten = ['tcp:0:interface=127.0.0.1']\nlate_partials_grace = 1.0\n"
        f"{statsd_settings(prefix)}"
        "[inputs.syslog]\nlisten = ['tcp:0:interface=127.0.0.1']\n"
        f"[outputs.graphite]\ndestinations = ['127.0.0.1:{carbon.line_port}']\n"
        "batch_timeout = 0.05\n"
        "[outputs.file]\nbatch_timeout = 0.05\n"
        "[outputs.prometheus]\n"
    )


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def private_ports(proc: Any, public: int) -> dict[int, int]:
    """Each worker's private HTTP port, from its "listening" line."""
    return {
        e["worker"]: e["port"]
        for e in proc.log_events()
        if e.get("event") == "listening" and e.get("input") == "http" and e["port"] != public
    }


def local(port: int) -> dict[str, Any]:
    doc: dict[str, Any] = get_json(f"http://127.0.0.1:{port}/status?local=1")
    return doc


def connect_to_both(port: int, private: dict[int, int], input_name: str) -> list[socket.socket]:
    """Connections to ``port`` until each worker holds at least one (at most 32)."""
    conns: list[socket.socket] = []
    while len(conns) < 32:
        conns.append(socket.create_connection(("127.0.0.1", port)))
        if len(conns) < 2:
            continue
        time.sleep(0.1)
        held = [
            local(p)["metrics"]["obsd"]["input"][input_name]["connections"]
            for p in private.values()
        ]
        if all(held):
            return conns
    raise AssertionError("32 connections, and one worker holds none")


class TestTwoWorkers:
    def test_statsd_exact_syslog_whole_status_summed_signals_reach_both(
        self,
        carbon_cache: CarbonCache,
        obsd_process: Callable[..., Any],
        etsy: Any,
    ) -> None:
        run = uuid.uuid4().hex[:8]
        obsd_prefix, etsy_prefix = f"obsd_{run}", f"etsy_{run}"
        http_port = free_port()
        proc = obsd_process(config(http_port, carbon_cache, obsd_prefix))
        base = f"http://127.0.0.1:{http_port}"
        proc.wait_for(
            lambda: len(private_ports(proc, http_port)) == 2
            and all(w["answered"] for w in get_json(f"{base}/status")["workers"]),
            timeout=20,
            what="both workers answering",
        )
        private = private_ports(proc, http_port)
        statsd = etsy(etsy_prefix)

        # StatsD: each worker takes part of the samples; Graphite gets Etsy's numbers
        lines = traffic(seed=int(run, 16))
        conns = connect_to_both(proc.port("statsd"), private, "statsd")
        to_etsy = socket.create_connection(("127.0.0.1", statsd.port))
        try:
            time.sleep(max(0.0, next_send_time(statsd.start_second) - time.time()))
            started = time.time()
            for i, conn in enumerate(conns):
                conn.sendall(b"".join(f"{line}\n".encode() for line in lines[i :: len(conns)]))
            to_etsy.sendall(b"".join(f"{line}\n".encode() for line in lines))
            assert time.time() - started < 1.4, "sending took too long for one interval"
        finally:
            for conn in [*conns, to_etsy]:
                conn.close()
        assert_obsd_flushed_what_etsy_did(carbon_cache, obsd_prefix, etsy_prefix, lines)
        received = [
            local(p)["inputs"]["statsd"]["counters"]["metrics_received"]
            for p in private.values()
        ]
        assert all(received) and sum(received) == len(lines), received
        # a Prometheus scrape reaching either worker sees the one sum
        requests = sum(int(x.split(":")[1].split("|")[0]) for x in lines if x.startswith("req:"))
        for _ in range(6):  # new connections: the kernel picks a worker for each
            with urllib.request.urlopen(f"{base}/metrics/data", timeout=10) as response:
                scraped = response.read().decode()
            assert f"\nreq_total {float(requests)}\n" in scraped, scraped[:2000]

        # syslog: every line once in the one file, from both workers, and in one tail
        tail = urllib.request.urlopen(f"{base}/api/obsd/v1/tail?match=source=syslog", timeout=10)
        assert b'"_tail": "started"' in tail.readline()
        conns = connect_to_both(proc.port("syslog"), private, "syslog")
        sent = []
        for c, conn in enumerate(conns):
            batch = [f"<13>1 2026-12-04T05:00:00Z h app - - - {run} {c}-{i}" for i in range(100)]
            conn.sendall(b"".join(f"{line}\n".encode() for line in batch))
            sent += [line.rsplit(" ", 2)[-1] for line in batch]
        for conn in conns:
            conn.close()
        events_file = proc.data_dir / "events.jsonl"

        def written() -> list[str]:
            if not events_file.exists():
                return []
            found = []
            for line in events_file.read_text().splitlines():
                event = json.loads(line)
                if event.get("kind") == "log" and run in str(event.get("event")):
                    found.append(str(event["event"]).rsplit(" ", 1)[-1])
            return found

        tailed = set()
        while len(tailed) < len(sent):  # the socket's timeout bounds each read
            line = tail.readline()
            assert line, "the tail ended early"
            event = json.loads(line)
            if run in str(event.get("event")):
                tailed.add(str(event["event"]).rsplit(" ", 1)[-1])
        tail.close()
        assert tailed == set(sent)
        proc.wait_for(lambda: len(written()) >= len(sent), timeout=20, what="every syslog line")
        assert sorted(written()) == sorted(sent)
        per_worker = [local(p)["inputs"]["syslog"]["counters"]["received"] for p in private.values()]
        assert all(per_worker) and sum(per_worker) == len(sent)

        # one /status and one /metrics for both
        status = get_json(f"{base}/status")
        assert [w["index"] for w in status["workers"]] == [0, 1]
        assert status["inputs"]["syslog"]["counters"]["received"] == len(sent)
        assert status["inputs"]["statsd"]["counters"]["metrics_received"] == len(lines)
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert f"obsd_input_syslog_received_total {float(len(sent))}" in metrics
        # obsd's own numbers: flushed once, by worker 0, for both
        carbon_cache.wait_for(
            lambda: any(v == len(sent) for _, v in carbon_cache.values(
                "obsd.input.syslog.received")),
            what="obsd.input.syslog.received summed over both workers",
        )

        # SIGHUP reaches both workers; SIGTERM stops both, cleanly
        os.kill(proc.pid, signal.SIGHUP)
        proc.wait_for(
            lambda: {e.get("worker") for e in proc.log_events()
                     if e.get("event") == "config reloaded"} == {0, 1},
            what="both workers reloaded",
        )
        assert proc.stop() == 0
        stopped = [e for e in proc.log_events() if e.get("event") == "worker stopped"]
        assert [(e["worker"], e["exit_code"]) for e in stopped] == [(1, 0)]
        assert [e for e in proc.log_events() if e.get("event") == "stopped"], proc.output()[-2000:]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:  # reaped in between
        return False


class TestWorkerFailures:
    def test_a_killed_worker_restarts_and_a_killed_parent_takes_the_workers_along(
        self, obsd_process: Callable[..., Any]
    ) -> None:
        """kill -9 of worker 1: started again, its connections served; kill -9 of the
        first process: the workers see its pipe close and stop."""
        http_port = free_port()
        proc = obsd_process(
            "[daemon]\ndata_dir = '{data_dir}'\nmetrics_interval = 0\nworkers = 2\n"
            "shutdown_timeout = 2\n"
            f"[http]\nlisten = ['tcp:{http_port}:interface=127.0.0.1']\n"
            "[inputs.syslog]\nlisten = ['tcp:0:interface=127.0.0.1']\n"
            "[outputs.file]\nbatch_timeout = 0.05\n"
        )

        def worker_pids() -> list[int]:
            return [e["pid"] for e in proc.log_events() if e.get("event") == "worker started"]

        proc.wait_for(lambda: len(private_ports(proc, http_port)) == 2, what="worker 1 up")
        first = worker_pids()[0]
        os.kill(first, signal.SIGKILL)
        proc.wait_for(lambda: len(worker_pids()) == 2, timeout=15, what="worker 1 restarted")
        restarted = worker_pids()[1]
        assert any(e.get("event", "").startswith("worker exited") for e in proc.log_events())
        private = private_ports(proc, http_port)
        proc.wait_for(
            lambda: all(w["answered"] for w in get_json(f"http://127.0.0.1:{http_port}/status")
                        ["workers"]),
            what="both workers answering again",
        )
        conns = connect_to_both(proc.port("syslog"), private, "syslog")
        for c, conn in enumerate(conns):
            conn.sendall(f"<13>1 2026-12-04T05:00:00Z h app - - - after restart {c}\n".encode())
            conn.close()
        events_file = proc.data_dir / "events.jsonl"
        proc.wait_for(
            lambda: events_file.exists()
            and events_file.read_text().count("after restart") == len(conns),
            what="every line after the restart",
        )
        proc.stop(signal.SIGKILL)
        deadline = time.monotonic() + 15
        while pid_alive(restarted) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(restarted), "worker 1 outlived its parent"
