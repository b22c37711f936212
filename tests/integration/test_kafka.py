"""obsd through a real Kafka broker (KRaft, from Maven): every event once, keyed, acknowledged.

Syslog lines and StatsD counters go into a real ``twistd obsd`` whose Kafka
output creates the topics; a confluent-kafka consumer reads them back.  The
broker stops while lines keep arriving and starts again: the lines wait in
the delivery queue and all arrive, once.  Two central processes share a
topic in one consumer group; one is killed with -9 mid-load and restarted:
every line arrives.
"""

from __future__ import annotations

import json
import signal
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError

from obsd.codecs.relaywire import decode_event
from tests.integration.fixtures.kafka import KafkaBroker
from tests.integration.fixtures.obsd import ObsdProcess

pytestmark = pytest.mark.integration

CONFIG = """
[daemon]
data_dir = "{{data_dir}}"
metrics_interval = 0
shutdown_timeout = 10.0

[inputs.syslog]
listen = ["tcp:0:interface=127.0.0.1"]

[inputs.statsd]
listen = ["udp:0:interface=127.0.0.1"]
flush_interval = 1.0

[outputs.kafka]
bootstrap_servers = ["{bootstrap}"]
topic = "{prefix}-{{kind}}"
batch_timeout = 0.05
retry_initial = 0.2
retry_max = 1.0
request_timeout = 5.0
"""


def read_all(broker: KafkaBroker, topics: list[str], want: int, timeout: float = 30.0) -> list[Any]:
    """Every message of ``topics`` from the start, until ``want`` arrived (bounded)."""
    consumer = Consumer({
        "bootstrap.servers": broker.bootstrap, "group.id": f"test-{uuid.uuid4().hex}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
        # obsd creates the topics at its first send: look for them again soon
        "topic.metadata.refresh.interval.ms": 500,
    })
    consumer.subscribe(topics)
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(messages) < want:
            for message in consumer.consume(num_messages=500, timeout=0.5):
                if message.error() is None:
                    messages.append(message)
                elif message.error().code() not in (
                    KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART
                ):
                    raise AssertionError(message.error())
        # a little longer: anything beyond ``want`` would be a duplicate
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            messages += [m for m in consumer.consume(num_messages=500, timeout=0.2)
                         if m.error() is None]
    finally:
        consumer.close()
    return messages


def send_lines(port: int, first: int, count: int, tag: str, hosts: int = 1) -> None:
    """RFC 5424 lines from ``hosts`` hosts (web1, web2...): the key spreads them."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"".join(
            b"<14>1 2026-12-03T10:00:00Z web%d app - - - %s line %d\n"
            % (i % hosts + 1, tag.encode(), i)
            for i in range(first, first + count)
        ))


def test_events_reach_kafka_once_with_keys_by_kind(
    obsd_process: Callable[..., ObsdProcess], kafka: KafkaBroker
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    obsd = obsd_process(CONFIG.format(bootstrap=kafka.bootstrap, prefix=prefix))
    send_lines(obsd.port("syslog"), 0, 200, prefix)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for _ in range(5):
            udp.sendto(b"shop.orders:2|c", ("127.0.0.1", obsd.port("statsd", "udp")))
    messages = read_all(kafka, [f"{prefix}-log", f"{prefix}-metric"], want=201)
    logs = [m for m in messages if m.topic() == f"{prefix}-log"]
    texts = sorted(decode_event(m.value())["event"] for m in logs)
    assert texts == sorted(f"{prefix} line {i}" for i in range(200))  # each once
    assert {m.key() for m in logs} == {b"web1"}
    assert all(dict(m.headers())["obsd-format"] == b"1" for m in messages)
    counts = [decode_event(m.value()) for m in messages if m.topic() == f"{prefix}-metric"]
    orders = [e for e in counts if e.get("metric") == "shop.orders" and e.get("stat") == "count"]
    assert sum(e["value"] for e in orders) == 10
    assert {m.key() for m in messages if m.topic() == f"{prefix}-metric"
            and decode_event(m.value()).get("metric") == "shop.orders"} == {b"shop.orders"}


def test_a_broker_outage_loses_nothing(
    obsd_process: Callable[..., ObsdProcess], kafka: KafkaBroker
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    obsd = obsd_process(CONFIG.format(bootstrap=kafka.bootstrap, prefix=prefix))
    port = obsd.port("syslog")
    send_lines(port, 0, 50, prefix)
    assert len(read_all(kafka, [f"{prefix}-log"], want=50)) == 50
    kafka.stop()
    try:
        send_lines(port, 50, 100, prefix)
        obsd.wait_for(
            lambda: any(e.get("event") == "delivery failed; retrying with backoff"
                        for e in obsd.log_events()),
            timeout=30, what="the output to notice the broker is gone",
        )
    finally:
        kafka.restart()
    messages = read_all(kafka, [f"{prefix}-log"], want=150, timeout=60)
    texts = sorted(decode_event(m.value())["event"] for m in messages)
    assert texts == sorted(f"{prefix} line {i}" for i in range(150))


CENTRAL = """
[daemon]
data_dir = "{{data_dir}}"
metrics_interval = 0
durability = "sync"
shutdown_timeout = 10.0

