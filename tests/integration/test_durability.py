"""Durable delivery with real processes: an agent obsd forwards Sentry reports through a
disk-buffered sentry output to an upstream obsd (its Sentry ingest), which we stop,
restart and damage around.  Every report the agent answered 200 for must arrive.

The outage length is a parameter (``OBSD_OUTAGE_SECONDS``, a few seconds by default).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.fixtures.obsd import ObsdProcess

pytestmark = pytest.mark.integration

OUTAGE = float(os.environ.get("OBSD_OUTAGE_SECONDS", "2"))
KEY = "0123456789abcdef0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


UPSTREAM = """
[daemon]
data_dir = '{data_dir}'
[http]
listen = ['tcp:{port}:interface=127.0.0.1']
[inputs.sentry]
[outputs.file]
batch_timeout = 0.05
"""

AGENT = """
[daemon]
data_dir = '{data_dir}'
shutdown_timeout = 1.0
sync_interval = 0.2
metrics_interval = 0
[http]
listen = ['tcp:0:interface=127.0.0.1']
[inputs.sentry]
[outputs.upstream]
type = "sentry"
dsn = "http://KEY@127.0.0.1:{port}/1"
retry_initial = 0.1
retry_max = 0.5
[outputs.upstream.buffer]
type = "disk"
""".replace("KEY", KEY)


def report(port: int, i: int) -> str:
    """POST one store report to obsd; return its event id once answered 200."""
    event_id = uuid.uuid4().hex
    body = json.dumps(
        {"event_id": event_id, "message": f"report {i}", "level": "error", "platform": "python"}
    ).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Sentry-Auth": f"Sentry sentry_version=7, sentry_key={KEY}, sentry_client=test/1",
    }
    for _attempt in range(50):  # bounded: a 503 while obsd sheds load means try again
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/api/1/store/", body, headers)
        response = conn.getresponse()
        response.read()
        conn.close()
        if response.status == 200:
            return event_id
        assert response.status in (429, 503), response.status
        time.sleep(0.1)
    raise AssertionError("obsd kept shedding load")


def arrived(upstream: ObsdProcess) -> list[str]:
    """Ids of the error events the upstream wrote to its file."""
    path = upstream.data_dir / "events.jsonl"  # type: ignore[attr-defined]
    if not path.exists():
        return []
    ids = []
    for line in path.read_text().splitlines():
        event = json.loads(line)
        if event.get("kind") == "error":
            ids.append(event["id"])
    return ids


@pytest.fixture(name="pair")
def _pair(obsd_process: Callable[..., ObsdProcess]) -> tuple[ObsdProcess, ObsdProcess]:
    port = free_port()
    upstream = obsd_process(UPSTREAM.replace("{port}", str(port)))
    agent = obsd_process(AGENT.replace("{port}", str(port)))
    return agent, upstream


def spool_segments(agent: ObsdProcess) -> list[Path]:
    return sorted((agent.data_dir / "spool" / "upstream").rglob("*.seg"))  # type: ignore[attr-defined]


class TestOutages:
    def test_upstream_stopped_and_restarted_loses_nothing(
        self, pair: tuple[ObsdProcess, ObsdProcess]
    ) -> None:
        """Reports sent while the upstream is down all arrive, once each, when it is back."""
        agent, upstream = pair
        port = agent.port("http")
        sent = [report(port, i) for i in range(20)]
        upstream.wait_for(lambda: len(arrived(upstream)) == 20, what="the first 20 reports")
        assert upstream.stop() == 0
        deadline = time.monotonic() + OUTAGE
        i = 20
        while time.monotonic() < deadline:
            sent.append(report(port, i))
            i += 1
            time.sleep(0.02)
        upstream.start()
        upstream.wait_for(lambda: len(arrived(upstream)) >= len(sent), timeout=30,
                          what=f"{len(sent)} reports upstream")
        assert sorted(arrived(upstream)) == sorted(sent)

    def test_sigterm_mid_outage_keeps_the_spool(self, pair: tuple[ObsdProcess, ObsdProcess]) -> None:
        """SIGTERM with the upstream down loses nothing: the next run delivers it all."""
        agent, upstream = pair
        assert upstream.stop() == 0
        port = agent.port("http")
        sent = [report(port, i) for i in range(30)]
        assert agent.stop() == 0
        assert spool_segments(agent)
        upstream.start()
        agent.start()
        upstream.wait_for(lambda: len(arrived(upstream)) >= 30, timeout=30, what="30 reports")
        assert sorted(arrived(upstream)) == sorted(sent)

    def test_sigkill_loses_at_most_the_sync_interval(
        self, pair: tuple[ObsdProcess, ObsdProcess]
    ) -> None:
        """After kill -9, what was accepted more than sync_interval before is delivered."""
        agent, upstream = pair
        assert upstream.stop() == 0
        port = agent.port("http")
        sent = [report(port, i) for i in range(30)]
        time.sleep(0.2 * 3)  # three sync intervals: everything accepted is on disk
        agent.stop(signal.SIGKILL)
        upstream.start()
        agent.start()
        upstream.wait_for(lambda: len(arrived(upstream)) >= 30, timeout=30, what="30 reports")
        assert sorted(arrived(upstream)) == sorted(sent)

    def test_damaged_spool_skips_exactly_the_damaged_records(
        self, pair: tuple[ObsdProcess, ObsdProcess]
    ) -> None:
        """A flipped byte and a torn tail cost two records; obsd starts and sends the rest."""
        agent, upstream = pair
        assert upstream.stop() == 0
        port = agent.port("http")
        for i in range(30):
            report(port, i)
        assert agent.stop() == 0
        (segment,) = spool_segments(agent)
        data = bytearray(segment.read_bytes())
        data[len(data) // 2] ^= 0xFF
        segment.write_bytes(bytes(data[:-7]))
        upstream.start()
        agent.start()
        upstream.wait_for(lambda: len(arrived(upstream)) >= 28, timeout=30,
                          what=f"28 reports; agent log:\n{agent.output()[-3000:]}")
        time.sleep(1.0)  # nothing more comes
        assert len(arrived(upstream)) == 28
        skipped = [e for e in agent.log_events() if e.get("event") == "damaged spool record skipped"]
        assert skipped, agent.output()[-3000:]


ES_AGENT = """
[daemon]
data_dir = '{data_dir}'
shutdown_timeout = 1.0
sync_interval = 0.2
metrics_interval = 0
[http]
listen = ['tcp:0:interface=127.0.0.1']
[inputs.sentry]
[outputs.elasticsearch]
urls = ['{url}']
index = 'durable-%Y.%m.%d'
batch_timeout = 0.1
retry_initial = 0.1
retry_max = 0.5
[outputs.elasticsearch.buffer]
type = "disk"
"""


def es_count(node: Any) -> int:
    client = node.client
    try:
        client.refresh("durable-*")
        return int(client.count("durable-*"))
    except Exception:  # noqa: BLE001 - the node is down or the index not there yet
        return -1


class TestElasticsearch:
    def test_node_outage_and_sigkill(
        self, obsd_process: Callable[..., ObsdProcess], es_restartable_node: Any
    ) -> None:
        """A node outage loses nothing; kill -9 of obsd loses at most the sync interval,
        and what is sent twice is stored once (the event id is the document _id)."""
        node = es_restartable_node
        agent = obsd_process(ES_AGENT.replace("{url}", node.url))
        port = agent.port("http")
        sent = [report(port, i) for i in range(20)]
        agent.wait_for(lambda: es_count(node) == 20, timeout=30, what="20 documents")
        node.stop()
        deadline = time.monotonic() + OUTAGE
        while time.monotonic() < deadline:
            sent.append(report(port, len(sent)))
            time.sleep(0.02)
        node.restart()
        agent.wait_for(lambda: es_count(node) == len(sent), timeout=60,
                       what=f"{len(sent)} documents after the outage")
        # kill -9 while a steady load runs: only the last sync_interval may be lost
        last_before_kill = len(sent)
        for i in range(40):
            sent.append(report(port, 1000 + i))
        time.sleep(0.2 * 3)
        agent.stop(signal.SIGKILL)
        agent.start()
        agent.wait_for(lambda: es_count(node) == len(sent), timeout=60,
                       what=f"{len(sent)} documents after kill -9 (had {last_before_kill})")
        time.sleep(1.0)
        assert es_count(node) == len(sent)  # replayed batches did not double anything


    def test_sigterm_and_damaged_spool_with_the_node_down(
        self, obsd_process: Callable[..., ObsdProcess], es_restartable_node: Any
    ) -> None:
        """SIGTERM while the node is down keeps everything in the spool; a flipped byte and
        a torn tail then cost exactly two documents, and the rest land once each."""
        node = es_restartable_node
        agent = obsd_process(ES_AGENT.replace("{url}", node.url))
        port = agent.port("http")
        node.stop()
        sent = [report(port, i) for i in range(40)]
        assert agent.stop() == 0
        segments = sorted((agent.data_dir / "spool" / "elasticsearch").rglob("*.seg"))  # type: ignore[attr-defined]
        assert len(segments) == 1
        data = bytearray(segments[0].read_bytes())
        data[len(data) // 2] ^= 0xFF
        segments[0].write_bytes(bytes(data[:-7]))
        node.restart()
        agent.start()
        agent.wait_for(lambda: es_count(node) == len(sent) - 2, timeout=60,
                       what=f"{len(sent) - 2} documents")
        time.sleep(1.0)
        assert es_count(node) == len(sent) - 2


STATSD_AGENT = """
[daemon]
data_dir = '{data_dir}'
shutdown_timeout = 1.0
sync_interval = 0.2
metrics_interval = 0
[inputs.statsd]
listen = ['udp:0:interface=127.0.0.1']
flush_interval = 2.0                  # whisper keeps one point per second: no two flushes in one
# an idle counter is not flushed as 0: the SIGTERM flush then writes nothing that could
# land in the same whisper second as the last periodic flush and overwrite its count
delete_counters = true
[outputs.graphite]
destinations = ['127.0.0.1:{line_port}']
retry_initial = 0.1
retry_max = 0.5
reconnect_initial = 0.1
reconnect_max = 0.5
batch_timeout = 0.1
[outputs.graphite.buffer]
type = "disk"
"""


class TestCarbon:
    def test_carbon_outage_keeps_every_count(
        self, obsd_process: Callable[..., ObsdProcess], tmp_path: Path
    ) -> None:
        """Counts sent while carbon-cache is down reach its whisper files when it is back."""
        from tests.integration.fixtures.carbon import CarbonCache

        try:
            carbon = CarbonCache(tmp_path / "carbon").start()
        except RuntimeError as exc:
            if os.environ.get("CI"):
                pytest.fail(f"CI is set but carbon-cache cannot start: {exc}", pytrace=False)
            pytest.skip(str(exc))
        try:
            agent = obsd_process(STATSD_AGENT.replace("{line_port}", str(carbon.line_port)))
            port = agent.port("statsd", "udp")
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            total = 0

            def send(seconds: float) -> None:
                nonlocal total
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline:
                    sock.sendto(b"durable.hits:1|c", ("127.0.0.1", port))
                    total += 1
                    time.sleep(0.01)

            send(1.5)
            carbon.stop()
            send(OUTAGE)
            carbon.start()
            send(1.0)

            def stored() -> float:
                return sum(v for _t, v in carbon.values("stats_counts.durable.hits"))

            carbon.wait_for(lambda: stored() == total, timeout=30,
                            what=f"{total} counts in whisper (have {stored()}: "
                                 f"{carbon.values('stats_counts.durable.hits')})")

            # carbon down again: SIGTERM flushes the aggregator into the spool, losing nothing
            carbon.stop()
            send(1.0)
            time.sleep(2.5)  # a periodic flush takes these counts (see delete_counters)
            assert agent.stop() == 0
            carbon.start()
            agent.start()
            port = agent.port("statsd", "udp")
            carbon.wait_for(lambda: stored() == total, timeout=30,
                            what=f"{total} counts after SIGTERM (have {stored()})")

            # kill -9: at most the samples of the current flush interval (and the last
            # sync_interval of flushed points) are lost, as documented
            sent_before = total
            send(3.0)
            agent.stop(signal.SIGKILL)
            agent.start()
            time.sleep(3.0)
            lost = total - stored()
            assert 0 <= lost <= (total - sent_before) * (2.0 + 0.2 + 0.5) / 3.0
        finally:
            carbon.stop()


class TestSyncDurability:
    def test_http_answers_only_once_the_event_is_on_disk(
        self, obsd_process: Callable[..., ObsdProcess]
    ) -> None:
        """With durability = "sync" a 200 means the report is already in the spool file,
        even with a sync_interval far longer than the request takes."""
        config = AGENT.replace("sync_interval = 0.2", "sync_interval = 60\ndurability = 'sync'")
        agent = obsd_process(config.replace("{port}", str(free_port())))  # upstream never up
        event_id = report(agent.port("http"), 0)
        (segment,) = spool_segments(agent)
        assert event_id.encode() in segment.read_bytes()
