"""Kafka between the tiers: agent -> Kafka, and Kafka -> 1 or 2 central processes, per CPU-second.

Run ``python -m bench.kafka [--quick]``.  A real broker (KRaft, from Maven, as
in the tests) runs on 127.0.0.1; the broker's CPU is reported beside each row.

- **agent -> Kafka**: a load process POSTs pre-built batches of syslog-sized
  events into a real agent obsd's relay input (as ``bench.relay`` does); its
  Kafka output writes them to a 4-partition topic; the clock stops when the
  topic holds every event (acknowledged).  Beside it, the same load through
  an agent's HTTP relay output to a central obsd (``bench.relay``'s
  "agent->central http gzip" row).
- **Kafka -> central**: the topic is filled first (the producer is done
  before the clock starts, so it does not share the cores); then 1, and then
  2, central processes (``[inputs.kafka]`` in a fresh consumer group, the file
  output on a disk buffer, ``durability = "sync"``: the configuration the Kafka
  input requires) start together; the broker waits 3 s
  (``group.initial.rebalance.delay.ms``) so both join the first generation; the
  clock runs from the first event in a central's file to the last.  The ratio
  of two processes to one is issue 15's aim (at least 1.6 on a 2-core machine).

Loopback only; bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._child import cpu_seconds  # noqa: E402
from bench.relay import LOADER, count_lines, run_scenario  # noqa: E402
from tests.integration.fixtures.kafka import KafkaBroker  # noqa: E402
from tests.integration.fixtures.obsd import ObsdProcess, twistd_args  # noqa: E402
from tests.integration.relay_helpers import LOAD_TOKEN  # noqa: E402

AGENT = """
[daemon]
data_dir = "{data_dir}"
metrics_interval = 0
[http]
listen = ["tcp:0:interface=127.0.0.1"]
[inputs.relay]
tokens = [{{name = "load", token = "{token}"}}]
[outputs.kafka]
bootstrap_servers = ["{bootstrap}"]
topic = "{topic}"
batch_timeout = 0.05
batch_size = 2000
"""

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
max_bytes = 8589934592
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


def lines(process: ObsdProcess, state: dict[str, int]) -> int:
    """Events in a central's file so far (the file output does not rotate here)."""
    return count_lines(process.workdir / "data" / "events.jsonl", state)


def topic_size(consumer: Any, topic: str) -> int:
    """Messages in ``topic``: the sum of its partitions' end offsets."""
    from confluent_kafka import TopicPartition

    return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
               for p in range(4))


