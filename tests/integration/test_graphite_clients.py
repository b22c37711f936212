"""collectd's write_graphite (a real Graphite plaintext client) and pickle frames to a real obsd.

collectd (Debian's collectd-core) reports its load plugin every second over TCP
and over UDP; the points must arrive as metric events with collectd's names.
carbon's pickle protocol has no small real sender here (a carbon-relay would
need a whole carbon setup), so a plain socket sends pickle frames as
carbon-relay writes them, and one hostile frame.
"""

from __future__ import annotations

import os
import pickle
import shutil
import socket
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.fixtures.obsd import ObsdProcess
from tests.integration.test_sentry_forwarding import file_events

pytestmark = pytest.mark.integration

CONFIG = """
[daemon]
data_dir = "{data_dir}"
[http]
listen = ["tcp:0:interface=127.0.0.1"]
[inputs.graphite]
listen = ["tcp:0:interface=127.0.0.1", "udp:0:interface=127.0.0.1"]
[inputs.carbon_pickle]
type = "graphite"
format = "pickle"
listen = ["tcp:0:interface=127.0.0.1"]
[outputs.file]
batch_timeout = 0.05
"""

COLLECTD = """
Hostname "obsdtest"
FQDNLookup false
Interval 1
BaseDir "{dir}"
PIDFile "{dir}/collectd.pid"
PluginDir "/usr/lib/collectd"
TypesDB "/usr/share/collectd/types.db"
LoadPlugin load
LoadPlugin write_graphite
<Plugin write_graphite>
  <Node "tcp">
    Host "127.0.0.1"
    Port "{tcp}"
    Protocol "tcp"
    Prefix "collectd."
  </Node>
  <Node "udp">
    Host "127.0.0.1"
    Port "{udp}"
    Protocol "udp"
    Prefix "collectdudp."
  </Node>
</Plugin>
"""


def find_collectd() -> str:
    path = shutil.which("collectd") or ("/usr/sbin/collectd" if os.path.exists(
        "/usr/sbin/collectd") else None)
    if path is None or not os.path.exists("/usr/lib/collectd/write_graphite.so"):
        reason = "collectd with write_graphite is not installed (Debian: collectd-core)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {reason}", pytrace=False)
        pytest.skip(reason)
    return path


@pytest.fixture(name="collectd")
def _collectd(tmp_path: Path) -> Iterator[Callable[[int, int], subprocess.Popen[bytes]]]:
    binary = find_collectd()
    started: list[subprocess.Popen[bytes]] = []

    def start(tcp: int, udp: int) -> subprocess.Popen[bytes]:
        conf = tmp_path / "collectd.conf"
        conf.write_text(COLLECTD.format(dir=tmp_path, tcp=tcp, udp=udp))
        log = (tmp_path / "collectd.log").open("wb")
        proc = subprocess.Popen([binary, "-f", "-C", str(conf)], stdout=log,
                                stderr=subprocess.STDOUT)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def metrics_from(proc: ObsdProcess, source: str) -> list[dict[str, Any]]:
    return [e for e in file_events(proc) if e.get("kind") == "metric"
            and e.get("source") == source]


class TestCollectd:
    def test_write_graphite_tcp_and_udp(
        self, obsd_process: Callable[..., ObsdProcess],
        collectd: Callable[[int, int], subprocess.Popen[bytes]],
    ) -> None:
        """collectd's load points arrive over TCP and UDP as gauge metric events."""
        a = obsd_process(CONFIG)
        daemon = collectd(a.port("graphite", "tcp"), a.port("graphite", "udp"))

        def both() -> bool:
            names = {e["event"] for e in metrics_from(a, "graphite")}
            return {"collectd.obsdtest.load.load.shortterm",
                    "collectdudp.obsdtest.load.load.shortterm"} <= names

        try:
            a.wait_for(both, timeout=30, what="collectd's points over TCP and UDP")
        finally:
            daemon.terminate()
            daemon.wait(10)
        assert a.stop() == 0
        points = metrics_from(a, "graphite")
        load = [p for p in points if p["event"] == "collectd.obsdtest.load.load.shortterm"]
        point = load[0]
        assert point["metric"] == point["event"]
        assert point["metric_type"] == "gauge"
        assert point["stat"] == "value"
        assert point["tags"] == {}
        assert 0 <= point["value"] < 5000  # types.db: load is 0..5000
        assert point["timestamp"].endswith("Z")
        names = {p["event"] for p in points}
        for ds in ("shortterm", "midterm", "longterm"):
            assert f"collectd.obsdtest.load.load.{ds}" in names


def frame(points: Any) -> bytes:
    body = pickle.dumps(points, protocol=2)
    return struct.pack("!L", len(body)) + body


class Exploit:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, ("touch /tmp/obsd-graphite-pickle-pwned",))


class TestPickleSocket:
    def test_frames_and_a_hostile_one(
        self, obsd_process: Callable[..., ObsdProcess], tmp_path: Path
    ) -> None:
        """carbon-relay-style frames arrive with tags; a REDUCE of os.system is refused."""
        marker = Path("/tmp/obsd-graphite-pickle-pwned")
        marker.unlink(missing_ok=True)
        a = obsd_process(CONFIG)
        port = a.port("carbon_pickle")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(frame([("relay.a;dc=ams", (1764750000, 1.5)),
                                ("relay.b", (1764750001, 2))]))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(frame([Exploit()]))
            sock.settimeout(10)
            assert sock.recv(1) == b""  # obsd closed the connection
        a.wait_for(lambda: len(metrics_from(a, "carbon_pickle")) >= 2, timeout=20,
                   what="the pickled points")
        a.wait_for(lambda: any(e.get("event", "").startswith("graphite pickle frame refused")
                               for e in a.log_events()), timeout=10, what="the refusal log")
        assert a.stop() == 0
        assert not marker.exists()
        got = sorted((p["event"], p["value"], p["tags"]) for p in metrics_from(a, "carbon_pickle"))
        assert got == [("relay.a", 1.5, {"dc": "ams"}), ("relay.b", 2.0, {})]
        (refusal,) = [e for e in a.log_events()
                      if e.get("event", "").startswith("graphite pickle frame refused")]
        assert "system" in refusal["reason"]
