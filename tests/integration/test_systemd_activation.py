"""Sockets handed over the way systemd does, to a real ``twistd obsd``: stream and datagram.

Debian's ``systemd-socket-activate`` binds the sockets, waits for the first
connection, then execs its command with ``LISTEN_FDS``/``LISTEN_FDNAMES``.  It
binds either stream sockets or (``--datagram``) datagram sockets, so two are
chained as the man page allows (descriptors from the first pass through the
second): the outer binds HTTP and syslog TCP, the inner syslog UDP, StatsD UDP
and a unix datagram socket (``/dev/log``'s shape), all named as
``FileDescriptorName=`` would name them.  obsd listens on ``systemd:name=...``
only, never binds a port itself, and what arrives on each socket must reach the
file output.  Ports are picked free just before (loopback only).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.fixtures.obsd import ROOT, TWISTD, ObsdProcess, obsd_env
from tests.integration.ops_support import file_events, get_json

pytestmark = pytest.mark.integration

NAMES = ["http", "syslog-tcp", "syslog-udp", "statsd", "devlog"]


def _activator() -> str:
    for candidate in ("systemd-socket-activate", "/lib/systemd/systemd-socket-activate",
                      "/usr/lib/systemd/systemd-socket-activate"):
        found = shutil.which(candidate)
        if found:
            return found
    reason = "systemd-socket-activate is missing (apt-get install -y systemd)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)
    raise AssertionError("unreachable")


def _free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 right now."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


CONFIG = """
[daemon]
data_dir = '{data_dir}'
metrics_interval = 0
[http]
listen = ["systemd:name=http"]
[inputs.syslog]
listen = ["systemd:name=syslog-tcp", "systemd:name=syslog-udp", "systemd:name=devlog"]
timezone = "UTC"
[inputs.statsd]
listen = ["systemd:name=statsd"]
flush_interval = 0.2
[outputs.file]
batch_timeout = 0.05
"""


class TestSocketActivation:
    def test_stream_and_datagram_sockets_from_systemd_carry_events(self, tmp_path: Path) -> None:
        """HTTP, syslog TCP/UDP/unixgram and StatsD UDP all arrive on sockets obsd was handed."""
        activate = _activator()
        http, syslog_tcp, syslog_udp, statsd = (_free_port() for _ in range(4))
        devlog = tmp_path / "log.sock"
        data_dir = tmp_path / "data"
        config = tmp_path / "obsd.toml"
        config.write_text(CONFIG.replace("{data_dir}", str(data_dir)))
        args = [
            activate, "-l", f"127.0.0.1:{http}", "-l", f"127.0.0.1:{syslog_tcp}",
            "--fdname=http:syslog-tcp",
            activate, "--datagram", "-l", f"127.0.0.1:{syslog_udp}", "-l", f"127.0.0.1:{statsd}",
            "-l", str(devlog), f"--fdname={':'.join(NAMES)}",
            *TWISTD, "--pidfile", "", "-n", "obsd", "--config", str(config),
        ]
        proc = ObsdProcess(tmp_path, args)
        # Nothing runs until the first connection: that is socket activation.  The
        # activator has bound the port before it prints; wait for the outer's line.
        log = proc.log_path
        with log.open("ab") as out:
            proc.proc = subprocess.Popen(args, cwd=tmp_path, env=obsd_env(), stdout=out,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while f"127.0.0.1:{syslog_tcp}".encode() not in log.read_bytes():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        first = socket.create_connection(("127.0.0.1", syslog_tcp), timeout=5)
        first.sendall(b"<14>1 2024-01-02T03:04:05Z web01 app 1 - - over systemd tcp\n")
        first.close()
        proc.wait_for(lambda: any(e.get("event") == "obsd started" for e in proc.log_events()),
                      timeout=60, what="obsd started")
        listening = {e["endpoint"] for e in proc.log_events() if e.get("event") == "listening"}
        assert listening == {f"systemd:name={n}" for n in NAMES}
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(b"<14>1 2024-01-02T03:04:05Z web01 app 1 - - over systemd udp",
                       ("127.0.0.1", syslog_udp))
            udp.sendto(b"activated.hits:3|c", ("127.0.0.1", statsd))
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unixgram:
            unixgram.sendto(b"<14>Jan  2 03:04:05 app[1]: over systemd unixgram", str(devlog))
        status = get_json(f"http://127.0.0.1:{http}/status")  # HTTP over systemd's socket
        handed = [li for part in status["inputs"].values() for li in part["listeners"]]
        assert sorted(li["endpoint"] for li in handed) == sorted(
            f"systemd:name={n}" for n in NAMES if n != "http")
        assert all(li["up"] for li in handed)

        def arrived() -> bool:
            names = {e.get("event") for e in file_events(data_dir / "events.jsonl")}
            return {"over systemd tcp", "over systemd udp", "over systemd unixgram",
                    "stats_counts.activated.hits"} <= names

        proc.wait_for(arrived, timeout=20, what="an event over every handed socket")
        counted = [e for e in file_events(data_dir / "events.jsonl")
                   if e.get("event") == "stats_counts.activated.hits"]
        assert sum(e["value"] for e in counted) == 3
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz", timeout=5) as response:
            assert response.status == 200
        assert proc.stop(signal.SIGTERM) == 0


def _shipped_sockets() -> list[tuple[str, int]]:
    """``(kind, port)`` of each Listen line of systemd/obsd.socket, in order."""
    found = []
    for line in (ROOT / "systemd" / "obsd.socket").read_text().splitlines():
        key, _, value = line.partition("=")
        if key in ("ListenDatagram", "ListenStream"):
            found.append((key, int(value.rsplit(":", 1)[-1])))
    return found


class TestShippedUnits:
    def test_shipped_socket_order_fits_the_shipped_config(self, tmp_path: Path) -> None:
        """systemd/obsd.socket's sockets, handed in its order, carry events for systemd/obsd.toml."""
        activate = _activator()
        shipped = _shipped_sockets()
        assert [k for k, _ in shipped] == ["ListenDatagram", "ListenStream", "ListenDatagram",
                                           "ListenStream"]
        # One activator per Listen line, chained: each passes the earlier sockets on and
        # adds its own, so the descriptors arrive in the unit's order (ports made free ones).
        ports = [_free_port() for _ in shipped]
        args: list[str] = []
        for count, ((kind, _), port) in enumerate(zip(shipped, ports, strict=True), 1):
            # FileDescriptorName=obsd names every socket of the unit "obsd"
            args += [activate, *(["--datagram"] if kind == "ListenDatagram" else []),
                     "-l", f"127.0.0.1:{port}", "--fdname=" + ":".join(["obsd"] * count)]
        data_dir = tmp_path / "data"
        config = tmp_path / "obsd.toml"
        config.write_text((ROOT / "systemd" / "obsd.toml").read_text().replace(
            '"/var/lib/obsd"', repr(str(data_dir))).replace("[outputs.file]",
                                                          "[outputs.file]\nbatch_timeout = 0.05"))
        args += [*TWISTD, "--pidfile", "", "-n", "obsd", "--config", str(config)]
        proc = ObsdProcess(tmp_path, args)
        with proc.log_path.open("ab") as out:
            proc.proc = subprocess.Popen(args, cwd=tmp_path, env=obsd_env(), stdout=out,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while f"127.0.0.1:{ports[0]}".encode() not in proc.log_path.read_bytes():
            assert time.monotonic() < deadline, proc.output()
            time.sleep(0.05)
        syslog_udp, syslog_tcp, statsd_udp, http = ports

        def started() -> bool:
            # Each activator in the chain waits for traffic before it execs the next:
            # a datagram now and then starts them all (each one is an event too).
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.sendto(b"<14>1 2024-01-02T03:04:05Z web01 app 1 - - shipped udp",
                           ("127.0.0.1", syslog_udp))
            time.sleep(0.25)
            return any(e.get("event") == "obsd started" for e in proc.log_events())

        proc.wait_for(started, timeout=60, what="obsd started")
        with socket.create_connection(("127.0.0.1", syslog_tcp), timeout=5) as conn:
            conn.sendall(b"<14>1 2024-01-02T03:04:05Z web01 app 1 - - shipped tcp\n")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(b"shipped.hits:2|c", ("127.0.0.1", statsd_udp))
        assert get_json(f"http://127.0.0.1:{http}/healthz") == {"status": "ok"}
        proc.wait_for(
            lambda: {"shipped udp", "shipped tcp"}
            <= {e.get("event") for e in file_events(data_dir / "events.jsonl")},
            timeout=20, what="syslog over the shipped UDP and TCP sockets",
        )
        assert proc.stop(signal.SIGTERM) == 0  # SIGTERM flushes StatsD
        hits = [e for e in file_events(data_dir / "events.jsonl")
                if e.get("event") == "stats_counts.shipped.hits"]
        assert sum(e["value"] for e in hits) == 2
