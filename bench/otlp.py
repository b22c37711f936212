"""OTLP/HTTP ingest throughput: obsd's real twistd process against a bare twisted.web 200.

Run ``python -m bench.otlp [--quick]``.  For logs (a batch of 50 records, as an
SDK's batch processor sends them) and metrics (20 series: counters and
histograms) it sends the same protobuf ``Export*ServiceRequest`` over a few
HTTP/1.1 keep-alive connections from a separate load process, first to obsd's
``[inputs.otlp]`` listener (events to the file output), then to a bare
twisted.web resource that only answers 200 (the ceiling of this design), and
prints requests/s, items/s and latency side by side, as ``bench.sentry`` does
for Sentry ingest (whose load generator and bare server it reuses).  Bounded
in count and time; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.sentry import ROOT, _env, _load, median_round, start_bare, stop

LOG_RECORDS = 50
METRIC_SERIES = 20

OBSD_CONFIG = """
[daemon]
data_dir = '{data_dir}'

[inputs.otlp]
listen = ['tcp:0:interface=127.0.0.1']

[outputs.file]
max_bytes = 1099511627776  # never rotate: the bench counts every line it wrote

[[routes]]
match = {{ kind = ['log', 'metric'] }}
outputs = ['file']
"""


def logs_body() -> bytes:
    """A batch of log records like the Python SDK's logging handler sends."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    def kv(key: str, value: str) -> KeyValue:
        return KeyValue(key=key, value=AnyValue(string_value=value))

    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.extend(
        [kv("service.name", "shop"), kv("host.name", "web1"),
         kv("telemetry.sdk.language", "python")]
    )
    scope = resource_logs.scope_logs.add()
    scope.scope.name = "shop.orders"
    now = time.time_ns()
    for i in range(LOG_RECORDS):
        scope.log_records.add(
            time_unix_nano=now + i,
            severity_number=9,
            severity_text="INFO",
            body=AnyValue(string_value=f"order {i} paid"),
            attributes=[kv("code.function", "pay"), kv("code.filepath", "/srv/shop/pay.py"),
                        kv("order.id", str(i))],
            trace_id=bytes(range(16)),
            span_id=bytes(range(8)),
        )
    return bytes(request.SerializeToString())


