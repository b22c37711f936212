"""obsd's graphite output against carbon-relay 1.1.10 and carbon-c-relay, into a counting sink.

``python -m bench.graphite [--quick]``

The same load (1,000,000 points; ``--quick`` 20,000) goes through each relay
to a local TCP sink that counts lines, each part in its own process on
127.0.0.1.  The relays get the points as carbon plaintext over TCP from a
load process; obsd's output is fed the same points as metric events in its
own process (the output stage alone: there is no plaintext input in front of
it).  The table shows points per second from the first point offered to the
last one counted, points per relay CPU-second, and points lost (none may be).

Peers: carbon-relay from PyPI ``carbon`` 1.1.10 (in this venv) with its default
queue settings and ``DESTINATION_PROTOCOL = line``; carbon-c-relay from Debian.
A peer that is not installed is skipped with a note outside CI and fails the
run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench._child import Proc, cpu_seconds

CARBON_RELAY = Path(sys.executable).with_name("carbon-relay.py")
STALL_SECONDS = 5.0


def free_port() -> int:
    """A port free for both TCP and UDP (carbon-c-relay's ``-p`` binds both)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.bind(("", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free for both TCP and UDP")


def wait_listening(port: int, proc: subprocess.Popen[Any], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port}")


def points(count: int) -> bytes:
    now = int(time.time())
    return "".join(f"bench.relay.m{i % 1000} {i} {now}\n" for i in range(count)).encode()


# -- roles run as separate processes ------------------------------------------------


class Sink:
    """Counts lines on every TCP connection (one thread each)."""

    def __init__(self) -> None:
        self.lines = 0
        self.lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            conn, _ = self.server.accept()
            threading.Thread(target=self._count, args=(conn,), daemon=True).start()

    def _count(self, conn: socket.socket) -> None:
        with conn:
            while True:
                data = conn.recv(1 << 20)
                if not data:
                    return
                n = data.count(b"\n")
                with self.lock:
                    self.lines += n


def run_sink() -> int:
    sink = Sink()
    print("@@" + json.dumps({"port": sink.port}), flush=True)
    for line in sys.stdin:
        if line.strip() == "count":
            print("@@" + json.dumps({"lines": sink.lines}), flush=True)
    return 0


def run_load(port: int, count: int) -> int:
    data = points(count)
    deadline = time.monotonic() + 10
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port))
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    with sock:
        print("@@" + json.dumps({"start": time.time()}), flush=True)
        view = memoryview(data)
        for start in range(0, len(data), 1 << 20):
            sock.sendall(view[start : start + (1 << 20)])
    return 0


def run_obsd(sink_port: int, count: int) -> int:
    """obsd's graphite output on the real reactor, fed ``count`` metric events."""
    from twisted.internet import reactor as global_reactor

    from obsd.outputs.graphite import Config, GraphiteOutput
    from obsd.testing import make_output_context

    reactor: Any = global_reactor
    tmp = Path(tempfile.mkdtemp(prefix="obsd-bench-graphite-"))
    context = make_output_context(reactor, tmp)
    output = GraphiteOutput("graphite", Config(destinations=[f"127.0.0.1:{sink_port}"]), context)
    queue = next(iter(output.queues.values()))
    destination = output.destinations[0]
    now = float(int(time.time()))
    state = {"i": 0}
    chunk = 5000

    def feed() -> None:
        if destination.protocol is None:
            reactor.callLater(0.01, feed)
            return
        if state["i"] == 0:
            print("@@" + json.dumps({"start": time.time()}), flush=True)
        # stay under the buffer's high watermark, as a blocked input would
        if len(queue.buffer) < 50_000:
            accept = output.accept
            i = state["i"]
            end = min(count, i + chunk)
            while i < end:
                accept({"event": f"bench.relay.m{i % 1000}", "value": i, "timestamp": now})
                i += 1
            state["i"] = i
        if state["i"] < count:
            reactor.callLater(0, feed)
        else:
            reactor.callLater(0, done)

    def done() -> None:
        # idle once everything is written; the driver reads this process's CPU, then ends it
        if len(queue.buffer) or queue._in_flight:
            reactor.callLater(0.01, done)

    output.startService()
    reactor.callLater(0, feed)
    reactor.run()
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


# -- the driver -------------------------------------------------------------------


def me(role: str, *args: Any) -> list[str]:
    return [sys.executable, "-m", "bench.graphite", "--role", role, *map(str, args)]


def wait_count(sink: Proc, count: int, started: float) -> tuple[int, float]:
    """Lines counted and the time the last one arrived (stops after a stall)."""
    last, last_change = -1, time.monotonic()
    last_time = time.time()
    while True:
        lines = int(sink.ask("count")["lines"])
        if lines != last:
            last, last_change, last_time = lines, time.monotonic(), time.time()
        if lines >= count or time.monotonic() - last_change > STALL_SECONDS:
            return lines, last_time - started
        time.sleep(0.02)


