"""One worker against two: syslog over TCP -> file, the same load, alternating rounds.

``python -m bench.workers [--quick] [--rounds N] [--count N]`` starts a real
``twistd -n obsd`` with ``[daemon] workers = 1`` and one with ``workers = 2``
and feeds each, round by round, the same RFC 5424 lines (LF framing) from a
separate load process that writes prebuilt buffers over ``--connections``
TCP connections at once (the kernel spreads connections over the workers by
their address and port, ``SO_REUSEPORT``) and reports its own CPU.  A round
is done when the one file the workers share holds every line; a line missing
or written twice fails the bench.

It prints, per round and as medians: lines per wall second, lines per
CPU-second of all obsd processes (the parent and its workers, utime + stime
from ``/proc``), the sender's CPU, and each worker's share of the CPU; then
the ratio two/one (issue 19's aim: at least 1.7 in lines per second).
Loopback only; every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.syslog import (
    ROOT,
    TWISTD,
    LineCounter,
    _wait,
    cpu_seconds,
    frame,
    free_port,
    make_lines,
)

AIM = 1.7


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (the workers of an obsd with workers > 1)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


class Obsd:
    """A real obsd with ``workers`` processes, its syslog input writing to its file output."""

    def __init__(self, workdir: Path, workers: int) -> None:
        self.workers = workers
        self.port = free_port()
        home = workdir / f"workers-{workers}"
        home.mkdir()
        config = home / "obsd.toml"
        config.write_text(
            f"[daemon]\ndata_dir = '{home / 'data'}'\nlog_format = 'json'\n"
            f"metrics_interval = 0\nworkers = {workers}\n"
            f"[inputs.syslog]\nlisten = ['tcp:{self.port}:interface=127.0.0.1']\n"
            "timezone = 'UTC'\n[outputs.file]\nmax_bytes = 1099511627776\n"
        )
        self.events = home / "data" / "events.jsonl"
        self.counter = LineCounter(self.events)
        self.log = home / "obsd.log"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        args = [sys.executable, "-c", TWISTD, "--pidfile", "", "-n", "obsd", "--config",
                str(config)]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(args, cwd=home, env=env, stdout=log,
                                         stderr=subprocess.STDOUT)
        _wait(lambda: self.log.read_bytes().count(b'"obsd started"') >= workers, 60,
              f"obsd with {workers} workers", self.proc)

    def pids(self) -> list[int]:
        return [self.proc.pid, *children(self.proc.pid)]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def split_lines(data: bytes, parts: int) -> list[bytes]:
    """``data`` in ``parts`` runs of whole lines, about equal in size."""
    lines = data.splitlines(keepends=True)
    return [b"".join(lines[i::parts]) for i in range(parts)]


def run_sender(port: int, path: Path, connections: int) -> None:
    """The load process: prebuilt buffers over ``connections`` at once; prints its CPU."""
    chunks = split_lines(path.read_bytes(), connections)
    selector = selectors.DefaultSelector()
    pending: dict[int, tuple[socket.socket, memoryview, int]] = {}
    for chunk in chunks:
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.setblocking(False)
        pending[sock.fileno()] = (sock, memoryview(chunk), 0)
        selector.register(sock, selectors.EVENT_WRITE)
    deadline = time.monotonic() + 300
    while pending and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1.0):
            sock, view, offset = pending[key.fd]
            try:
                offset += sock.send(view[offset : offset + (1 << 16)])
            except BlockingIOError:
                continue
            if offset >= len(view):
                selector.unregister(sock)
                sock.close()
                del pending[key.fd]
            else:
                pending[key.fd] = (sock, view, offset)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"cpu": usage.ru_utime + usage.ru_stime, "unsent": len(pending)}))


def measure(obsd: Obsd, load: Path, count: int, connections: int, timeout: float) -> dict[str, Any]:
    before = obsd.counter.update()
    target = before + count
    pids = obsd.pids()
    cpu0 = {pid: cpu_seconds(pid) for pid in pids}
    start = time.monotonic()
    sender = subprocess.Popen(
        [sys.executable, "-m", "bench.workers", "--send", str(obsd.port), str(load),
         str(connections)],
        cwd=ROOT, stdout=subprocess.PIPE,
    )
    while obsd.counter.update() < target:
        if time.monotonic() - start > timeout:
            sender.kill()
            sender.wait()
            raise RuntimeError(f"workers={obsd.workers}: {obsd.counter.update() - before} of "
                               f"{count} lines in {timeout} s")
        time.sleep(0.005)
    wall = time.monotonic() - start
    cpu = {pid: cpu_seconds(pid) - cpu0[pid] for pid in pids}
    out, _ = sender.communicate(timeout=60)
    sent = json.loads(out.decode().strip().splitlines()[-1])
    if sent["unsent"]:
        raise RuntimeError(f"the sender could not send on {sent['unsent']} connections")
    total = sum(cpu.values())
    return {
        "wall": wall,
        "rate": count / wall,
        "cpu": total,
        "cpu_rate": count / total if total >= 0.05 else float("nan"),
        "sender_cpu": sent["cpu"],
        "shares": [c / total if total else 0.0 for c in cpu.values()],
    }


def check_every_line_once(obsd: Obsd, expected: int) -> None:
    """Every line the sender sent, once, in the one file the workers share."""
    seen = set()
    for raw in obsd.events.read_bytes().splitlines():
        event = json.loads(raw)["event"]
        if event in seen:
            raise RuntimeError(f"workers={obsd.workers}: {event!r} written twice")
        seen.add(event)
    if len(seen) != expected:
        raise RuntimeError(f"workers={obsd.workers}: {len(seen)} distinct lines, not {expected}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.workers", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a small load, for CI (seconds)")
    parser.add_argument("--count", type=int, default=0, help="lines per round")
    parser.add_argument("--rounds", type=int, default=0, help="rounds per setting (default 3)")
    parser.add_argument("--connections", type=int, default=64, help="sender connections")
    parser.add_argument("--send", nargs=3, metavar=("PORT", "FILE", "CONNS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.send:
        run_sender(int(args.send[0]), Path(args.send[1]), int(args.send[2]))
        return 0
    count = args.count or (6_000 if args.quick else 300_000)
    rounds = args.rounds or (1 if args.quick else 3)
    timeout = 60.0 if args.quick else 300.0
    workdir = Path(tempfile.mkdtemp(prefix="obsd-bench-workers-"))
    servers: list[Obsd] = []
    results: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    try:
        servers = [Obsd(workdir, 1), Obsd(workdir, 2)]
        for r in range(rounds):
            # distinct lines per round, so "each line once" holds across rounds
            lines = [b"%s round %d" % (line, r) for line in make_lines("rfc5424", count)]
            load = workdir / f"round-{r}.load"
            load.write_bytes(frame(lines, "lf"))
            for obsd in servers:
                results[obsd.workers].append(
                    measure(obsd, load, count, args.connections, timeout)
                )
        for obsd in servers:
            check_every_line_once(obsd, count * rounds)
    finally:
        for obsd in servers:
            obsd.stop()
    print(f"syslog over TCP -> file, {count} RFC 5424 lines per round over "
          f"{args.connections} connections, {rounds} round(s), {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    header = (f"{'workers':<8}{'round':>6}{'wall s':>8}{'lines/s':>10}{'obsd cpu s':>11}"
              f"{'lines/cpu-s':>12}{'sender cpu s':>13}  cpu share per process")
    print(header)
    print("-" * len(header))
    for workers, runs in results.items():
        for i, run in enumerate(runs):
            shares = " ".join(f"{s:.2f}" for s in run["shares"])
            print(f"{workers:<8}{i + 1:>6}{run['wall']:>8.2f}{run['rate']:>10.0f}"
                  f"{run['cpu']:>11.2f}{run['cpu_rate']:>12.0f}{run['sender_cpu']:>13.2f}  "
                  f"{shares}")
    one = statistics.median(r["rate"] for r in results[1])
    two = statistics.median(r["rate"] for r in results[2])
    per_cpu = (statistics.median(r["cpu_rate"] for r in results[2])
               / statistics.median(r["cpu_rate"] for r in results[1]))
    print()
    print(f"median lines/s: one worker {one:.0f}, two workers {two:.0f}; "
          f"two/one {two / one:.2f} (per CPU-second {per_cpu:.2f}); every line once in both")
    verdict = "met" if two / one >= AIM else f"missed by {1 - two / one / AIM:.0%}"
    print(f"aim: two workers >= {AIM}x the lines per second of one; {verdict}")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