def metrics_body() -> bytes:
    """Counters and histograms, cumulative, as a periodic reader exports them."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.metrics.v1 import metrics_pb2

    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    resource_metrics.resource.attributes.add(
        key="service.name", value=AnyValue(string_value="shop")
    )
    metrics = resource_metrics.scope_metrics.add().metrics
    now = time.time_ns()
    for i in range(METRIC_SERIES // 2):
        route = [KeyValue(key="route", value=AnyValue(string_value=f"/r{i}"))]
        metrics.add(name="requests", sum=metrics_pb2.Sum(
            aggregation_temporality=2, is_monotonic=True,
            data_points=[metrics_pb2.NumberDataPoint(
                start_time_unix_nano=now - 10**9, time_unix_nano=now, as_int=1000 + i,
                attributes=route)]))
        metrics.add(name="latency", histogram=metrics_pb2.Histogram(
            aggregation_temporality=2,
            data_points=[metrics_pb2.HistogramDataPoint(
                start_time_unix_nano=now - 10**9, time_unix_nano=now, count=10, sum=55.0,
                explicit_bounds=[5.0, 10.0, 100.0], bucket_counts=[4, 4, 2, 0],
                attributes=route)]))
    return bytes(request.SerializeToString())


#: (row name, path, body maker, items per request)
SCENARIOS = [
    ("logs (50 records)", "/v1/logs", logs_body, LOG_RECORDS),
    ("metrics (20 series)", "/v1/metrics", metrics_body, METRIC_SERIES),
]


def build_request(path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


def load_main(argv: list[str]) -> None:
    """The load process: ``--load PORT SCENARIO CONNECTIONS COUNT SECONDS``."""
    port, scenario, connections, count, seconds = argv
    _, path, make, _ = SCENARIOS[int(scenario)]
    request = build_request(path, make())
    result = asyncio.run(_load(int(port), request, int(connections), int(count), float(seconds)))
    print(json.dumps(result))


def run_load(port: int, scenario: int, connections: int, count: int,
             seconds: float) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "bench.otlp", "--load", str(port), str(scenario),
         str(connections), str(count), str(seconds)],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=seconds + 60, check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def start_obsd(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A real ``twistd -n obsd`` with the OTLP input; returns it and its port."""
    config = workdir / "obsd.toml"
    config.write_text(OBSD_CONFIG.format(data_dir=workdir / "data"))
    log = workdir / "obsd.log"
    args = [sys.executable, "-c",
            "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()",
            "--pidfile", "", "-n", "obsd", "--config", str(config)]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=workdir, env=_env(), stdout=out,
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "listening" and event.get("input") == "otlp":
                return proc, int(event["port"])
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"obsd did not start:\n{log.read_text(errors='replace')[-3000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.otlp",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few hundred requests per row (CI)")
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args(argv)
    count, seconds, rounds = (200, 5.0, 1) if args.quick else (3_000, 4.0, 5)
    rows: list[tuple[str, str, dict[str, Any], int]] = []
    logs_ok = 0
    with tempfile.TemporaryDirectory(prefix="bench-otlp-") as tmp:
        workdir = Path(tmp)
        obsd, obsd_port = start_obsd(workdir)
        bare, bare_port = start_bare()
        try:
            for index, (name, _, _, items) in enumerate(SCENARIOS):
                servers = [("obsd", obsd_port), ("bare twisted.web", bare_port)]
                results: dict[str, list[dict[str, Any]]] = {server: [] for server, _ in servers}
                for i in range(rounds):
                    for server, port in servers if i % 2 == 0 else servers[::-1]:
                        results[server].append(
                            run_load(port, index, args.connections, count, seconds)
                        )
                for server, _ in servers:
                    rows.append((name, server, median_round(results[server]), items))
                if index == 0:
                    logs_ok = sum(r["statuses"].get("200", 0) + r["warmup_ok"]
                                  for r in results["obsd"])
        finally:
            stop(bare)
            stop(obsd)
        written_logs = 0
        for path in (workdir / "data").glob("events.jsonl*"):
            with path.open("rb") as lines:
                written_logs += sum(1 for line in lines if json.loads(line)["kind"] == "log")
    print_table(rows, args.connections)
    print(f"log events written by obsd: {written_logs} for {logs_ok} log requests answered 200 "
          f"({LOG_RECORDS} records each)")
    if written_logs != logs_ok * LOG_RECORDS:
        print("obsd answered 200 for a different number of log records than it wrote")
        return 1
    failed = [r for r in rows if set(r[2]["statuses"]) != {"200"} or not r[2]["requests"]]
    if failed:
        print(f"non-200 answers: {[(r[0], r[1], r[2]['statuses']) for r in failed]}")
        return 1
    return 0


def print_table(rows: list[tuple[str, str, dict[str, Any], int]], connections: int) -> None:
    rounds = rows[0][2]["rounds"] if rows else 0
    print(f"OTLP/HTTP protobuf over HTTP/1.1 keep-alive, {connections} connections, load from a "
          f"separate process; median of {rounds} alternating rounds")
    header = f"{'request':<22}{'server':<20}" + "".join(
        f"{title:>10}" for title in ("requests", "req/s", "items/s", "p50 ms", "p99 ms", "vs bare")
    )
    print(header)
    print("-" * len(header))
    bare = {name: r for name, server, r, _ in rows if server != "obsd"}
    for name, server, r, items in rows:
        ratio = r["rps"] / bare[name]["rps"] if bare.get(name, {}).get("rps") else 0.0
        print(f"{name:<22}{server:<20}{r['requests']:>10}{r['rps']:>10.0f}"
              f"{r['rps'] * items:>10.0f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}{ratio:>10.2f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        load_main(sys.argv[2:])
    else:
        sys.exit(main())