[http]
listen = []

[inputs.kafka]
bootstrap_servers = ["{bootstrap}"]
topics = ["{prefix}-log"]
group_id = "{prefix}-central"
session_timeout = 6.0

[outputs.file]
batch_timeout = 0.05
[outputs.file.buffer]
type = "disk"
"""

AGENT = """
[daemon]
data_dir = "{{data_dir}}"
metrics_interval = 0

[http]
listen = []

[inputs.syslog]
listen = ["tcp:0:interface=127.0.0.1"]

[outputs.kafka]
bootstrap_servers = ["{bootstrap}"]
topic = "{prefix}-{{kind}}"
batch_timeout = 0.05
"""


def ids_in(central: ObsdProcess) -> list[str]:
    path = central.data_dir / "events.jsonl"  # type: ignore[attr-defined]
    if not path.exists():
        return []
    return [json.loads(line)["event"] for line in path.read_text().splitlines() if line]


def test_two_centrals_share_the_topic_and_a_kill_9_loses_nothing(
    obsd_process: Callable[..., ObsdProcess], kafka: KafkaBroker
) -> None:
    """Agent -> Kafka -> two central processes in one group; one is killed with -9 mid-load."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    fmt = {"bootstrap": kafka.bootstrap, "prefix": prefix}
    agent = obsd_process(AGENT.format(**fmt))
    port = agent.port("syslog")
    send_lines(port, 0, 1, prefix)  # the agent creates the topic (4 partitions)
    assert len(read_all(kafka, [f"{prefix}-log"], want=1)) == 1
    first = obsd_process(CENTRAL.format(**fmt))
    second = obsd_process(CENTRAL.format(**fmt))
    for central in (first, second):
        central.wait_for(
            lambda c=central: any(e.get("event") == "kafka partitions assigned" and e["partitions"]
                                  for e in c.log_events()),
            timeout=30, what="the group to give both centrals partitions",
        )
    send_lines(port, 1, 299, prefix, hosts=16)
    both = lambda: set(ids_in(first)) | set(ids_in(second))  # noqa: E731
    first.wait_for(lambda: len(both()) == 300, timeout=60, what="300 lines in the centrals")
    assert ids_in(first) and ids_in(second)  # the group shared the partitions
    first.stop(signal.SIGKILL)
    send_lines(port, 300, 300, prefix, hosts=16)
    # the survivor takes the partitions from the last commit; the killed one, restarted,
    # replays its disk buffer (what it had committed was on disk there)
    first.start()
    second.wait_for(lambda: len(both()) == 600, timeout=90, what="600 lines after kill -9")
    assert both() == {f"{prefix} line {i}" for i in range(600)}
