"""obsd's metric outputs side by side: InfluxDB and remote write beside Graphite, same load.

``python -m bench.metric_outputs [--quick]``

Each output runs alone in its own process on the real reactor, fed the same
StatsD-shaped counter events (1,000 series; 200,000 points, ``--quick``
20,000), and writes to a counting endpoint in another process on 127.0.0.1:
a TCP sink counting carbon lines for Graphite, an HTTP endpoint that
decompresses and counts InfluxDB lines or remote-write series for the other
two (answering 204 at once, as a healthy server would).  The table shows
points per second from the first point offered to the last one counted,
points per CPU-second of the output's process (encoding, batching, gzip or
snappy, HTTP), and points lost (none may be).  The peer is obsd's own
Graphite output: the issue's question is what the two HTTP protocols cost
beside it.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench._child import Proc, cpu_seconds
from bench.graphite import Sink, wait_count

OUTPUTS = ("graphite", "influxdb", "remote_write")


def count_series(write_request: bytes) -> int:
    """Top-level fields of a WriteRequest: one per series (obsd sends one sample each)."""
    at = count = 0
    while at < len(write_request):
        at += 1  # the key byte of field 1, wire type 2
        size = shift = 0
        while True:
            byte = write_request[at]
            at += 1
            size |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        at += size
        count += 1
    return count


def run_http_sink() -> int:
    """Counts InfluxDB lines and remote-write series POSTed to it; answers 204."""
    from obsd.codecs.remote_write import decompress

    state = {"lines": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "snappy":
                n = count_series(decompress(body))
            else:
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                n = body.count(b"\n")
            with lock:
                state["lines"] += n
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print("@@" + json.dumps({"port": server.server_address[1]}), flush=True)
    for line in sys.stdin:
        if line.strip() == "count":
            print("@@" + json.dumps({"lines": state["lines"]}), flush=True)
    return 0


def run_tcp_sink() -> int:
    sink = Sink()
    print("@@" + json.dumps({"port": sink.port}), flush=True)
    for line in sys.stdin:
        if line.strip() == "count":
            print("@@" + json.dumps({"lines": sink.lines}), flush=True)
    return 0


def make_output(kind: str, port: int, context: Any) -> Any:
    if kind == "graphite":
        from obsd.outputs import graphite

        return graphite.GraphiteOutput(
            "graphite", graphite.Config(destinations=[f"127.0.0.1:{port}"]), context
        )
    if kind == "influxdb":
        from obsd.outputs import influxdb

        return influxdb.InfluxOutput(
            "influxdb", influxdb.Config(url=f"http://127.0.0.1:{port}"), context
        )
    from obsd.outputs import remote_write

    return remote_write.RemoteWriteOutput(
        "remote_write", remote_write.Config(url=f"http://127.0.0.1:{port}/api/v1/write"), context
    )


def run_output(kind: str, port: int, count: int) -> int:
    """One output on the real reactor, fed ``count`` counter events in reactor-sized chunks."""
    from twisted.internet import reactor as global_reactor

    from obsd.testing import make_output_context

    reactor: Any = global_reactor
    tmp = Path(tempfile.mkdtemp(prefix=f"obsd-bench-{kind}-"))
    output = make_output(kind, port, make_output_context(reactor, tmp))
    queue = next(iter(output.queues.values()))
    now = float(int(time.time()))
    state = {"i": 0, "flush": 0}
    chunk = 2000

    def feed() -> None:
        if state["i"] == 0:
            print("@@" + json.dumps({"start": time.time()}), flush=True)
        if len(queue.buffer) < 50_000:
            accept = output.accept
            i = state["i"]
            end = min(count, i + chunk)
            while i < end:
                series = i % 1000
                # a new flush every 1,000 points: each series gets one count per flush
                accept({
                    "kind": "metric", "event": f"stats_counts.bench.m{series}", "value": 1.0,
                    "timestamp": now + i // 1000, "metric": f"bench.m{series}",
                    "metric_type": "counter", "stat": "count", "tags": {},
                })
                i += 1
            state["i"] = i
        if state["i"] >= count:
            reactor.callLater(0, done)
        elif len(queue.buffer) >= 50_000:
            # the queue is full, as a blocked input would see it: wait for sends, do not spin
            reactor.callLater(0.005, feed)
        else:
            reactor.callLater(0, feed)

    def done() -> None:
        if len(queue.buffer) or queue._in_flight:
            reactor.callLater(0.01, done)

    output.startService()
    reactor.callLater(0.2, feed)
    reactor.run()
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def me(role: str, *args: Any) -> list[str]:
    return [sys.executable, "-m", "bench.metric_outputs", "--role", role, *map(str, args)]


def bench_output(kind: str, count: int) -> dict[str, Any]:
    sink = Proc(me("tcp-sink" if kind == "graphite" else "http-sink"), stdin=True)
    try:
        port = int(sink.read()["port"])
        feeder = Proc(me("output", kind, port, count))
        try:
            started = float(feeder.read()["start"])
            cpu_before = cpu_seconds(feeder.pid)
            got, elapsed = wait_count(sink, count, started)
            cpu = cpu_seconds(feeder.pid) - cpu_before
        finally:
            feeder.stop()
    finally:
        sink.stop()
    return {
        "points": count,
        "delivered": got,
        "lost": count - got,
        "seconds": elapsed,
        "rate": got / elapsed if elapsed > 0 else float("nan"),
        "per_cpu": got / cpu if cpu else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 points: a smoke test")
    parser.add_argument("--points", type=int, default=0, help="points per output")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "http-sink":
        return run_http_sink()
    if args.role == "tcp-sink":
        return run_tcp_sink()
    if args.role == "output":
        return run_output(args.args[0], int(args.args[1]), int(args.args[2]))
    count = args.points or (20_000 if args.quick else 200_000)
    results = {kind: bench_output(kind, count) for kind in OUTPUTS}
    load = os.getloadavg()[0]
    print(f"Metric outputs, {count:,} counter points into counting endpoints, "
          f"{os.cpu_count()} CPUs, load {load:.2f}, Python {sys.version.split()[0]}")
    print(f"{'output':>13} {'points/s':>12} {'points/CPU-s':>13} {'lost':>8} {'seconds':>8}")
    for kind, r in results.items():
        print(f"{kind:>13} {r['rate']:>12,.0f} {r['per_cpu']:>13,.0f} {r['lost']:>8,} "
              f"{r['seconds']:>8.2f}")
    for kind in ("influxdb", "remote_write"):
        ratio = results[kind]["per_cpu"] / results["graphite"]["per_cpu"]
        print(f"{kind}/graphite: {ratio:.2f} (points per CPU-second)")
    if os.environ.get("BENCH_JSON"):
        Path(os.environ["BENCH_JSON"]).write_text(json.dumps(results))
    return 0 if all(r["lost"] == 0 for r in results.values()) else 2


if __name__ == "__main__":
    raise SystemExit(main())
