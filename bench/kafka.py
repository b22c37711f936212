"""Kafka -> central: how fast one and two central obsd processes drain a topic, per CPU-second.

Run ``python -m bench.kafka [--quick]``.  A real broker (KRaft, from Maven,
as in the tests) holds a topic of 4 partitions.  For 1 and then 2 central
processes (``[inputs.kafka]`` in one fresh consumer group, the file output on
a disk buffer, ``durability = "sync"``: the configuration the Kafka input
requires) start together on an empty topic and settle in the group (each
partition one owner); then N syslog-sized log events (keys over 64 hosts) are
produced, and the backlog left when producing ends is timed until every event
is in the centrals' files (producing is not timed, so the load generator does
not share the cores while the clock runs).  The table shows events/s, the
centrals' CPU-µs per event and the broker's CPU beside, and the ratio of two processes to one (issue
15's aim: at least 1.6 on a 2-core machine).  Loopback only; bounded in
count and time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._child import cpu_seconds  # noqa: E402
from tests.integration.fixtures.kafka import KafkaBroker  # noqa: E402
from tests.integration.fixtures.obsd import ObsdProcess, twistd_args  # noqa: E402

CENTRAL = """
[daemon]
data_dir = "{data_dir}"
metrics_interval = 0
durability = "sync"
[http]
listen = []
[inputs.kafka]
bootstrap_servers = ["{bootstrap}"]
topics = ["{topic}"]
group_id = "{group}"
session_timeout = 6.0
[outputs.file]
batch_timeout = 0.05
batch_size = 2000
[outputs.file.buffer]
type = "disk"
"""


def create_topic(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])[topic].result(30)


def produce(bootstrap: str, topic: str, count: int) -> None:
    """``count`` log events into ``topic``, as the Kafka output writes them."""
    from confluent_kafka import Producer

    from obsd.codecs.relaywire import encode_event

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                         "compression.type": "lz4", "partitioner": "murmur2_random"})
    for i in range(count):
        host = f"web{i % 64}"
        value = encode_event({
            "kind": "log", "event": f"GET /api/orders/{i} 200", "level": "info", "host": host,
            "id": uuid.uuid4().hex, "timestamp": 1764750000.0 + i / 1000, "source": "syslog",
            "app": "nginx", "status": 200, "duration_ms": i % 250,
        })
        while True:
            try:
                producer.produce(topic, value=value, key=host.encode(),
                                 headers=[("obsd-format", b"1")])
                break
            except BufferError:
                producer.poll(0.05)
        if i % 5000 == 0:
            producer.poll(0)
    producer.flush(60)


def lines(process: ObsdProcess) -> int:
    path = process.workdir / "data" / "events.jsonl"
    if not path.exists():
        return 0
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def drain(
    broker: KafkaBroker, root: Path, consumers: int, count: int, limit: float
) -> dict[str, Any]:
    """``consumers`` centrals settle in a group on an empty topic; the topic is filled; the
    backlog left when filling ends is timed until drained (filling is not timed: the load
    generator then no longer shares the cores)."""
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic)
    centrals = []
    for i in range(consumers):
        workdir = root / f"central-{consumers}-{i}"
        workdir.mkdir(parents=True)
        config = workdir / "obsd.toml"
        config.write_text(CENTRAL.format(data_dir=workdir / "data", bootstrap=broker.bootstrap,
                                         topic=topic, group=f"g-{topic}"))
        centrals.append(ObsdProcess(workdir, twistd_args(config)))
    for central in centrals:  # all at once, so they join the group together
        central.start()
    try:
        def assigned(c: ObsdProcess) -> list[Any]:
            return [e for e in c.log_events() if e.get("event") == "kafka partitions assigned"]

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            latest = [assigned(c)[-1]["partitions"] if assigned(c) else [] for c in centrals]
            owned = [p for parts in latest for p in parts]
            if all(latest) and len(owned) == len(set(owned)) == 4:
                break  # every central owns partitions, and each partition one owner
            time.sleep(0.02)
        else:
            raise RuntimeError("the group never gave every central partitions")
        produce(broker.bootstrap, topic, count)
        before = sum(lines(c) for c in centrals)
        cpu_before = sum(cpu_seconds(c.pid) for c in centrals)
        broker_before = cpu_seconds(broker.proc.pid) if broker.proc else 0.0
        start = time.monotonic()
        total = before
        while time.monotonic() < start + limit and total < count:
            time.sleep(0.02)
            total = sum(lines(c) for c in centrals)
        elapsed = time.monotonic() - start
        cpu = sum(cpu_seconds(c.pid) for c in centrals) - cpu_before
        broker_cpu = (cpu_seconds(broker.proc.pid) if broker.proc else 0.0) - broker_before
        shares = [lines(c) for c in centrals]
    finally:
        for central in centrals:
            central.stop()
    timed = max(total - before, 1)
    return {"rate": timed / elapsed, "cpu_us": cpu / timed * 1e6, "timed": timed,
            "broker_cpu": broker_cpu, "lost": max(0, count - total), "shares": json.dumps(shares)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kafka",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small topic (CI)")
    args = parser.parse_args(argv)
    count, limit = (20_000, 60.0) if args.quick else (400_000, 300.0)
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp:
        root = Path(tmp)
        broker = KafkaBroker(root / "broker").start()
        try:
            results = {n: drain(broker, root, n, count, limit) for n in (1, 2)}
        finally:
            broker.stop()
    print(f"Kafka -> central, {count} events, topic of 4 partitions; {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.2f}, Python {sys.version.split()[0]}")
    print(f"{'centrals':<10}{'events/s':>10}{'CPU-us/ev':>11}{'timed':>9}{'broker CPU s':>14}"
          f"  per central")
    for n, r in results.items():
        print(f"{n:<10}{r['rate']:>10.0f}{r['cpu_us']:>11.1f}{r['timed']:>9}"
              f"{r['broker_cpu']:>14.1f}  {r['shares']}")
    print(f"two centrals / one: {results[2]['rate'] / results[1]['rate']:.2f} (aim: 1.6)")
    lost = {n: r["lost"] for n, r in results.items() if r["lost"]}
    if lost:
        print(f"LOST events: {lost}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
