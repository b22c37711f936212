"""The Elasticsearch output against a real node: documents, dead letters, outages and blocks.

The output runs in this process on the real reactor (pytest-twisted); the
tests at the end run a real obsd and feed it through its own syslog and Sentry
inputs.  Every test writes to indices (and templates) of its own, since the
node is shared by the whole session.
"""

from __future__ import annotations

import calendar
import json
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.task import deferLater

from obsd import registry
from obsd.delivery.contract import OutputContext
from obsd.delivery.deadletter import DeadLetterFile
from obsd.delivery.flowcontrol import FlowControl
from obsd.ops.telemetry import Telemetry
from obsd.ops.throttle import ThrottledLogger
from obsd.outputs.elasticsearch import Config, ElasticsearchOutput
from obsd.testing import ListLog
from tests.integration.fixtures.es import EsClient, EsNode
from tests.integration.fixtures.obsd import ObsdProcess

pytestmark = pytest.mark.integration

BLOCK = "index.blocks.read_only_allow_delete"
T0 = 1764000000.25  # 2025-11-24T16:00:00.25Z


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def make_output(url: str, tmp_path: Path, **settings: Any) -> ElasticsearchOutput:
    """An output on the real reactor with quick batches and retries."""
    settings.setdefault("template", False)
    settings.setdefault("batch_timeout", 0.05)
    settings.setdefault("retry_initial", 0.1)
    settings.setdefault("retry_max", 1.0)
    config = Config(type="elasticsearch", urls=[url], **settings)
    context = OutputContext(
        clock=reactor,
        telemetry=Telemetry(),
        dead_letter=DeadLetterFile(tmp_path / "dead-letter.jsonl"),
        flow_control=FlowControl(),
        throttle=ThrottledLogger(ListLog(), reactor, 10.0),
        reactor=reactor,
        data_dir=tmp_path,
        hostname="itest",
    )
    output = ElasticsearchOutput("es", config, context)
    output.startService()
    return output


async def stop(output: ElasticsearchOutput) -> None:
    await output.stopService()
    output.context.throttle.stop()
    output.context.dead_letter.close()


async def until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll ``predicate`` on the reactor (bounded) until it holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await deferLater(reactor, 0.1, lambda: None)


def count(client: EsClient, index: str) -> int:
    """Documents in ``index`` (0 while it does not exist)."""
    status, parsed = client.request("POST", f"/{index}/_refresh")
    if status == 404:
        return 0
    status, parsed = client.request("GET", f"/{index}/_count")
    return int(parsed["count"]) if status == 200 else 0


def event(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"{i:032x}",
        "event": f"user logged in {i}",
        "kind": "log",
        "level": "info",
        "source": "itest",
        "host": "web1",
        "timestamp": T0 + i / 1000,
        "received_at": T0 + 1,
        "_private": "never indexed",
        **extra,
    }


