"""Benchmark: documents/s through the Elasticsearch output, and per obsd CPU-second.

    python -m bench.elasticsearch [--quick] [--profile]

Two destinations, side by side:

* ``counting``: a local HTTP endpoint in a separate process that only counts
  the documents (gunzipping when asked) and answers ``{"took":0,"errors":false}``.
  This is the output's own ceiling: what obsd's side costs.
* ``node``: a real Elasticsearch-API node (OpenSearch 2.19 from Maven, as in
  the integration tests), started for the run; skipped without Java and Maven.

For batch sizes 100, 1,000 and 5,000, with and without gzip, the output (on
the real reactor, in this process: "obsd") is fed prepared log events and the
clock stops when the last one is acknowledged.  CPU is this process's user +
system time over the same span.  The aim (issue 19) is at least 200,000
documents per obsd CPU-second into the counting endpoint at every batch size
the docs recommend (1,000 and more), with and without gzip.  ``--quick`` runs the counting endpoint
only, with few documents (the CI smoke test); ``--profile`` prints a cProfile
top 15 of obsd's side for one counting run.  Loopback only, bounded in count
and time.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

AIM = 200_000  # documents per obsd CPU-second into the counting endpoint
#: the batch sizes the docs recommend (the default, 1,000, and more)
RECOMMENDED = 1000
BATCH_SIZES = (100, 1_000, 5_000)
#: a run that takes longer than this stops feeding and reports what it did
RUN_DEADLINE = 60.0


# --- the counting endpoint (runs in its own process) ---------------------------

_ANSWER = b'{"took":0,"errors":false,"items":[]}'


async def _serve_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counts: list[int]
) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            gzipped = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"content-encoding" and b"gzip" in value:
                    gzipped = True
            body = await reader.readexactly(length) if length else b""
            if head.startswith(b"GET /_count"):
                answer = json.dumps({"count": counts[0], "requests": counts[1]}).encode()
            else:
                if gzipped:
                    body = zlib.decompress(body, 47)
                counts[0] += body.count(b"\n") // 2
                counts[1] += 1
                answer = _ANSWER
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer)
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.CancelledError, ConnectionError):
        pass  # the client closed, or this process is stopping
    finally:
        writer.close()


async def _count_server() -> None:
    counts = [0, 0]
    server = await asyncio.start_server(
        lambda r, w: _serve_connection(r, w, counts), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    loop = asyncio.get_running_loop()
    stdin_closed: asyncio.Future[None] = loop.create_future()
    # the parent holds our stdin: when it closes, stop

    def stdin_readable() -> None:
        if not stdin_closed.done():
            stdin_closed.set_result(None)

    loop.add_reader(sys.stdin.fileno(), stdin_readable)
    async with server:
        await stdin_closed


class CountingEndpoint:
    """The counting endpoint as a child process; ``stop()`` ends it."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.elasticsearch", "--count-server"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert self.process.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.process.stdout.readline())}"

    def count(self) -> int:
        import urllib.request

        with urllib.request.urlopen(self.url + "/_count", timeout=10) as response:
            return int(json.loads(response.read())["count"])

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# --- obsd's side ------------------------------------------------------------------


def make_events(count: int) -> list[dict[str, Any]]:
    """Log events shaped like the syslog input's, prepared before the clock starts."""
    now = time.time()
    return [
        {
            "id": uuid.uuid4().hex,
            "kind": "log",
            "event": f"GET /api/v1/orders/{i} 200 {i % 97} ms user=u{i % 1000}",
            "level": "info",
            "timestamp": now + i / 1e6,
            "received_at": now,
            "source": "syslog",
            "host": f"web{i % 8}",
            "appname": "nginx",
            "procid": "4242",
            "facility": "local0",
        }
        for i in range(count)
    ]


@dataclass
class Run:
    destination: str
    batch_size: int
    gzip: bool
    docs: int
    wall: float
    cpu: float
    requests: int
    complete: bool

    @property
    def docs_per_s(self) -> float:
        return self.docs / self.wall if self.wall else 0.0

    @property
    def docs_per_cpu_s(self) -> float:
        return self.docs / self.cpu if self.cpu else 0.0


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


