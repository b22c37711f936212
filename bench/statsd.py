"""obsd's statsd input against Etsy statsd 0.9.0 and a bare Twisted receiver, side by side.

``python -m bench.statsd [--quick]``

Each receiver runs as its own process on 127.0.0.1 and gets the same bounded
UDP load from another process (``bench._udpload``), at 1 and at 20 metrics per
datagram.  The offered rate is stepped up until more than 0.1% of the metrics
are lost (or the sender cannot keep up); the table shows the highest rate
sustained with loss under 0.1%, and metrics per receiver CPU-second over all
steps (from ``/proc/PID/stat``: robust on a shared machine), with the ratios
obsd/Etsy and obsd/bare.  Then obsd's resident memory holding 100,000 distinct
metric names, and the time one flush of them takes.

Etsy statsd is the npm package, installed once into ``~/.cache/obsd/etsy-statsd``
(as ``tests/data/statsd_parity/record.py`` does).  When it cannot be installed
or node is missing, ``--quick`` skips that peer outside CI (with a note) and
fails in CI; the full run always fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._child import ROOT, Proc, cpu_seconds, env

STATSD_VERSION = "0.9.0"
ETSY_DIR = Path.home() / ".cache" / "obsd" / "etsy-statsd"
MAX_LOSS = 0.001


def rss_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PythonReceiver:
    """obsd's statsd input or the bare counter, in ``bench._receiver``."""

    def __init__(self, kind: str) -> None:
        self.name = kind
        self.child = Proc([sys.executable, "-m", "bench._receiver", kind], stdin=True)
        self.proc = self.child.proc
        self.port = int(self.child.read()["port"])
        self.pid = self.child.pid

    def ask(self, command: str) -> dict[str, Any]:
        return self.child.ask(command)

    def count(self) -> int:
        return int(self.ask("count")["metrics"])

    def stop(self) -> None:
        self.child.stop()


def install_etsy(statsd_dir: Path = ETSY_DIR) -> Path:
    """The pinned Etsy statsd package directory, installed with npm once."""
    package = statsd_dir / "node_modules" / "statsd"
    manifest = package / "package.json"
    if not manifest.exists() or json.loads(manifest.read_text())["version"] != STATSD_VERSION:
        if shutil.which("npm") is None:
            raise RuntimeError("npm is not installed")
        statsd_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--prefix", str(statsd_dir), "--no-audit", "--no-fund",
             "--ignore-scripts", f"statsd@{STATSD_VERSION}"],
            check=True, timeout=300, capture_output=True,
        )  # fmt: skip
    if shutil.which("node") is None:
        raise RuntimeError("node is not installed")
    return package


