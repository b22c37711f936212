"""Throughput of the Elasticsearch and Graphite outputs with a disk buffer versus memory only.

One command: ``python -m bench.durability [--quick]``.  Each output runs on the
real reactor in this process and is fed pre-built events by a producer that the
queue's watermarks pause and resume (as they pause obsd's stream inputs); the
destinations are local counting sinks in child processes (bench.elasticsearch's
counting endpoint, bench.graphite's line-counting TCP sink), so what is measured
is obsd's own cost.  With ``type = "disk"`` every event is also written ahead to
the spool (in a thread) and acknowledged after delivery.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.elasticsearch import CountingEndpoint, Feeder, make_events

RUN_DEADLINE = 120.0


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _context(reactor: Any, workdir: Path) -> Any:
    from obsd.delivery.contract import OutputContext
    from obsd.delivery.deadletter import DeadLetterFile
    from obsd.delivery.flowcontrol import FlowControl
    from obsd.ops.telemetry import Telemetry
    from obsd.ops.throttle import ThrottledLogger
    from obsd.testing import ListLog

    return OutputContext(
        clock=reactor, telemetry=Telemetry(), dead_letter=DeadLetterFile(workdir / "dl.jsonl"),
        flow_control=FlowControl(), throttle=ThrottledLogger(ListLog(), reactor, 10.0),
        reactor=reactor, data_dir=workdir, sync_interval=0.2,
    )


def _buffer(kind: str) -> Any:
    from obsd.config.model import BufferConfig

    return BufferConfig(type=kind, max_events=1_000_000, max_bytes=1024**3,  # type: ignore[arg-type]
                        memory_events=20_000)


def make_output(name: str, kind: str, target: str, reactor: Any, workdir: Path) -> Any:
    if name == "elasticsearch":
        from obsd.outputs.elasticsearch import Config, ElasticsearchOutput

        config = Config(type="elasticsearch", urls=[target], template=False, batch_size=1_000,
                        batch_timeout=0.05, max_in_flight=2, buffer=_buffer(kind))
        return ElasticsearchOutput("bench", config, _context(reactor, workdir))
    from obsd.outputs.graphite import Config as GConfig
    from obsd.outputs.graphite import GraphiteOutput

    gconfig = GConfig(type="graphite", destinations=[target], buffer=_buffer(kind))
    return GraphiteOutput("bench", gconfig, _context(reactor, workdir))


def metric_events(count: int) -> list[dict[str, Any]]:
    now = float(int(time.time()))
    return [{"id": f"{i:032x}", "kind": "metric", "event": f"bench.durable.m{i % 1000}",
             "value": float(i), "timestamp": now} for i in range(count)]


async def run(name: str, kind: str, target: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    workdir = Path(tempfile.mkdtemp(prefix=f"obsd-bench-durable-{name}-"))
    output = make_output(name, kind, target, reactor, workdir)
    output.startService()
    queue = next(iter(output.queues.values()))
    if name == "graphite":  # wait for the connection, so connecting is not measured
        while output.destinations[0].protocol is None:
            await deferLater(reactor, 0.01, lambda: None)
    feeder = Feeder(output, events, reactor)
    output.context.flow_control.register(feeder)
    began, cpu_began = time.perf_counter(), _cpu()
    await feeder.run(lambda: queue._sent.value, began + RUN_DEADLINE)
    wall, cpu = time.perf_counter() - began, _cpu() - cpu_began
    sent = queue._sent.value
    spool = getattr(queue.buffer, "disk_bytes", 0)
    await output.stopService()
    output.context.throttle.stop()
    return {"output": name, "buffer": kind, "events": sent, "complete": sent == len(events),
            "per_s": sent / wall if wall else 0.0, "per_cpu_s": sent / cpu if cpu else 0.0,
            "spool_bytes": spool}


async def bench(args: argparse.Namespace) -> int:
    from bench.graphite import Proc

    count = 10_000 if args.quick else args.count
    repeat = 1 if args.quick else args.repeat
    print(f"obsd outputs, disk buffer vs memory: {count:,} events per run, median of {repeat}; "
          f"machine: {os.cpu_count()} cores (shared)")
    endpoint = CountingEndpoint()
    sink = Proc([sys.executable, "-m", "bench.graphite", "--role", "sink"], stdin=True)
    rows = []
    try:
        sink_port = int(sink.read()["port"])
        targets = {"elasticsearch": endpoint.url, "graphite": f"127.0.0.1:{sink_port}"}
        for name, events in (("elasticsearch", make_events(count)),
                             ("graphite", metric_events(count))):
            for kind in ("memory", "disk"):
                results = [await run(name, kind, targets[name], events) for _ in range(repeat)]
                results.sort(key=lambda r: r["per_s"])
                row = results[len(results) // 2]
                row["per_cpu_s"] = statistics.median(r["per_cpu_s"] for r in results)
                rows.append(row)
    finally:
        endpoint.stop()
        sink.stop()
    print(f"{'output':<14} {'buffer':<7} {'events/s':>10} {'per CPU-s':>10} {'disk/memory':>12}")
    for row in rows:
        memory = next(r for r in rows if r["output"] == row["output"] and r["buffer"] == "memory")
        ratio = row["per_s"] / memory["per_s"] if memory["per_s"] else 0.0
        print(f"{row['output']:<14} {row['buffer']:<7} {row['per_s']:>10,.0f} "
              f"{row['per_cpu_s']:>10,.0f} {ratio:>12.2f}")
    incomplete = [r for r in rows if not r["complete"]]
    for row in incomplete:
        print(f"INCOMPLETE: {row['output']} {row['buffer']} delivered {row['events']}")
    return 1 if incomplete else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.durability", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10,000 events, one run: a smoke test")
    parser.add_argument("--count", type=int, default=100_000, help="events per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row (median shown)")
    args = parser.parse_args(argv)
    from twisted.internet import defer, task

    async def body(reactor: Any) -> None:
        code = await bench(args)
        if code:
            raise SystemExit(code)

    task.react(lambda reactor: defer.ensureDeferred(body(reactor)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