async def run_output(
    url: str, destination: str, events: list[dict[str, Any]], batch_size: int, gzip: bool,
    index: str = "bench-%Y.%m.%d",
) -> Run:
    """Feed ``events`` through one output on the real reactor; time until all are acknowledged."""
    from twisted.internet import reactor

    from obsd.config.model import BufferConfig
    from obsd.delivery.contract import OutputContext
    from obsd.delivery.deadletter import DeadLetterFile
    from obsd.delivery.flowcontrol import FlowControl
    from obsd.ops.telemetry import Telemetry
    from obsd.ops.throttle import ThrottledLogger
    from obsd.outputs.elasticsearch import Config, ElasticsearchOutput
    from obsd.testing import ListLog

    workdir = Path(tempfile.mkdtemp(prefix="obsd-bench-es-"))
    config = Config(
        type="elasticsearch", urls=[url], index=index, template=False, gzip=gzip,
        batch_size=batch_size, batch_bytes=64 * 1024 * 1024, batch_timeout=0.05,
        max_in_flight=2, retry_initial=0.05, retry_max=0.5,
        buffer=BufferConfig(max_events=max(4 * batch_size, 4_000), max_bytes=512 * 1024 * 1024),
    )
    throttle = ThrottledLogger(ListLog(), reactor, 10.0)
    context = OutputContext(
        clock=reactor, telemetry=Telemetry(), dead_letter=DeadLetterFile(workdir / "dl.jsonl"),
        flow_control=FlowControl(), throttle=throttle, reactor=reactor, data_dir=workdir,
    )
    output = ElasticsearchOutput("bench", config, context)
    output.startService()
    queue = output.queues[""]
    feeder = Feeder(output, events, reactor)
    context.flow_control.register(feeder)
    began = time.perf_counter()
    cpu_began = _cpu()
    await feeder.run(lambda: queue._sent.value + queue._rejected.value, began + RUN_DEADLINE)
    wall = time.perf_counter() - began
    cpu = _cpu() - cpu_began
    delivered = queue._sent.value
    requests = output._requests.value
    await output.stopService()
    throttle.stop()
    context.dead_letter.close()
    complete = delivered == len(events)
    return Run(destination, batch_size, gzip, delivered, wall, cpu, requests, complete)


class Feeder:
    """Accepts events as fast as the output's queue lets it, like a paused/resumed input.

    It is registered with the output's flow control, so the queue's high and
    low watermarks pause and resume it, as they do obsd's stream inputs.
    """

    def __init__(self, output: Any, events: list[dict[str, Any]], reactor: Any) -> None:
        self.output = output
        self.events = events
        self.reactor = reactor
        self.fed = 0
        self.paused = False
        self._call: Any = None

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        if self._call is None:
            self._call = self.reactor.callLater(0, self._step)

    def stopProducing(self) -> None:
        self.paused = True

    def _step(self) -> None:
        self._call = None
        accept = self.output.accept
        events = self.events
        while not self.paused and self.fed < len(events):
            accept(events[self.fed])
            self.fed += 1

    async def run(self, acknowledged: Any, deadline: float) -> None:
        """Feed everything; return once ``acknowledged()`` counts all (or at ``deadline``)."""
        from twisted.internet.task import deferLater

        self.resumeProducing()
        total = len(self.events)
        while acknowledged() < total and time.perf_counter() < deadline:
            await deferLater(self.reactor, 0.002, lambda: None)
        self.paused = True


# --- the real node ------------------------------------------------------------------


def start_es_node() -> Any:
    """A real node on a free port, or None (with the reason printed) when it cannot run."""
    try:
        from tests.integration.fixtures.es import free_port, missing_tools, start_node
    except ImportError as exc:
        print(f"node: skipped ({exc})")
        return None
    reason = missing_tools()
    if reason:
        print(f"node: skipped ({reason})")
        return None
    workdir = Path(tempfile.mkdtemp(prefix="obsd-bench-node-"))
    try:
        return start_node(workdir, free_port(), heap=os.environ.get("OBSD_ES_HEAP", "1g"))
    except Exception as exc:  # noqa: BLE001 - report and go on with the ceiling only
        print(f"node: skipped (it did not start: {str(exc)[:300]})")
        return None


# --- the table ------------------------------------------------------------------