class EtsyReceiver:
    """Etsy statsd 0.9.0 with no backend; counts read from its management port."""

    name = "etsy"

    def __init__(self, package: Path) -> None:
        self.port = free_port(socket.SOCK_DGRAM)
        self.mgmt_port = free_port()
        self.tmp = tempfile.TemporaryDirectory(prefix="obsd-bench-etsy-")
        config = Path(self.tmp.name) / "config.js"
        config.write_text(
            json.dumps(
                {
                    "address": "127.0.0.1",
                    "port": self.port,
                    "mgmt_address": "127.0.0.1",
                    "mgmt_port": self.mgmt_port,
                    "backends": [],
                    "flushInterval": 86_400_000,
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
        self.pid = self.proc.pid
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self.count()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("Etsy statsd did not start")

    def count(self) -> int:
        with socket.create_connection(("127.0.0.1", self.mgmt_port), timeout=10) as sock:
            sock.sendall(b"counters\n")
            data = b""
            while b"END" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        match = re.search(rb"'statsd\.metrics_received': (\d+)", data)
        if match is None:
            raise OSError(f"no metrics_received in {data[:200]!r}")
        return int(match.group(1))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.tmp.cleanup()


Receiver = PythonReceiver | EtsyReceiver


def run_load(port: int, rate: float, count: int, per_datagram: int, names: int = 64) -> float:
    """Send the load from another process; returns the rate it achieved."""
    out = subprocess.run(
        [sys.executable, "-m", "bench._udpload", str(port), str(rate), str(count),
         str(per_datagram), str(names)],
        cwd=ROOT, env=env(), capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    result = json.loads(out.stdout)
    return count / max(result["seconds"], 1e-9)


def settle(receiver: Receiver, expected: int, timeout: float = 3.0) -> int:
    """The receiver's count once it has everything or stopped moving (bounded)."""
    deadline = time.monotonic() + timeout
    last, still = -1, 0
    while time.monotonic() < deadline:
        now = receiver.count()
        if now >= expected:
            return now
        still = still + 1 if now == last else 0
        if still >= 3:
            return now
        last = now
        time.sleep(0.1)
    return receiver.count()


def measure(
    receiver: Receiver, per_datagram: int, rates: list[float], seconds: float
) -> dict[str, Any]:
    """Step the offered rate; the highest rate with loss < 0.1%, and metrics per CPU-second."""
    best = 0.0
    total_received = 0
    total_cpu = 0.0
    steps = []
    for rate in rates:
        count = int(rate * seconds)
        count -= count % per_datagram
        before = receiver.count()
        cpu_before = cpu_seconds(receiver.pid)
        achieved = run_load(receiver.port, rate, count, per_datagram)
        got = settle(receiver, before + count) - before
        cpu = cpu_seconds(receiver.pid) - cpu_before
        loss = 1 - got / count
        total_received += got
        total_cpu += cpu
        steps.append({"offered": rate, "achieved": achieved, "loss": loss, "cpu": cpu})
        if loss < MAX_LOSS:
            best = max(best, min(rate, achieved))
        if loss >= MAX_LOSS or achieved < 0.9 * rate:
            break
    sender_limited = bool(steps) and steps[-1]["loss"] < MAX_LOSS
    return {
        "sustained": best,
        "per_cpu": total_received / total_cpu if total_cpu else float("nan"),
        "sender_limited": sender_limited,
        "steps": steps,
    }


def obsd_memory(names: int) -> dict[str, float]:
    """obsd's RSS before and after ``names`` distinct metric names, and one flush's time."""
    receiver = PythonReceiver("obsd")
    try:
        before = rss_of(receiver.pid)
        subprocess.run(
            [sys.executable, "-m", "bench._udpload", str(receiver.port), "100000", str(names),
             "20", str(names)],
            cwd=ROOT, env=env(), check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        got = settle(receiver, names)
        after = rss_of(receiver.pid)
        flush = float(receiver.ask("flush")["seconds"])
        return {"names": names, "received": got, "rss_before": before, "rss": after, "flush": flush}
    finally:
        receiver.stop()


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}" if value == value else "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds: smoke test only")
    args = parser.parse_args(argv)
    if args.quick:
        rates = {1: [5_000.0, 10_000.0], 20: [20_000.0, 40_000.0]}
        seconds, names = 0.3, 10_000
    else:
        rates = {
            1: [25_000.0 * 1.4**i for i in range(10)],
            20: [100_000.0 * 1.4**i for i in range(10)],
        }
        seconds, names = 2.0, 100_000
    in_ci = bool(os.environ.get("CI"))
    etsy_package: Path | None = None
    try:
        etsy_package = install_etsy()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        if not args.quick or in_ci:
            print(f"Etsy statsd {STATSD_VERSION} unavailable: {exc}", file=sys.stderr)
            return 1
        print(f"note: Etsy statsd skipped (quick run, not CI): {exc}")

    results: dict[tuple[str, int], dict[str, Any]] = {}
    for per_datagram in (1, 20):
        for name in ("obsd", "etsy", "bare"):
            if name == "etsy" and etsy_package is None:
                continue
            receiver: Receiver
            if name == "etsy" and etsy_package is not None:
                receiver = EtsyReceiver(etsy_package)
            else:
                receiver = PythonReceiver(name)
            try:
                results[(name, per_datagram)] = measure(
                    receiver, per_datagram, rates[per_datagram], seconds
                )
            finally:
                receiver.stop()

    print(f"StatsD UDP receivers, {os.cpu_count()} CPUs, loss threshold {MAX_LOSS:.1%}")
    print(
        f"{'metrics/datagram':>16} {'receiver':>8} {'sustained metrics/s':>20} "
        f"{'metrics/CPU-s':>14}"
    )
    for per_datagram in (1, 20):
        for name in ("obsd", "etsy", "bare"):
            r = results.get((name, per_datagram))
            if r is None:
                continue
            limited = " (no loss at the highest rate offered)" if r["sender_limited"] else ""
            print(
                f"{per_datagram:>16} {name:>8} {fmt_rate(r['sustained']):>20} "
                f"{fmt_rate(r['per_cpu']):>14}{limited}"
            )
    print("ratios (metrics per CPU-second; sustained rate in brackets)")
    for per_datagram in (1, 20):
        obsd = results[("obsd", per_datagram)]
        for peer in ("etsy", "bare"):
            other = results.get((peer, per_datagram))
            if other is None:
                continue
            ratio = obsd["per_cpu"] / other["per_cpu"]
            sustained = (
                obsd["sustained"] / other["sustained"] if other["sustained"] else float("nan")
            )
            print(f"{per_datagram:>16} obsd/{peer:<5} {ratio:6.2f} ({sustained:.2f})")
    memory = obsd_memory(names)
    print(
        f"obsd memory: {memory['names']:,} distinct names ({memory['received']:,} received): "
        f"RSS {memory['rss'] / 2**20:.1f} MiB (idle {memory['rss_before'] / 2**20:.1f} MiB), "
        f"one flush {memory['flush']:.2f} s"
    )
    if os.environ.get("BENCH_JSON"):
        Path(os.environ["BENCH_JSON"]).write_text(
            json.dumps({f"{k[0]}/{k[1]}": v for k, v in results.items()} | {"memory": memory})
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