def dead_letters(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "dead-letter.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class TestDocuments:
    @pytest_twisted.ensureDeferred
    async def test_land_with_template_mapping(self, es_node: EsNode, tmp_path: Path) -> None:
        """Events land as Logstash-shaped documents in a date-named index, mapped by the template."""
        prefix = unique("t-docs")
        out = make_output(
            es_node.url, tmp_path, index=f"{prefix}-%Y.%m.%d", template=True,
            template_name=prefix, gzip=True,
        )
        try:
            for i in range(3):
                out.accept(event(i))
            client = es_node.client
            await until(lambda: count(client, f"{prefix}-*") == 3, "3 documents")
        finally:
            await stop(out)
        hits = client.search(f"{prefix}-*")
        assert [h["_id"] for h in hits] == [f"{i:032x}" for i in range(3)]
        first = hits[0]
        assert first["@timestamp"] == "2025-11-24T16:00:00.250000Z"
        assert first["received_at"] == "2025-11-24T16:00:01.250000Z"
        assert {k: first[k] for k in ("event", "kind", "level", "source", "host")} == {
            "event": "user logged in 0", "kind": "log", "level": "info",
            "source": "itest", "host": "web1",
        }
        assert "_private" not in first and "timestamp" not in first
        status, mapping = client.request("GET", f"/{prefix}-2025.11.24/_mapping")
        assert status == 200
        props = mapping[f"{prefix}-2025.11.24"]["mappings"]["properties"]
        assert props["@timestamp"]["type"] == "date"
        assert props["level"]["type"] == "keyword"
        assert props["event"]["type"] == "text"
        assert props["event"]["fields"]["keyword"]["type"] == "keyword"
        hits = client.search(f"{prefix}-*", {"term": {"level": "info"}})
        assert len(hits) == 3
        status, _ = client.request("DELETE", f"/_index_template/{prefix}")
        client.delete_index(f"{prefix}-*")

    @pytest_twisted.ensureDeferred
    async def test_data_stream(self, es_node: EsNode, tmp_path: Path) -> None:
        """In data-stream mode the template makes a stream and a replayed event is not doubled."""
        name = unique("logs-obsd")
        out = make_output(
            es_node.url, tmp_path, index=name, data_stream=True, template=True, template_name=name,
        )
        client = es_node.client
        try:
            out.accept(event(1))
            out.accept(event(2))
            await until(lambda: count(client, name) == 2, "2 documents")
            out.accept(event(1))  # replayed: create answers 409, which counts as delivered
            await until(lambda: out.queues[""]._sent.value == 3, "the replay acknowledged")
        finally:
            await stop(out)
        assert count(client, name) == 2
        status, streams = client.request("GET", f"/_data_stream/{name}")
        assert status == 200
        assert [s["name"] for s in streams["data_streams"]] == [name]
        assert dead_letters(tmp_path) == []
        client.request("DELETE", f"/_data_stream/{name}")
        client.request("DELETE", f"/_index_template/{name}")

    @pytest_twisted.ensureDeferred
    async def test_mapping_conflict_dead_letters(self, es_node: EsNode, tmp_path: Path) -> None:
        """A document whose field conflicts with the mapping goes to the dead-letter file."""
        index = unique("t-map")
        out = make_output(es_node.url, tmp_path, index=index)
        client = es_node.client
        try:
            out.accept(event(1, duration=1.5))
            await until(lambda: count(client, index) == 1, "the first document")
            out.accept(event(2, duration="not a number"))
            out.accept(event(3, duration=2.5))
            await until(lambda: bool(dead_letters(tmp_path)), "a dead letter")
            await until(lambda: count(client, index) == 2, "the third document")
        finally:
            await stop(out)
        (letter,) = dead_letters(tmp_path)
        assert letter["output"] == "es"
        assert letter["reason"].startswith("400 mapper_parsing_exception: failed to parse field [duration]")
        assert letter["event"]["id"] == f"{2:032x}"
        assert letter["event"]["_index"] == index
        assert out.health()["state"] == "ok"
        client.delete_index(index)


class TestOutages:
    @pytest_twisted.ensureDeferred
    async def test_node_restart_exactly_once(
        self, es_restartable_node: EsNode, tmp_path: Path
    ) -> None:
        """Events sent while the node stops and restarts all land, each exactly once."""
        node = es_restartable_node
        index = unique("t-restart")
        out = make_output(node.url, tmp_path, index=index, batch_size=20, max_in_flight=2)
        client = node.client
        sent = 0

        async def send(n: int) -> None:
            nonlocal sent
            for _ in range(n // 10):
                for _ in range(10):
                    out.accept(event(sent))
                    sent += 1
                await deferLater(reactor, 0.01, lambda: None)

        try:
            await send(100)
            stopping = threads.deferToThread(node.stop)
            await send(200)  # mid-stream: some requests fail, some never connect
            await stopping
            await send(100)
            await until(lambda: out.queues[""].failures_in_row > 0, "a failed delivery")
            assert out.health()["state"] != "ok"
            await threads.deferToThread(node.restart)
            await send(100)
            await until(lambda: count(client, index) == sent, f"{sent} documents", timeout=60)
            await until(lambda: out.health()["state"] == "ok", "recovery")
        finally:
            await stop(out)
        status, parsed = client.request(
            "POST", f"/{index}/_search",
            {"size": 0, "aggs": {"ids": {"cardinality": {"field": "id.keyword", "precision_threshold": 1000}}}},
        )
        assert status == 200, parsed
        assert parsed["hits"]["total"]["value"] == sent == 500
        assert parsed["aggregations"]["ids"]["value"] == sent
        assert dead_letters(tmp_path) == []
        assert out.queues[""]._retried.value > 0

    @pytest_twisted.ensureDeferred
    async def test_read_only_block_retried_until_lifted(
        self, es_node: EsNode, tmp_path: Path
    ) -> None:
        """Under read_only_allow_delete writes are refused with 429 and kept; lifted, all land."""
        index = unique("t-block")
        client = es_node.client
        client.create_index(index)
        client.put_settings(index, {BLOCK: True})
        out = make_output(es_node.url, tmp_path, index=index, batch_size=10)
        try:
            for i in range(25):
                out.accept(event(i))
            queue = out.queues[""]
            await until(lambda: queue.failures_in_row >= 3, "three refusals")
            assert queue.last_error.startswith("429 cluster_block_exception")
            assert count(client, index) == 0
            assert out.health()["state"] == "degraded"
            client.put_settings(index, {BLOCK: None})
            await until(lambda: count(client, index) == 25, "25 documents")
            await until(lambda: out.health()["state"] == "ok", "recovery")
        finally:
            await stop(out)
        assert dead_letters(tmp_path) == []
        assert queue._rejected.value == 0
        client.delete_index(index)


needs_syslog = pytest.mark.skipif(
    "syslog" not in registry.INPUT_MODULES, reason="obsd has no syslog input yet"
)
needs_sentry = pytest.mark.skipif(
    "sentry" not in registry.INPUT_MODULES, reason="obsd has no sentry input yet"
)


def _obsd_config(url: str, index: str, inputs: str) -> str:
    return (
        "[daemon]\ndata_dir = '{data_dir}'\n"
        f"{inputs}\n"
        "[outputs.elasticsearch]\n"
        f"urls = ['{url}']\nindex = '{index}-%Y.%m.%d'\ntemplate_name = '{index}'\n"
        "batch_timeout = 0.1\n"
    )


class TestThroughObsd:
    @needs_syslog
    def test_syslog_line_lands(
        self, es_node: EsNode, obsd_process: Callable[..., ObsdProcess]
    ) -> None:
        """A syslog line sent to a real obsd is found by _search with its fields and @timestamp."""
        index = unique("t-syslog")
        proc = obsd_process(
            _obsd_config(
                es_node.url, index, "[inputs.syslog]\nlisten = ['udp:0:interface=127.0.0.1']\n"
            )
        )
        line = b"<131>1 2026-11-24T01:02:03.456Z web7 billing 4242 - - card declined"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(line, ("127.0.0.1", proc.port("syslog", "udp")))
        client = es_node.client
        proc.wait_for(lambda: count(client, f"{index}-*") == 1, timeout=30, what="the document")
        assert proc.stop() == 0
        # the HTTP connections to the node are not logged at info (Twisted's chatter is debug)
        chatter = [e["event"] for e in proc.log_events()
                   if str(e.get("event", "")).startswith(("Starting factory", "Stopping factory"))]
        assert chatter == []
        (doc,) = client.search(f"{index}-*")
        assert doc["@timestamp"] == "2026-11-24T01:02:03.456000Z"
        assert doc["event"] == "card declined"
        assert doc["level"] == "error"
        assert doc["kind"] == "log"
        assert doc["host"] == "web7"
        assert doc["source"] == "syslog"
        assert doc["_id"] == doc["id"]
        client.delete_index(f"{index}-*")

    @needs_sentry
    def test_raven_report_lands(
        self, es_node: EsNode, obsd_process: Callable[..., ObsdProcess]
    ) -> None:
        """A raven exception report becomes an error document whose _id is raven's event_id."""
        raven = pytest.importorskip("raven")
        from raven.transport.http import HTTPTransport  # type: ignore[import-untyped]

        key = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
        index = unique("t-sentry")
        proc = obsd_process(
            _obsd_config(
                es_node.url, index,
                "[http]\nlisten = ['tcp:0:interface=127.0.0.1']\n"
                f"[inputs.sentry]\nprojects = [{{ id = 7, keys = ['{key}'] }}]\n",
            )
        )
        client = raven.Client(
            f"http://{key}@127.0.0.1:{proc.port('http')}/7",
            transport=HTTPTransport,
            raise_send_errors=True,
            name="web9",
            install_sys_hook=False,
            install_logging_hook=False,
            enable_breadcrumbs=False,
        )
        before = time.time()
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            event_id = client.captureException()
        es = es_node.client
        proc.wait_for(lambda: count(es, f"{index}-*") == 1, timeout=30, what="the document")
        assert proc.stop() == 0
        (doc,) = es.search(f"{index}-*")
        assert doc["_id"] == doc["id"] == event_id
        assert doc["kind"] == "error"
        assert doc["level"] == "error"
        assert doc["event"] == "ZeroDivisionError: division by zero"
        assert doc["source"] == "sentry"
        assert doc["host"] == "web9"
        stamp = doc["@timestamp"]
        assert stamp.endswith("Z")
        seconds = calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
        assert before - 2 <= seconds <= time.time() + 1
        es.delete_index(f"{index}-*")