def agent_to_kafka(broker: KafkaBroker, root: Path, count: int, limit: float) -> dict[str, Any]:
    """The load POSTed into an agent whose Kafka output writes it; until the topic holds all."""
    topic = f"agent-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic)
    workdir = root / f"agent-{topic}"
    workdir.mkdir(parents=True)
    config = workdir / "obsd.toml"
    config.write_text(AGENT.format(data_dir=workdir / "data", bootstrap=broker.bootstrap,
                                   topic=topic, token=LOAD_TOKEN))
    agent = ObsdProcess(workdir, twistd_args(config)).start()
    from confluent_kafka import Consumer

    sizer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"size-{topic}"})
    try:
        loader = subprocess.Popen(
            [sys.executable, "-c", LOADER, str(agent.port("http")), LOAD_TOKEN, str(count),
             "500", str(ROOT)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert loader.stdout is not None and loader.stdin is not None
        assert loader.stdout.readline().strip() == "ready"
        cpu_before, broker_before = cpu_seconds(agent.pid), broker_cpu(broker)
        began = time.monotonic()
        loader.stdin.write("go\n")
        loader.stdin.flush()
        size = 0
        while time.monotonic() < began + limit and size < count:
            time.sleep(0.05)
            size = topic_size(sizer, topic)
        elapsed = time.monotonic() - began
        cpu = cpu_seconds(agent.pid) - cpu_before
        loader.wait(30)
    finally:
        sizer.close()
        agent.stop()
    return {"rate": size / elapsed, "cpu_us": cpu / max(size, 1) * 1e6,
            "broker_cpu": broker_cpu(broker) - broker_before, "lost": max(0, count - size)}


def main_thread_cpu(pid: int) -> float:
    """CPU seconds of a process's main thread (the reactor), not librdkafka's threads."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def broker_cpu(broker: KafkaBroker) -> float:
    return cpu_seconds(broker.proc.pid) if broker.proc else 0.0


def drain(
    broker: KafkaBroker, root: Path, consumers: int, count: int, limit: float
) -> dict[str, Any]:
    """A topic filled with ``count`` events, then drained by ``consumers`` centrals started
    together; timed from the first event in a file to the last."""
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic)
    produce(broker.bootstrap, topic, count)
    centrals = []
    for i in range(consumers):
        workdir = root / f"central-{consumers}-{i}"
        workdir.mkdir(parents=True)
        config = workdir / "obsd.toml"
        config.write_text(CENTRAL.format(data_dir=workdir / "data", bootstrap=broker.bootstrap,
                                         topic=topic, group=f"g-{topic}"))
        centrals.append(ObsdProcess(workdir, twistd_args(config)))
    try:
        launched = [subprocess.Popen(c.args, cwd=c.workdir, env=c.env,
                                     stdout=(c.workdir / "obsd.log").open("ab"),
                                     stderr=subprocess.STDOUT) for c in centrals]
        for central, proc in zip(centrals, launched, strict=True):
            central.proc = proc
        deadline = time.monotonic() + limit
        states: list[dict[str, int]] = [{} for _ in centrals]
        total = 0
        while total == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
            total = sum(lines(c, st) for c, st in zip(centrals, states, strict=True))
        before = total
        cpu_before = sum(cpu_seconds(c.pid) for c in centrals)
        main_before = sum(main_thread_cpu(c.pid) for c in centrals)
        broker_before = broker_cpu(broker)
        start = time.monotonic()
        while time.monotonic() < deadline and total < count:
            time.sleep(0.1)  # reading the files costs this process CPU: not too often
            total = sum(lines(c, st) for c, st in zip(centrals, states, strict=True))
        elapsed = time.monotonic() - start
        cpu = sum(cpu_seconds(c.pid) for c in centrals) - cpu_before
        main = sum(main_thread_cpu(c.pid) for c in centrals) - main_before
        spent_broker = broker_cpu(broker) - broker_before
        shares = [st.get("lines", 0) for st in states]
    finally:
        for central in centrals:
            if central.proc is not None and central.proc.poll() is None:
                central.stop()
    timed = max(total - before, 1)
    return {"rate": timed / elapsed, "cpu_us": cpu / timed * 1e6, "timed": timed,
            "broker_cores": spent_broker / elapsed,
            "main_us": main / timed * 1e6, "broker_cpu": spent_broker,
            "lost": max(0, count - total), "shares": json.dumps(shares)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kafka",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small topic (CI)")
    parser.add_argument("--rounds", type=int, default=None, help="drain rounds (medians)")
    args = parser.parse_args(argv)
    count, limit = (20_000, 60.0) if args.quick else (600_000, 300.0)
    agent_count = 4_000 if args.quick else 40_000
    rounds = args.rounds or (1 if args.quick else 3)
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp:
        root = Path(tmp)
        broker = KafkaBroker(root / "broker", extra={"group.initial.rebalance.delay.ms": "3000"})
        broker.start()
        try:
            agent = agent_to_kafka(broker, root, agent_count, limit)
            relay_rate, relay_cpu = run_scenario(root / "relay", True, False, True, agent_count,
                                                 limit)
            drains: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
            for _ in range(rounds):  # alternating, so other load on the machine hits both
                for n in (1, 2):
                    drains[n].append(drain(broker, root / f"r{len(drains[n])}", n, count, limit))
        finally:
            broker.stop()
    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, "
          f"Python {sys.version.split()[0]}")
    print(f"\nAgent to the next tier: {agent_count} events POSTed into the agent")
    print(f"{'path':<26}{'events/s':>10}{'CPU-us/ev':>11}{'broker CPU s':>14}")
    print(f"{'agent -> Kafka':<26}{agent['rate']:>10.0f}{agent['cpu_us']:>11.1f}"
          f"{agent['broker_cpu']:>14.1f}")
    print(f"{'agent -> central (HTTP)':<26}{relay_rate:>10.0f}{relay_cpu:>11.1f}{'-':>14}"
          "  (agent and central together)")
    print(f"\nKafka -> central, {count} events pre-filled in 4 partitions, {rounds} round(s)")
    print(f"{'centrals':<10}{'events/s':>10}{'CPU-us/ev':>11}{'reactor':>9}{'timed':>9}"
          f"{'broker CPU s':>14}  per central")
    for n, runs in drains.items():
        for r in runs:
            print(f"{n:<10}{r['rate']:>10.0f}{r['cpu_us']:>11.1f}{r['main_us']:>9.1f}"
                  f"{r['timed']:>9}{r['broker_cpu']:>14.1f}  {r['shares']}")
    ratios = [two["rate"] / one["rate"] for one, two in zip(drains[1], drains[2], strict=True)]
    # what two centrals could reach at most here: the cores the broker leaves, over the
    # cores one central used, at the per-event cost each pair of rounds measured with two
    ceilings = [
        ((os.cpu_count() or 1) - two["broker_cores"]) / (one["rate"] * two["cpu_us"] * 1e-6)
        for one, two in zip(drains[1], drains[2], strict=True)
    ]
    print(f"ceiling on this machine ((CPUs - broker cores) / one central's cores at the "
          f"two-central cost): {', '.join(f'{c:.2f}' for c in ceilings)}")
    print(f"two centrals / one: {', '.join(f'{r:.2f}' for r in ratios)}; "
          f"median {statistics.median(ratios):.2f} (aim: 1.6)")
    lost = {f"{n} centrals": r["lost"] for n, runs in drains.items() for r in runs if r["lost"]}
    if agent["lost"]:
        lost["agent"] = agent["lost"]
    if lost:
        print(f"LOST events: {lost}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