def print_table(runs: list[Run]) -> None:
    print(
        f"{'destination':<11} {'batch':>6} {'gzip':>5} {'docs':>8} {'requests':>8} "
        f"{'docs/s':>9} {'docs/cpu-s':>11} {'vs ceiling':>10}"
    )
    ceiling = {(r.batch_size, r.gzip): r.docs_per_s for r in runs if r.destination == "counting"}
    for r in runs:
        base = ceiling.get((r.batch_size, r.gzip))
        ratio = f"{r.docs_per_s / base:.2f}x" if base and r.destination != "counting" else "-"
        flag = "" if r.complete else "  (deadline: incomplete)"
        print(
            f"{r.destination:<11} {r.batch_size:>6} {('yes' if r.gzip else 'no'):>5} "
            f"{r.docs:>8} {r.requests:>8} {r.docs_per_s:>9,.0f} {r.docs_per_cpu_s:>11,.0f} "
            f"{ratio:>10}{flag}"
        )


async def profile_one(
    url: str, events: list[dict[str, Any]], batch_size: int, gzip: bool
) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    await run_output(url, "counting", events, batch_size, gzip)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.elasticsearch", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="counting endpoint, few documents")
    parser.add_argument("--profile", action="store_true", help="cProfile top 15 of one run")
    parser.add_argument("--no-node", action="store_true", help="skip the real node")
    parser.add_argument("--count", type=int, default=50_000, help="documents per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row (median shown)")
    parser.add_argument("--count-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.count_server:
        asyncio.run(_count_server())
        return 0
    from twisted.internet import defer, task

    async def body(reactor: Any) -> None:
        code = await _bench(args)
        if code:
            raise SystemExit(code)

    task.react(lambda reactor: defer.ensureDeferred(body(reactor)))  # exits with the status
    return 0


async def _bench(args: argparse.Namespace) -> int:
    count = 5_000 if args.quick else max(1_000, args.count)
    repeat = 1 if args.quick else max(1, args.repeat)
    sizes = (1_000,) if args.quick else BATCH_SIZES
    events = make_events(count)
    print(f"obsd Elasticsearch output: {count:,} log events per run, median of {repeat}; "
          f"machine: {os.cpu_count()} cores (shared)")
    endpoint = CountingEndpoint()
    runs: list[Run] = []
    try:
        for size in sizes:
            for gzip in (False, True):
                results = [
                    await run_output(endpoint.url, "counting", events, size, gzip)
                    for _ in range(repeat)
                ]
                runs.append(_median(results))
        counted = endpoint.count()
        expected = sum(count for _ in sizes for _ in (0, 1) for _ in range(repeat))
        if counted != expected:
            print(f"counting endpoint saw {counted} documents, expected {expected}")
            return 1
        if args.profile:
            print(await profile_one(endpoint.url, events, 1_000, False))
    finally:
        endpoint.stop()
    if not args.quick and not args.no_node:
        node = start_es_node()
        if node is not None:
            try:
                node_events = make_events(min(count, 20_000))
                # warm-up (not reported): the JVM's JIT and the first index creation
                await run_output(node.url, "node", node_events[:2_000], 1_000, False, "bench-warm")
                node.client.delete_index("bench-warm")
                for size in sizes:
                    for gzip in (False, True):
                        index = f"bench-{uuid.uuid4().hex[:8]}"
                        run = await run_output(node.url, "node", node_events, size, gzip, index)
                        runs.append(run)
                        node.client.delete_index(index)
            finally:
                node.stop()
    print_table(runs)
    ceiling = [r for r in runs if r.destination == "counting" and r.batch_size >= RECOMMENDED]
    worst = min(r.docs_per_cpu_s for r in ceiling)
    verdict = "met" if worst >= AIM else f"missed by {100 * (1 - worst / AIM):.0f}%"
    print(f"aim: {AIM:,} docs per obsd CPU-second into the counting endpoint at every "
          f"batch size of {RECOMMENDED:,} or more, gzip or not: worst {worst:,.0f} ({verdict})")
    return 0 if all(r.complete for r in runs) else 1


def _median(results: list[Run]) -> Run:
    ordered = sorted(results, key=lambda r: r.docs_per_s)
    middle = ordered[len(ordered) // 2]
    middle.cpu = statistics.median(r.cpu for r in results)
    return middle


if __name__ == "__main__":
    sys.exit(main())
