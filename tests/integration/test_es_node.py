"""The session's Elasticsearch-API node, and the esbulk codec against what it really answers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from obsd.codecs import esbulk
from tests.integration.fixtures.es import EsClient, EsNode

pytestmark = pytest.mark.integration

BLOCK = "index.blocks.read_only_allow_delete"


@pytest.fixture(name="client")
def _client(es_node: EsNode) -> EsClient:
    return es_node.client


@pytest.fixture(name="index")
def _index(client: EsClient) -> Iterator[str]:
    """A fresh index name for one test, deleted afterwards (the node is shared)."""
    name = f"t-esnode-{uuid.uuid4().hex[:12]}"
    yield name
    client.delete_index(name)  # allowed even under read_only_allow_delete


def _event(event_id: str, text: str = "hello", **extra: object) -> dict[str, object]:
    return {
        "id": event_id,
        "event": text,
        "kind": "log",
        "level": "info",
        "source": "test",
        "host": "h1",
        "timestamp": 1764000000.25,
        "_private": "never indexed",
        **extra,
    }


def _bulk(events: list[dict[str, object]], index: str, data_stream: bool = False) -> bytes:
    return b"".join(esbulk.encode_bulk_lines(event, index, data_stream) for event in events)


class TestNode:
    def test_yellow_on_loopback(self, es_node: EsNode, client: EsClient) -> None:
        """The fixture's node answers on 127.0.0.1 and is at least yellow."""
        assert es_node.url.startswith("http://127.0.0.1:")
        assert client.health()["status"] in ("yellow", "green")

    def test_speaks_the_elasticsearch_api(self, client: EsClient) -> None:
        """The root endpoint reports a 7.10-compatible wire version (OpenSearch 2.x)."""
        status, info = client.request("GET", "/")
        assert status == 200
        assert info["version"]["minimum_wire_compatibility_version"].startswith("7.")

    def test_disk_thresholds_are_off(self, client: EsClient) -> None:
        """Disk watermarks cannot block test indices or lift a test's own block."""
        status, settings = client.request(
            "GET", "/_cluster/settings?include_defaults=true&flat_settings=true"
        )
        assert status == 200
        key = "cluster.routing.allocation.disk.threshold_enabled"
        merged = {**settings["defaults"], **settings["persistent"], **settings["transient"]}
        assert merged[key] == "false"


class TestBulk:
    def test_bulk_document_is_found(self, client: EsClient, index: str) -> None:
        """A document sent with _bulk is found with _search, with @timestamp and no private keys."""
        status, body = client.raw_bulk(_bulk([_event("e1")], index))
        assert status == 200
        assert [o.result for o in esbulk.classify_bulk_response(body, 1)] == [esbulk.OK]
        [hit] = client.search(index, {"term": {"_id": "e1"}})
        assert hit["@timestamp"] == "2025-11-24T16:00:00.250000Z"
        assert hit["event"] == "hello"
        assert "_private" not in hit
        assert "timestamp" not in hit

    def test_replay_does_not_duplicate(self, client: EsClient, index: str) -> None:
        """Sending the same events twice leaves one document per event id."""
        lines = _bulk([_event("a"), _event("b")], index)
        client.raw_bulk(lines)
        _, body = client.raw_bulk(lines)
        assert [o.result for o in esbulk.classify_bulk_response(body, 2)] == [esbulk.OK, esbulk.OK]
        assert client.count(index) == 2

    def test_mapping_conflict_is_rejected_with_reason(self, client: EsClient, index: str) -> None:
        """A field whose type clashes with the mapping is rejected, the other item goes in."""
        client.raw_bulk(_bulk([_event("m0", n=1)], index), refresh=True)
        _, body = client.raw_bulk(_bulk([_event("m1", n="not-a-number"), _event("m2", n=2)], index))
        bad, good = esbulk.classify_bulk_response(body, 2)
        assert (bad.result, bad.status, bad.error_type) == (
            esbulk.REJECT,
            400,
            "mapper_parsing_exception",
        )
        assert "failed to parse field [n]" in bad.reason
        assert good.result == esbulk.OK

    def test_template_maps_the_schema(self, client: EsClient) -> None:
        """The index template maps @timestamp as date, level as keyword, event as text + keyword."""
        prefix = f"t-tpl-{uuid.uuid4().hex[:8]}"
        body = esbulk.index_template(prefix + "-%Y.%m.%d", priority=300)
        assert client.request("PUT", f"/_index_template/{prefix}", body)[0] == 200
        try:
            name = esbulk.index_name(prefix + "-%Y.%m.%d", 1764000000.0)
            client.raw_bulk(_bulk([_event("t1")], name))
            _, mapping = client.request("GET", f"/{name}/_mapping")
            properties = mapping[name]["mappings"]["properties"]
            assert properties["@timestamp"]["type"] == "date"
            assert properties["level"]["type"] == "keyword"
            assert properties["event"]["type"] == "text"
            assert properties["event"]["fields"]["keyword"]["type"] == "keyword"
            client.delete_index(name)
        finally:
            client.request("DELETE", f"/_index_template/{prefix}")


class TestReadOnlyAllowDelete:
    def test_block_answers_429_until_lifted(self, client: EsClient, index: str) -> None:
        """Under read_only_allow_delete each bulk item is a retryable 429; lifting lets them in."""
        client.create_index(index)
        client.put_settings(index, {BLOCK: True})
        lines = _bulk([_event("r1"), _event("r2")], index)

        status, body = client.raw_bulk(lines)
        assert status == 200  # the request succeeds; every item fails
        outcomes = esbulk.classify_bulk_response(body, 2)
        assert {(o.result, o.status, o.error_type) for o in outcomes} == {
            (esbulk.RETRY, 429, "cluster_block_exception")
        }
        assert "read-only-allow-delete block" in outcomes[0].reason

        status, whole = client.request("PUT", f"/{index}/_doc/single", {"a": 1})
        assert status == 429
        assert whole["error"]["type"] == "cluster_block_exception"

        client.put_settings(index, {BLOCK: None})
        status, body = client.raw_bulk(lines)
        assert [o.result for o in esbulk.classify_bulk_response(body, 2)] == [esbulk.OK, esbulk.OK]
        assert client.count(index) == 2
