"""Hostile clients against a real ``twistd obsd``: survived, RSS growth, stall, counted.

``python -m bench.hostile [--quick]``

Replays the attacks of issue 14 (``bench/_attacks.py``) one after another from
127.0.0.2 while an honest sender on 127.0.0.1 posts Sentry events (and, for
the StatsD and syslog attacks, StatsD counters or syslog lines).  A monitor
reads ``GET /healthz`` every 20 ms and obsd's RSS and open descriptors from
/proc.  Per attack the table shows: whether obsd survived, its RSS growth, the
longest ``/healthz`` answer (the reactor's worst stall), the counters that
recorded the attack, and the honest traffic that arrived.

``--quick`` scales the attacks down (CI); it fails when obsd dies, an attack
is not counted, honest traffic is lost or RSS passes the documented bound;
stalls are measured and shown, never asserted (the machine is shared).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench._attacks import ATTACKS, HONEST, KEY, Target, connect, honest_event
from bench._child import start_obsd

MiB = 1024 * 1024
MAX_CONNECTIONS = 256
ENVELOPE_LIMIT = 16 * MiB
TIMEOUTS = 2.0
#: what one open connection may hold (docs: reference/limits, "Memory under attack")
PER_CONNECTION = 130 * 1024
RSS_BOUND = 50 * MiB + MAX_CONNECTIONS * PER_CONNECTION + ENVELOPE_LIMIT

OBSD_CONFIG = f"""
[daemon]
data_dir = '{{data_dir}}'
metrics_interval = 0
[http]
listen = ['tcp:0:interface=127.0.0.1']
max_connections = {MAX_CONNECTIONS}
header_timeout = {TIMEOUTS}
body_timeout = {TIMEOUTS}
[inputs.sentry]
max_envelope_bytes = {ENVELOPE_LIMIT}
[[inputs.sentry.projects]]
id = 42
keys = ['{KEY}']
[inputs.syslog]
listen = ['tcp:0:interface=127.0.0.1']
[inputs.statsd]
listen = ['tcp:0:interface=127.0.0.1']
flush_interval = 1
[outputs.file]
"""


class Obsd:
    """A real ``twistd -n obsd``; its ports come from its "listening" log lines."""

    def __init__(self, workdir: Path) -> None:
        config = OBSD_CONFIG.format(data_dir=workdir / "data")
        self.proc, self.log, ports = start_obsd(workdir, config, {"http", "syslog", "statsd"})
        self.target = Target(ports["http"], ports["syslog"], ports["statsd"], TIMEOUTS)
        self.events = workdir / "data" / "events.jsonl"
        self._read = 0

    def arrivals(self) -> dict[str, float]:
        """Honest events written by the file output since the last call, by kind."""
        out = {"sentry": 0.0, "statsd": 0.0, "syslog": 0.0}
        if not self.events.exists():
            return out
        with self.events.open("rb") as f:
            f.seek(self._read)
            data = f.read()
        data = data[: data.rfind(b"\n") + 1]
        self._read += len(data)
        for line in data.splitlines():
            if b"honest" not in line:
                continue
            event = json.loads(line)
            if event.get("kind") == "error" and event.get("event") == "honest":
                out["sentry"] += 1
            elif event.get("metric") == "honest.requests" and event.get("stat") == "count":
                out["statsd"] += event["value"]
            elif "honest-syslog" in str(event.get("event")):
                out["syslog"] += 1
        return out

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def counters(self) -> dict[str, float]:
        conn = http.client.HTTPConnection("127.0.0.1", self.target.http, timeout=10)
        try:
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
        finally:
            conn.close()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name.removesuffix("_total")] = float(value)
        return out

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Monitor(threading.Thread):
    """``/healthz`` latency, RSS and descriptors, sampled every 20 ms."""

    def __init__(self, obsd: Obsd) -> None:
        super().__init__(daemon=True)
        self.obsd = obsd
        self.stop_event = threading.Event()
        self.reset()

    def reset(self) -> None:
        self.max_latency = 0.0
        self.max_connect = 0.0
        self.max_rss = self.obsd.rss()
        self.max_fds = 0
        self.failures = 0

    def _get(self, conn: http.client.HTTPConnection) -> tuple[bool, float]:
        start = time.monotonic()
        try:
            conn.request("GET", "/healthz")
            answer = conn.getresponse()
            answer.read()
            ok = answer.status == 200
        except OSError:
            ok = False
        return ok, time.monotonic() - start

    def run(self) -> None:
        """One kept-alive connection measures the reactor; a new one each time, the accept."""
        kept = self._connection()
        while not self.stop_event.wait(0.02) and self.obsd.alive():
            ok, latency = self._get(kept)
            if not ok:
                kept.close()
                kept = self._connection()
            fresh = self._connection()
            fresh_ok, connect_latency = self._get(fresh)
            fresh.close()
            self.max_latency = max(self.max_latency, latency)
            self.max_connect = max(self.max_connect, connect_latency)
            self.failures += (not ok) + (not fresh_ok)
            self.max_rss = max(self.max_rss, self.obsd.rss())
            self.max_fds = max(self.max_fds, self.obsd.fds())
        kept.close()

    def _connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(
            "127.0.0.1", self.obsd.target.http, timeout=10, source_address=(HONEST, 0)
        )


class Honest(threading.Thread):
    """Valid traffic from 127.0.0.1 while an attack runs: Sentry events, plus StatsD or syslog."""

    def __init__(self, target: Target, extra: str) -> None:
        super().__init__(daemon=True)
        self.target, self.extra = target, extra
        self.stop_event = threading.Event()
        self.sent = self.answered = self.lines = 0

    def run(self) -> None:
        with connect(self._extra_port(), HONEST) as extra:
            while not self.stop_event.wait(0.02) and self.sent < 2000:
                self.sent += 1
                self.answered += honest_event(self.target.http) == 200
                if self.extra == "statsd":
                    extra.sendall(b"honest.requests:1|c\n")
                elif self.extra == "syslog":
                    extra.sendall(b"<14>Oct 11 22:14:15 web1 app: honest-syslog %d\n" % self.lines)
                self.lines += bool(self.extra)

    def _extra_port(self) -> int:
        return self.target.syslog if self.extra == "syslog" else self.target.statsd


def run_attack(obsd: Obsd, monitor: Monitor, name: str, scale: float) -> dict[str, Any]:
    attack, counters, extra = ATTACKS[name]
    before = obsd.counters()
    obsd.arrivals()
    monitor.reset()
    rss_before = obsd.rss()
    honest = Honest(obsd.target, extra)
    honest.start()
    time.sleep(0.2)
    seen = attack(obsd.target, scale)
    time.sleep(0.3)
    honest.stop_event.set()
    honest.join(30)
    time.sleep(1.2)  # a StatsD flush, the lines' way through the pipeline to the file
    after = obsd.counters()
    arrived = obsd.arrivals()

    def delta(counter: str) -> float:
        return after.get(counter, 0) - before.get(counter, 0)

    arrived_lines = arrived[extra] if extra else 0
    return {
        "attack": name,
        "survived": obsd.alive() and monitor.failures == 0,
        "rss_growth": max(0, monitor.max_rss - rss_before),
        "max_rss": monitor.max_rss,
        "stall": monitor.max_latency,
        "connect": monitor.max_connect,
        "fds": monitor.max_fds,
        "counted": {c: delta(c) for c in counters if delta(c)},
        "honest_sent": honest.sent,
        "honest_ok": honest.answered == honest.sent
        and arrived["sentry"] == honest.sent
        and arrived_lines == honest.lines,
        "honest": f"{honest.answered}/{honest.sent} events"
        + (f", {arrived_lines:.0f}/{honest.lines} {extra} lines" if extra else ""),
        "seen": seen,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="scaled-down attacks (CI)")
    args = parser.parse_args(argv)
    scale = 0.1 if args.quick else 1.0
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        obsd = Obsd(Path(tmp))
        monitor = Monitor(obsd)
        monitor.start()
        try:
            for name in ATTACKS:
                results.append(run_attack(obsd, monitor, name, scale))
                if not obsd.alive():
                    break
        finally:
            monitor.stop_event.set()
            obsd.stop()
    load = os.getloadavg()[0]
    print(f"hostile clients vs twistd obsd, scale {scale}, {os.cpu_count()} CPUs, "
          f"load {load:.2f}, Python {sys.version.split()[0]}")
    print(f"RSS bound: 50 MiB + {MAX_CONNECTIONS} connections x 130 KiB + one "
          f"{ENVELOPE_LIMIT // MiB} MiB body = {RSS_BOUND / MiB:.0f} MiB")
    print(f"{'attack':<34}{'survived':>9}{'RSS +MiB':>9}{'stall ms':>9}{'new ms':>7}{'fds':>6}  "
          f"honest traffic / counted")
    failed = []
    for r in results:
        print(f"{r['attack']:<34}{'yes' if r['survived'] else 'NO':>9}"
              f"{r['rss_growth'] / MiB:>9.1f}{r['stall'] * 1000:>9.0f}{r['connect'] * 1000:>7.0f}"
              f"{r['fds']:>6}  "
              f"{r['honest']}; {', '.join(f'{k} +{v:.0f}' for k, v in r['counted'].items())}")
        if not r["survived"]:
            failed.append(f"{r['attack']}: obsd did not survive")
        if not r["counted"]:
            failed.append(f"{r['attack']}: not counted")
        if not r["honest_ok"]:
            failed.append(f"{r['attack']}: honest traffic lost ({r['honest']})")
        if r["max_rss"] > RSS_BOUND + 100 * MiB or r["rss_growth"] > RSS_BOUND:
            failed.append(f"{r['attack']}: RSS {r['max_rss'] / MiB:.0f} MiB")
    print("attackers saw: " + "; ".join(f"{r['attack']}: {r['seen']['statuses']}"
                                        for r in results))
    for line in failed:
        print("FAILED " + line)
    return 1 if failed or len(results) < len(ATTACKS) else 0


if __name__ == "__main__":
    sys.exit(main())
