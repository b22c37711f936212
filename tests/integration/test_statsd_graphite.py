"""StatsD in, Graphite out, with real programs: the statsd client, gunicorn, carbon-cache."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.fixtures.carbon import CarbonCache, free_port

pytestmark = pytest.mark.integration

try:
    import statsd
except ImportError:  # pragma: no cover - depends on the environment
    if os.environ.get("CI"):
        raise  # in CI the client must be there: fail, never skip
    pytest.skip("the PyPI statsd client is not installed", allow_module_level=True)


def obsd_config(carbon: CarbonCache, protocol: str = "plaintext") -> str:
    port = carbon.pickle_port if protocol == "pickle" else carbon.line_port
    return f"""
[daemon]
data_dir = "{{data_dir}}"
shutdown_timeout = 5.0

[inputs.statsd]
listen = ["udp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1"]
flush_interval = 1.0

[outputs.graphite]
destinations = ["127.0.0.1:{port}"]
protocol = "{protocol}"
batch_timeout = 0.05
"""


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def total(carbon: CarbonCache, name: str) -> float:
    return sum(v for _, v in carbon.values(name))


def last(carbon: CarbonCache, name: str) -> float | None:
    values = carbon.values(name)
    return values[-1][1] if values else None


class TestStatsdClient:
    @pytest.mark.parametrize("protocol", ["plaintext", "pickle"])
    def test_points_land_in_whisper(
        self, carbon_cache: CarbonCache, obsd_process: Callable[..., Any], protocol: str
    ) -> None:
        """Counters, timers, gauges and sets from the PyPI client reach whisper with Etsy's names."""
        proc = obsd_process(obsd_config(carbon_cache, protocol))
        base = unique(f"it_{protocol}")
        client = statsd.StatsClient("127.0.0.1", proc.port("statsd", "udp"))
        for _ in range(5):
            client.incr(f"{base}.hits")
        client.incr(f"{base}.hits", 10)
        for ms in (10, 20, 30, 40):
            client.timing(f"{base}.latency", ms)
        client.gauge(f"{base}.temp", 42)
        client.gauge(f"{base}.temp", 3, delta=True)
        for user in ("a", "b", "a", "c"):
            client.set(f"{base}.users", user)
        carbon_cache.wait_for(
            lambda: (
                total(carbon_cache, f"stats_counts.{base}.hits") == 15
                and last(carbon_cache, f"stats.gauges.{base}.temp") == 45
                and 40 in [v for _, v in carbon_cache.values(f"stats.timers.{base}.latency.upper")]
                and 3 in [v for _, v in carbon_cache.values(f"stats.sets.{base}.users.count")]
            ),
            what=f"{base} series in whisper",
        )
        means = [v for _, v in carbon_cache.values(f"stats.timers.{base}.latency.mean")]
        assert 25 in means
        assert proc.stop() == 0

    def test_tcp_client(self, carbon_cache: CarbonCache, obsd_process: Callable[..., Any]) -> None:
        """The TCP client's newline-delimited lines aggregate like UDP datagrams."""
        proc = obsd_process(obsd_config(carbon_cache))
        base = unique("it_tcp")
        client = statsd.TCPStatsClient("127.0.0.1", proc.port("statsd", "tcp"))
        for _ in range(7):
            client.incr(f"{base}.hits")
        client.close()
        carbon_cache.wait_for(
            lambda: total(carbon_cache, f"stats_counts.{base}.hits") == 7, what=base
        )
        assert proc.stop() == 0


APP = """\
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\\n"]
"""


@pytest.fixture(name="gunicorn_server")
def _gunicorn_server(tmp_path: Path) -> Iterator[Callable[[int, str], int]]:
    """Factory: start gunicorn with ``--statsd-host`` at a port; returns its HTTP port."""
    procs: list[subprocess.Popen[bytes]] = []
    (tmp_path / "tinyapp.py").write_text(APP)

    def start(statsd_port: int, prefix: str) -> int:
        try:
            import gunicorn  # noqa: F401
        except ImportError:
            if os.environ.get("CI"):
                pytest.fail("CI is set but gunicorn is not installed", pytrace=False)
            pytest.skip("gunicorn is not installed (pip install gunicorn)")
        http_port = free_port()
        log = (tmp_path / "gunicorn.log").open("ab")
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "gunicorn",
                "--bind", f"127.0.0.1:{http_port}",
                "--workers", "1",
                "--statsd-host", f"127.0.0.1:{statsd_port}",
                "--statsd-prefix", prefix,
                "tinyapp:app",
            ],
            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        procs.append(proc)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{http_port}/", timeout=1).read()
                return http_port
            except OSError:
                time.sleep(0.1)
        text = (tmp_path / "gunicorn.log").read_text(errors="replace")
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but gunicorn did not start:\n{text}", pytrace=False)
        pytest.skip(f"gunicorn did not start:\n{text}")

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class TestGunicorn:
    def test_gunicorn_metrics_reach_carbon(
        self,
        carbon_cache: CarbonCache,
        obsd_process: Callable[..., Any],
        gunicorn_server: Callable[[int, str], int],
    ) -> None:
        """gunicorn's --statsd-host metrics (requests, request.duration) arrive in carbon."""
        proc = obsd_process(obsd_config(carbon_cache))
        prefix = unique("guni")
        http_port = gunicorn_server(proc.port("statsd", "udp"), prefix)
        for _ in range(20):
            urllib.request.urlopen(f"http://127.0.0.1:{http_port}/", timeout=5).read()
        # one request was made by the fixture to see that gunicorn is up
        carbon_cache.wait_for(
            lambda: (
                total(carbon_cache, f"stats_counts.{prefix}.gunicorn.requests") == 21
                and bool(
                    carbon_cache.values(f"stats.timers.{prefix}.gunicorn.request.duration.count")
                )
            ),
            what=f"{prefix} gunicorn series",
        )
        durations = carbon_cache.values(f"stats.timers.{prefix}.gunicorn.request.duration.count")
        assert sum(v for _, v in durations) == 21
        assert total(carbon_cache, f"stats_counts.{prefix}.gunicorn.request.status.200") == 21
        assert proc.stop() == 0
