"""SIGTERM loses nothing with the default (memory) buffers: each destination down, then back.

What a memory queue still holds when ``shutdown_timeout`` passes is written to
``data_dir`` and sent first by the next run.  Each test takes a real destination
down (an upstream obsd standing in for Sentry, the OpenSearch node, carbon-cache),
sends, SIGTERMs the agent, brings the destination back, restarts the agent and
counts exactly what arrived.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.fixtures.obsd import ObsdProcess
from tests.integration.test_durability import (
    KEY,
    UPSTREAM,
    arrived,
    free_port,
    report,
)

pytestmark = pytest.mark.integration

SENTRY_AGENT = """
[daemon]
data_dir = '{data_dir}'
shutdown_timeout = 1.0
metrics_interval = 0
[http]
listen = ['tcp:0:interface=127.0.0.1']
[inputs.sentry]
[outputs.upstream]
type = "sentry"
dsn = "http://KEY@127.0.0.1:{port}/1"
retry_initial = 0.1
retry_max = 0.5
""".replace("KEY", KEY)

ES_AGENT = """
[daemon]
data_dir = '{data_dir}'
shutdown_timeout = 1.0
metrics_interval = 0
[http]
listen = ['tcp:0:interface=127.0.0.1']
[inputs.sentry]
[outputs.elasticsearch]
urls = ['{url}']
index = 'lossless-%Y.%m.%d'
batch_timeout = 0.1
retry_initial = 0.1
retry_max = 0.5
"""

STATSD_AGENT = """
[daemon]
data_dir = '{data_dir}'
shutdown_timeout = 1.0
metrics_interval = 0
[inputs.statsd]
listen = ['udp:0:interface=127.0.0.1']
flush_interval = 2.0
# an idle counter is not flushed as 0, which whisper (one point a second) would keep
# over the last real count when the SIGTERM flush lands in the same second
delete_counters = true
[outputs.graphite]
destinations = ['127.0.0.1:{line_port}']
retry_initial = 0.1
retry_max = 0.5
reconnect_initial = 0.1
reconnect_max = 0.5
batch_timeout = 0.1
"""


def leftover_segments(agent: ObsdProcess, output: str) -> list[Path]:
    return sorted((agent.data_dir / "spool" / output).rglob("*.seg"))  # type: ignore[attr-defined]


def lossless_count(node: Any) -> int:
    client = node.client
    try:
        client.refresh("lossless-*")
        return int(client.count("lossless-*"))
    except Exception:  # noqa: BLE001 - the node is down or the index not there yet
        return -1


class TestMemoryQueuesAtSigterm:
    def test_sentry_upstream_down(self, obsd_process: Callable[..., ObsdProcess]) -> None:
        """Reports accepted while the upstream is down arrive after SIGTERM and a restart."""
        port = free_port()
        upstream = obsd_process(UPSTREAM.replace("{port}", str(port)))
        agent = obsd_process(SENTRY_AGENT.replace("{port}", str(port)))
        assert upstream.stop() == 0
        sent = [report(agent.port("http"), i) for i in range(30)]
        assert agent.stop() == 0
        assert leftover_segments(agent, "upstream"), agent.output()[-3000:]
        upstream.start()
        agent.start()
        upstream.wait_for(lambda: len(arrived(upstream)) >= len(sent), timeout=30,
                          what=f"{len(sent)} reports upstream")
        time.sleep(0.5)
        assert sorted(arrived(upstream)) == sorted(sent)
        agent.wait_for(lambda: not leftover_segments(agent, "upstream"), timeout=10,
                       what="the delivered leftovers removed")

    def test_elasticsearch_down(
        self, obsd_process: Callable[..., ObsdProcess], es_restartable_node: Any
    ) -> None:
        """Documents accepted while the node is down are all indexed after SIGTERM and a restart."""
        node = es_restartable_node
        agent = obsd_process(ES_AGENT.replace("{url}", node.url))
        node.stop()
        sent = [report(agent.port("http"), i) for i in range(40)]
        assert agent.stop() == 0
        assert leftover_segments(agent, "elasticsearch"), agent.output()[-3000:]
        node.restart()
        agent.start()
        agent.wait_for(lambda: lossless_count(node) == len(sent), timeout=60,
                       what=f"{len(sent)} documents")
        time.sleep(1.0)
        assert lossless_count(node) == len(sent)

    def test_carbon_down(self, obsd_process: Callable[..., ObsdProcess], tmp_path: Path) -> None:
        """Counts flushed while carbon-cache is down are all stored after SIGTERM and a restart."""
        from tests.integration.fixtures.carbon import CarbonCache

        try:
            carbon = CarbonCache(tmp_path / "carbon").start()
        except RuntimeError as exc:
            if os.environ.get("CI"):
                pytest.fail(f"CI is set but carbon-cache cannot start: {exc}", pytrace=False)
            pytest.skip(str(exc))
        try:
            carbon.stop()
            agent = obsd_process(STATSD_AGENT.replace("{line_port}", str(carbon.line_port)))
            port = agent.port("statsd", "udp")
            total = 0
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                for _ in range(300):
                    sock.sendto(b"lossless.hits:1|c", ("127.0.0.1", port))
                    total += 1
                    if total % 50 == 0:
                        time.sleep(0.2)
            assert agent.stop() == 0
            assert leftover_segments(agent, "graphite"), agent.output()[-3000:]
            carbon.start()
            agent.start()

            def stored() -> float:
                return sum(v for _t, v in carbon.values("stats_counts.lossless.hits"))

            carbon.wait_for(lambda: stored() == total, timeout=30,
                            what=f"{total} counts after SIGTERM")
        finally:
            carbon.stop()
