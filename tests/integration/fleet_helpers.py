"""What the fleet-wide StatsD tests share: Etsy statsd beside obsd, the traffic, the timing.

Etsy statsd 0.9.0 (from npm, installed by ``bench.statsd.install_etsy``)
writes to the same carbon-cache as obsd under another prefix, so a test can
check that obsd's merged flush equals what one Etsy fed everyone's raw
traffic flushed.  obsd's intervals are the even epoch seconds
(``flush_interval = 2``); Etsy flushes every 10 s from its start second; the
traffic is sent just after an obsd boundary at least 3 s from Etsy's
flushes, so both put it in one interval.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.fixtures.carbon import CarbonCache
from tests.integration.relay_helpers import free_port as free_tcp_port

ETSY_FLUSH = 10
OBSD_FLUSH = 2


class EtsyStatsd:
    """Etsy statsd 0.9.0 writing to carbon under ``etsy_<run>``; its start second is known."""

    def __init__(self, package: Path, carbon: CarbonCache, prefix: str) -> None:
        self.port = free_tcp_port()
        self.mgmt_port = free_tcp_port()
        self.tmp = tempfile.TemporaryDirectory(prefix="obsd-fleet-etsy-")
        config = Path(self.tmp.name) / "config.js"
        config.write_text(
            json.dumps(
                {
                    "servers": [
                        {"server": "./servers/tcp", "address": "127.0.0.1", "port": self.port}
                    ],
                    "mgmt_address": "127.0.0.1",
                    "mgmt_port": self.mgmt_port,
                    "backends": ["./backends/graphite"],
                    "graphiteHost": "127.0.0.1",
                    "graphitePort": carbon.line_port,
                    "graphite": {"legacyNamespace": False, "globalPrefix": prefix},
                    "flushInterval": ETSY_FLUSH * 1000,
                    "percentThreshold": [90, 50],
                    "deleteIdleStats": True,
                    "automaticConfigReload": False,
                }
            )
        )
        self.proc = subprocess.Popen(
            ["node", "stats.js", str(config)],
            cwd=package,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.start_second = self._start_second()

    def _start_second(self) -> float:
        """Etsy's startup_time (whole seconds): it flushes at that + k * flushInterval."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.mgmt_port), timeout=5) as sock:
                    sock.sendall(b"stats\n")
                    data = b""
                    while b"END" not in data:
                        chunk = sock.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    now = time.time()
                match = re.search(rb"uptime: (\d+)", data)
                if match:
                    return round(now) - int(match.group(1))
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("Etsy statsd did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.tmp.cleanup()


@pytest.fixture(name="etsy")
def _etsy(carbon_cache: CarbonCache) -> Iterator[Callable[[str], EtsyStatsd]]:
    started: list[EtsyStatsd] = []

    def start(prefix: str) -> EtsyStatsd:
        try:
            from bench.statsd import install_etsy

            package = install_etsy()
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            if os.environ.get("CI"):
                pytest.fail(f"CI is set but Etsy statsd cannot run: {exc}", pytrace=False)
            pytest.skip(f"Etsy statsd cannot run here: {exc}")
        etsy = EtsyStatsd(package, carbon_cache, prefix)
        started.append(etsy)
        return etsy

    yield start
    for etsy in started:
        etsy.stop()


def statsd_settings(prefix: str) -> str:
    return (
        f"flush_interval = {OBSD_FLUSH}.0\nlegacy_namespace = false\n"
        f'global_prefix = "{prefix}"\npercentiles = [90.0, 50.0]\ndelete_idle_stats = true\n'
    )


def traffic(seed: int) -> list[str]:
    """Counters (with sample rates), timers, gauge deltas, gauge sets and set members."""
    rng = random.Random(seed)
    lines = [f"req:{rng.randint(1, 5)}|c" for _ in range(90)]
    lines += [f"bytes:{rng.randint(100, 900)}|c|@0.5" for _ in range(20)]
    lines += [f"lat:{rng.randint(1, 1000)}|ms" for _ in range(150)]
    lines += [f"db:{rng.uniform(0.5, 80):.3f}|ms|@0.25" for _ in range(30)]
    lines += [f"conns:{rng.choice('+-')}{rng.randint(1, 9)}|g" for _ in range(40)]
    lines += [f"users:u{rng.randint(1, 60)}|s" for _ in range(80)]
    rng.shuffle(lines)
    return lines


def next_send_time(etsy_start: float) -> float:
    """The first obsd boundary at least 3 s from any Etsy flush, plus 50 ms."""
    boundary = (math.floor(time.time() / OBSD_FLUSH) + 1) * OBSD_FLUSH
    while True:
        phase = (boundary - etsy_start) % ETSY_FLUSH
        if 3 <= phase <= ETSY_FLUSH - 3 and boundary > time.time() + 0.2:
            return boundary + 0.05
        boundary += OBSD_FLUSH


def series(carbon: CarbonCache, prefix: str) -> dict[str, list[float]]:
    """Every user series under ``prefix`` (not statsd's own) with its stored values."""
    found = {}
    for name in carbon.names():
        if name.startswith(prefix + ".") and ".statsd." not in name:
            found[name[len(prefix) + 1 :]] = [v for _, v in carbon.values(name)]
    return found


def send_in_one_interval(agent_ports: list[int], etsy: EtsyStatsd, lines: list[str],
                         seed: str) -> list[int]:
    """Each line to one agent at random and all to Etsy, over TCP, inside one obsd interval.

    TCP, so a loaded machine cannot drop datagrams on either side.  Returns
    how many lines each agent got.
    """
    rng = random.Random(seed)
    sent_to = [0] * len(agent_ports)
    chunks: list[list[bytes]] = [[] for _ in agent_ports]
    for line in lines:
        agent = rng.randrange(len(agent_ports))
        sent_to[agent] += 1
        chunks[agent].append(line.encode() + b"\n")
    to_etsy = [line.encode() + b"\n" for line in lines]
    conns = [socket.create_connection(("127.0.0.1", p)) for p in [*agent_ports, etsy.port]]
    try:
        time.sleep(max(0.0, next_send_time(etsy.start_second) - time.time()))
        started = time.time()
        for conn, data in zip(conns, [*chunks, to_etsy], strict=True):
            conn.sendall(b"".join(data))
        # it must end well before the next obsd boundary and Etsy's next flush
        assert time.time() - started < 1.4, "sending took too long for one interval"
    finally:
        for conn in conns:
            conn.close()
    return sent_to


def assert_obsd_flushed_what_etsy_did(
    carbon: CarbonCache, obsd_prefix: str, etsy_prefix: str, lines: list[str]
) -> None:
    """Every series Etsy flushed is in whisper from obsd with the same value, once."""
    expected_names = {"counters.req.count", "timers.lat.mean_90", "sets.users.count"}
    carbon.wait_for(
        lambda: expected_names <= set(series(carbon, etsy_prefix))
        and expected_names <= set(series(carbon, obsd_prefix)),
        timeout=30,
        what="both flushes in whisper",
    )
    time.sleep(1.0)  # carbon writes a flush's points one file at a time
    from_etsy = series(carbon, etsy_prefix)
    from_obsd = series(carbon, obsd_prefix)
    assert set(from_obsd) == set(from_etsy)
    for name, values in from_etsy.items():
        assert len(values) == 1, f"{name}: Etsy split the traffic over flushes: {values}"
        got = from_obsd[name]
        if name.endswith((".rate", ".count_ps")):  # per second of each one's interval
            got, values = [v * OBSD_FLUSH for v in got], [v * ETSY_FLUSH for v in values]
        assert got == pytest.approx(values, rel=1e-9, abs=1e-9), name
    assert from_obsd["counters.req.count"] == [
        sum(int(line.split(":")[1].split("|")[0]) for line in lines if line.startswith("req:"))
    ]