def bench_relay(name: str, count: int, sink: Proc, sink_port: int) -> dict[str, Any]:
    before = int(sink.ask("count")["lines"])
    tmp = tempfile.TemporaryDirectory(prefix=f"obsd-bench-{name}-")
    relay: subprocess.Popen[Any] | None = None
    try:
        if name == "obsd":
            feeder = Proc(me("obsd", sink_port, count))
            relay = feeder.proc
            started = float(feeder.read()["start"])
        else:
            port = free_port()
            relay = start_peer(name, Path(tmp.name), port, sink_port)
            try:
                wait_listening(port, relay, name)
            except RuntimeError as exc:
                log = (Path(tmp.name) / "peer.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{exc}:\n{log}") from None
            time.sleep(0.3)
            feeder = Proc(me("load", port, count))
            started = float(feeder.read()["start"])
        cpu_before = cpu_seconds(relay.pid)
        lines, elapsed = wait_count(sink, before + count, started)
        cpu = cpu_seconds(relay.pid) - cpu_before
        feeder.stop()
        got = lines - before
        return {
            "points": count,
            "delivered": got,
            "lost": count - got,
            "seconds": elapsed,
            "rate": got / elapsed if elapsed > 0 else float("nan"),
            "per_cpu": got / cpu if cpu else float("nan"),
        }
    finally:
        if relay is not None and relay.poll() is None:
            relay.terminate()
            try:
                relay.wait(10)
            except subprocess.TimeoutExpired:
                relay.kill()
                relay.wait()
        tmp.cleanup()


def carbon_env() -> dict[str, str]:
    """carbon 1.1.10's protobuf module was generated by an old protoc, which the protobuf
    that opentelemetry-proto needs refuses unless it runs its pure-Python implementation
    (carbon imports it at start and only uses it for its protobuf receiver)."""
    return {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}


def start_peer(name: str, tmp: Path, port: int, sink_port: int) -> subprocess.Popen[Any]:
    log = (tmp / "peer.log").open("ab")
    if name == "carbon-relay":
        (tmp / "log").mkdir()
        (tmp / "carbon.conf").write_text(
            f"""[relay]
LINE_RECEIVER_INTERFACE = 127.0.0.1
LINE_RECEIVER_PORT = {port}
PICKLE_RECEIVER_INTERFACE = 127.0.0.1
PICKLE_RECEIVER_PORT = {free_port()}
RELAY_METHOD = consistent-hashing
DESTINATIONS = 127.0.0.1:{sink_port}:a
DESTINATION_PROTOCOL = line
LOG_DIR = {tmp}/log
PID_DIR = {tmp}
STORAGE_DIR = {tmp}
LOCAL_DATA_DIR = {tmp}
USER =
ENABLE_LOGROTATION = False
LOG_LISTENER_CONN_SUCCESS = False
"""
        )
        (tmp / "storage-schemas.conf").write_text("[all]\npattern = .*\nretentions = 60s:1d\n")
        (tmp / "relay-rules.conf").write_text(
            f"[default]\ndefault = true\ndestinations = 127.0.0.1:{sink_port}:a\n"
        )
        args = [sys.executable, str(CARBON_RELAY), f"--config={tmp}/carbon.conf", "--debug"]
        args.append("start")
        return subprocess.Popen(
            args, cwd=tmp, env=carbon_env(), stdout=log, stderr=subprocess.STDOUT
        )
    conf = tmp / "relay.conf"
    conf.write_text(f"cluster sink forward 127.0.0.1:{sink_port};\nmatch * send to sink stop;\n")
    args = ["carbon-c-relay", "-f", str(conf), "-p", str(port), "-w", "2"]
    return subprocess.Popen(args, cwd=tmp, stdout=log, stderr=subprocess.STDOUT)


def available(name: str) -> str | None:
    """Why a peer cannot run, or None."""
    if name == "carbon-relay" and not CARBON_RELAY.exists():
        return "PyPI carbon is not installed in this venv (pip install carbon==1.1.10)"
    if name == "carbon-c-relay" and shutil.which("carbon-c-relay") is None:
        return "carbon-c-relay is not installed (apt-get install carbon-c-relay)"
    return None


def fmt(value: float) -> str:
    return f"{value:,.0f}" if value == value else "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 points: a smoke test")
    parser.add_argument("--points", type=int, default=0, help="points per relay")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "sink":
        return run_sink()
    if args.role == "load":
        return run_load(int(args.args[0]), int(args.args[1]))
    if args.role == "obsd":
        return run_obsd(int(args.args[0]), int(args.args[1]))
    count = args.points or (20_000 if args.quick else 1_000_000)
    in_ci = bool(os.environ.get("CI"))
    sink = Proc(me("sink"), stdin=True)
    results: dict[str, dict[str, Any]] = {}
    try:
        sink_port = int(sink.read()["port"])
        for name in ("obsd", "carbon-relay", "carbon-c-relay"):
            why = available(name)
            if why:
                if in_ci:
                    print(f"{name} unavailable: {why}", file=sys.stderr)
                    return 1
                print(f"note: {name} skipped: {why}")
                continue
            results[name] = bench_relay(name, count, sink, sink_port)
    finally:
        sink.stop()
    print(f"Graphite relaying, {count:,} points to a counting TCP sink, {os.cpu_count()} CPUs")
    print(f"{'relay':>15} {'points/s':>12} {'points/CPU-s':>13} {'lost':>9} {'seconds':>8}")
    for name, r in results.items():
        print(
            f"{name:>15} {fmt(r['rate']):>12} {fmt(r['per_cpu']):>13} "
            f"{r['lost']:>9,} {r['seconds']:>8.2f}"
        )
    obsd = results["obsd"]
    for peer in ("carbon-relay", "carbon-c-relay"):
        if peer in results:
            ratio = obsd["rate"] / results[peer]["rate"]
            print(f"obsd/{peer}: {ratio:.2f} (points/s)")
    if os.environ.get("BENCH_JSON"):
        Path(os.environ["BENCH_JSON"]).write_text(json.dumps(results))
    return 0 if obsd["lost"] == 0 else 2


if __name__ == "__main__":
    raise SystemExit(main())
