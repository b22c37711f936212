"""Tests for obsd.codecs.esbulk, with response bodies recorded from OpenSearch 2.19.1."""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from obsd.codecs import esbulk
from obsd.codecs.esbulk import OK, REJECT, RETRY, ItemOutcome

DATA = Path(__file__).resolve().parent.parent / "data" / "es"

# 2025-11-24T16:00:00Z
NOON = 1764000000.0


def recorded(name: str) -> bytes:
    return (DATA / name).read_bytes()


def lines_of(data: bytes) -> list[Any]:
    assert data.endswith(b"\n")
    return [json.loads(line) for line in data.decode().splitlines()]


class TestFormatTimestamp:
    @pytest.mark.parametrize(
        ("timestamp", "expected"),
        [
            (0.0, "1970-01-01T00:00:00.000000Z"),
            (NOON, "2025-11-24T16:00:00.000000Z"),
            (NOON + 0.25, "2025-11-24T16:00:00.250000Z"),
            (NOON + 0.123456, "2025-11-24T16:00:00.123456Z"),
            (NOON + 0.9999996, "2025-11-24T16:00:01.000000Z"),
            (-0.5, "1969-12-31T23:59:59.500000Z"),
            (253402300799.0, "9999-12-31T23:59:59.000000Z"),
        ],
    )
    def test_rfc3339_utc_micros(self, timestamp: float, expected: str) -> None:
        """Epoch seconds become RFC 3339 UTC with six fractional digits and a Z."""
        assert esbulk.format_timestamp(timestamp) == expected

    def test_agrees_with_datetime(self) -> None:
        """The cached formatter spells the same instant as datetime does."""
        stamp = esbulk.format_timestamp(NOON + 3661.5)
        assert datetime.fromisoformat(stamp) == datetime.fromtimestamp(NOON + 3661.5, UTC)


class TestEventTime:
    @pytest.mark.parametrize(
        ("event", "expected"),
        [
            ({"timestamp": NOON, "received_at": 1.0}, NOON),
            ({"timestamp": 5, "received_at": 1.0}, 5.0),
            ({"received_at": NOON}, NOON),
            ({"timestamp": math.nan, "received_at": NOON}, NOON),
            ({"timestamp": math.inf, "received_at": NOON}, NOON),
            ({"timestamp": True, "received_at": NOON}, NOON),
            ({"timestamp": "1764000000", "received_at": NOON}, NOON),
            ({"timestamp": 1e20, "received_at": NOON}, NOON),
        ],
    )
    def test_own_time_first(self, event: dict[str, Any], expected: float) -> None:
        """The event's timestamp wins; an unusable one falls back to received_at."""
        assert esbulk.event_time(event) == expected

    def test_now_when_nothing_usable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """With neither time usable the document is stamped now."""
        monkeypatch.setattr(time, "time", lambda: 42.0)
        assert esbulk.event_time({"timestamp": None}) == 42.0


class TestIndexName:
    @pytest.mark.parametrize(
        ("pattern", "timestamp", "expected"),
        [
            (esbulk.DEFAULT_INDEX, NOON, "obsd-2025.11.24"),
            (esbulk.DEFAULT_INDEX, NOON + 8 * 3600 - 0.001, "obsd-2025.11.24"),
            (esbulk.DEFAULT_INDEX, NOON + 8 * 3600, "obsd-2025.11.25"),
            ("logs-%Y.%m.%d-%H", NOON + 3599, "logs-2025.11.24-16"),
            ("logs-%Y.%m.%d-%H", NOON + 3600, "logs-2025.11.24-17"),
            ("logs-%H%M", NOON + 61, "logs-1601"),
            ("obsd-%b-%Y", NOON, "obsd-nov-2025"),
            ("obsd-%G.%V", NOON, "obsd-2025.48"),
            ("OBSD-Logs", NOON, "obsd-logs"),
        ],
    )
    def test_strftime_on_utc(self, pattern: str, timestamp: float, expected: str) -> None:
        """The pattern is applied to the event's own UTC time and lower-cased."""
        assert esbulk.index_name(pattern, timestamp) == expected

    def test_cached_per_day(self) -> None:
        """Every second of one day gives the very same cached name object."""
        first = esbulk.index_name("cache-%Y.%m.%d", NOON)
        assert esbulk.index_name("cache-%Y.%m.%d", NOON + 1234.5) is first

    @pytest.mark.parametrize("timestamp", [math.nan, math.inf, -math.inf, 1e20, -1e20])
    def test_unusable_time_raises(self, timestamp: float) -> None:
        """A time no calendar can spell is refused instead of naming a wrong index."""
        with pytest.raises(ValueError, match="out of range"):
            esbulk.index_name(esbulk.DEFAULT_INDEX, timestamp)


class TestIndexGlob:
    @pytest.mark.parametrize(
        ("pattern", "expected"),
        [
            ("obsd-%Y.%m.%d", "obsd-*"),
            ("Logs-%Y", "logs-*"),
            ("obsd-logs", "obsd-logs*"),
            ("%Y.%m-obsd", "*.*-obsd"),
            ("%Y%m%d-obsd", "*-obsd"),
        ],
    )
    def test_glob(self, pattern: str, expected: str) -> None:
        """The glob matches every index the pattern names, and never just '*'."""
        assert esbulk.index_glob(pattern) == expected


class TestEncodeDocument:
    def test_shape(self) -> None:
        """@timestamp replaces timestamp, received_at is RFC 3339, private keys go."""
        event = {
            "id": "e1",
            "event": "hello",
            "level": "info",
            "timestamp": NOON + 0.5,
            "received_at": NOON + 1,
            "_raw": b"secret",
            "tags": {"a": "b"},
        }
        assert esbulk.encode_document(event) == {
            "@timestamp": "2025-11-24T16:00:00.500000Z",
            "id": "e1",
            "event": "hello",
            "level": "info",
            "received_at": "2025-11-24T16:00:01.000000Z",
            "tags": {"a": "b"},
        }
        assert event["timestamp"] == NOON + 0.5  # the event itself is untouched

    def test_sender_private_spelling_is_kept(self) -> None:
        """Only top-level private keys go; keep_reserved_safe's data._x survives."""
        document = esbulk.encode_document({"timestamp": NOON, "data._x": 1, "nested": {"_y": 2}})
        assert document["data._x"] == 1
        assert document["nested"] == {"_y": 2}

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (math.nan, None),
            (math.inf, None),
            (-math.inf, None),
            ([1.0, math.nan], [1.0, None]),
            ({"deep": {"x": math.inf}}, {"deep": {"x": None}}),
            ((1, 2), [1, 2]),
            (b"caf\xc3\xa9\xff", "café\ufffd"),
            (datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC), "2025-01-02T03:04:05+00:00"),
            ({1: "one"}, {"1": "one"}),
            (ValueError("boom"), "boom"),
            (1.5, 1.5),
            (True, True),
        ],
    )
    def test_json_safe_values(self, value: Any, expected: Any) -> None:
        """Values JSON cannot carry become null, strings or lists."""
        document = esbulk.encode_document({"timestamp": NOON, "field": value})
        assert document["field"] == expected
        json.dumps(document, allow_nan=False)

    def test_set_becomes_list(self) -> None:
        """A set is written as a list of its members."""
        assert sorted(esbulk.encode_document({"timestamp": NOON, "s": {"b", "a"}})["s"]) == [
            "a",
            "b",
        ]


class TestEncodeBulkLines:
    def test_index_action(self) -> None:
        """An index action with the event id, then the document, each line ending in \\n."""
        data = esbulk.encode_bulk_lines(
            {"id": "e1", "timestamp": NOON, "event": "x"}, "obsd-2025.11.24", False
        )
        assert data.count(b"\n") == 2
        action, source = lines_of(data)
        assert action == {"index": {"_index": "obsd-2025.11.24", "_id": "e1"}}
        assert source == {"@timestamp": "2025-11-24T16:00:00.000000Z", "id": "e1", "event": "x"}

    def test_data_stream_creates(self) -> None:
        """Data streams only take op_type create."""
        action, _ = lines_of(
            esbulk.encode_bulk_lines({"id": "e1", "timestamp": NOON}, "obsd-logs", True)
        )
        assert action == {"create": {"_index": "obsd-logs", "_id": "e1"}}

    @pytest.mark.parametrize("event_id", [None, "", 17])
    def test_no_usable_id(self, event_id: Any) -> None:
        """Without a string id the cluster chooses one (no _id in the action)."""
        action, _ = lines_of(
            esbulk.encode_bulk_lines({"id": event_id, "timestamp": NOON}, "i", False)
        )
        assert action == {"index": {"_index": "i"}}

    def test_escapes_index_and_id(self) -> None:
        """Quotes and backslashes in the index or id stay valid JSON."""
        action, _ = lines_of(
            esbulk.encode_bulk_lines({"id": 'a"b\\c', "timestamp": NOON}, 'x"y', False)
        )
        assert action == {"index": {"_index": 'x"y', "_id": 'a"b\\c'}}

    def test_same_as_encode_document(self) -> None:
        """The fast path and the cleaning path write the same document."""
        event = {
            "id": "e",
            "timestamp": NOON,
            "bad": math.nan,
            "b": b"x",
            "nested": {(1, 2): "tuple key"},
        }
        _, source = lines_of(esbulk.encode_bulk_lines(event, "i", False))
        assert source == esbulk.encode_document(event)
        assert source["bad"] is None
        assert source["nested"] == {"(1, 2)": "tuple key"}

    def test_integer_beyond_64_bits(self) -> None:
        """orjson refuses integers past 64 bits; the standard encoder writes them exactly."""
        _, source = lines_of(
            esbulk.encode_bulk_lines({"id": "e", "timestamp": NOON, "big": 2**70}, "i", False)
        )
        assert source["big"] == 2**70

    def test_datetimes_spelled_like_the_cleaning_path(self) -> None:
        """A datetime value is written as encode_document writes it (isoformat)."""
        import datetime

        when = datetime.datetime(2025, 11, 24, 16, 0, tzinfo=datetime.UTC)
        event = {"id": "e", "timestamp": NOON, "at": when}
        _, source = lines_of(esbulk.encode_bulk_lines(event, "i", False))
        assert source["at"] == esbulk.encode_document(event)["at"] == when.isoformat()

    def test_utf8_and_lone_surrogates(self) -> None:
        """Text is UTF-8 (not \\u escapes); a lone surrogate becomes '?' rather than raising."""
        data = esbulk.encode_bulk_lines(
            {"id": "e", "timestamp": NOON, "m": "café \udcff"}, "i", False
        )
        assert "café ?".encode() in data
        data.decode("utf-8")


def outcomes_of(name: str, count: int) -> list[tuple[str, int, str]]:
    return [
        (o.result, o.status, o.error_type)
        for o in esbulk.classify_bulk_response(recorded(name), count)
    ]


class TestClassifyRecorded:
    @pytest.mark.parametrize(
        ("name", "count", "expected"),
        [
            ("bulk_ok.json", 2, [(OK, 200, ""), (OK, 200, "")]),
            (
                "bulk_mapping_conflict.json",
                2,
                [(REJECT, 400, "mapper_parsing_exception"), (OK, 201, "")],
            ),
            (
                "bulk_create_conflict.json",
                2,
                [(OK, 409, "version_conflict_engine_exception"), (OK, 201, "")],
            ),
            (
                "bulk_read_only_allow_delete.json",
                2,
                [(RETRY, 429, "cluster_block_exception")] * 2,
            ),
            ("bulk_write_block.json", 2, [(RETRY, 403, "cluster_block_exception")] * 2),
            (
                "bulk_data_stream.json",
                4,
                [
                    (OK, 201, ""),
                    (OK, 409, "version_conflict_engine_exception"),
                    (REJECT, 400, "illegal_argument_exception"),
                    (REJECT, 400, "mapper_parsing_exception"),
                ],
            ),
            ("bulk_malformed_source.json", 1, [(REJECT, 400, "mapper_parsing_exception")]),
            ("bulk_index_closed.json", 2, [(REJECT, 400, "index_closed_exception")] * 2),
            ("bulk_invalid_index_name.json", 1, [(REJECT, 400, "invalid_index_name_exception")]),
            (
                "request_read_only_allow_delete_429.json",
                3,
                [(RETRY, 429, "cluster_block_exception")] * 3,
            ),
            ("request_bad_action_400.json", 2, [(REJECT, 400, "illegal_argument_exception")] * 2),
        ],
    )
    def test_recorded_response(
        self, name: str, count: int, expected: list[tuple[str, int, str]]
    ) -> None:
        """Each recorded node answer gives one verdict per document, in order."""
        assert outcomes_of(name, count) == expected

    def test_reason_includes_cause(self) -> None:
        """A rejection carries ES's type, reason and first cause for the dead-letter file."""
        rejected = esbulk.classify_bulk_response(recorded("bulk_mapping_conflict.json"), 2)[0]
        assert rejected.reason == (
            "mapper_parsing_exception: failed to parse field [n] of type [long] in document "
            "with id 'm1'. Preview of field's value: 'not-a-number'; caused by "
            'illegal_argument_exception: For input string: "not-a-number"'
        )

    def test_block_reason(self) -> None:
        """The flood-stage block's reason names the read-only-allow-delete block."""
        outcome = esbulk.classify_bulk_response(recorded("bulk_read_only_allow_delete.json"), 2)[0]
        assert "TOO_MANY_REQUESTS/12/disk usage exceeded flood-stage watermark" in outcome.reason


class TestClassifyOdd:
    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            (
                b"",
                ItemOutcome(
                    RETRY, 0, "unreadable bulk response: Expecting value: line 1 column 1 (char 0)"
                ),
            ),
            (b"<html>502 Bad Gateway</html>", None),
            (b"\xff\xfe", None),
            (b"[1, 2]", ItemOutcome(RETRY, 0, "bulk response is not a JSON object")),
            (b'{"took": 1}', ItemOutcome(RETRY, 0, "bulk response has no items")),
        ],
    )
    def test_unreadable_means_retry(self, body: bytes, expected: ItemOutcome | None) -> None:
        """A body that is not a bulk response retries every document."""
        outcomes = esbulk.classify_bulk_response(body, 2)
        assert len(outcomes) == 2
        assert {o.result for o in outcomes} == {RETRY}
        if expected is not None:
            assert outcomes == [expected, expected]

    @pytest.mark.parametrize(
        ("status", "result"),
        [
            (429, RETRY),
            (500, RETRY),
            (503, RETRY),
            (400, REJECT),
            (401, REJECT),
            (413, REJECT),
            (404, REJECT),
        ],
    )
    def test_whole_request_error(self, status: int, result: str) -> None:
        """A whole-request error applies its status to every document."""
        body = json.dumps({"error": {"type": "x", "reason": "y"}, "status": status}).encode()
        assert (
            esbulk.classify_bulk_response(body, 2) == [ItemOutcome(result, status, "x: y", "x")] * 2
        )

    def test_missing_items_retry(self) -> None:
        """Documents the response leaves out are retried; extra items are ignored."""
        body = b'{"took":1,"errors":true,"items":[{"index":{"status":201}}]}'
        assert [o.result for o in esbulk.classify_bulk_response(body, 3)] == [OK, RETRY, RETRY]
        assert [o.result for o in esbulk.classify_bulk_response(body, 0)] == []

    @pytest.mark.parametrize(
        ("item", "expected"),
        [
            ({"index": {}}, ItemOutcome(RETRY, 0, "no status in bulk response item")),
            ({}, ItemOutcome(RETRY, 0, "unreadable bulk response item")),
            ("nonsense", ItemOutcome(RETRY, 0, "unreadable bulk response item")),
            ({"index": {"status": 503, "error": "gone"}}, ItemOutcome(RETRY, 503, "gone")),
            (
                {"index": {"status": "200"}},
                ItemOutcome(RETRY, 0, "no status in bulk response item"),
            ),
            (
                {"create": {"status": 409, "error": {"type": "other"}}},
                ItemOutcome(REJECT, 409, "other: ", "other"),
            ),
        ],
    )
    def test_odd_items(self, item: Any, expected: ItemOutcome) -> None:
        """Items without a usable status retry; odd error shapes still give a reason."""
        body = json.dumps({"took": 1, "errors": True, "items": [item]}).encode()
        assert esbulk.classify_bulk_response(body, 1) == [expected]

    def test_errors_false_is_not_walked(self) -> None:
        """An errors:false response is all OK without reading its items."""
        body = b'{"took":3,"errors":false,"items":' + b"garbage"
        assert esbulk.classify_bulk_response(body, 4) == [ItemOutcome(OK, 200)] * 4


class TestIndexTemplate:
    def test_mappings(self) -> None:
        """The template maps the schema's keys for Kibana-style searching."""
        template = esbulk.index_template()
        assert template["index_patterns"] == ["obsd-*"]
        properties = template["template"]["mappings"]["properties"]
        assert properties["@timestamp"] == {"type": "date"}
        for key in ("level", "kind", "source", "host"):
            assert properties[key]["type"] == "keyword"
        assert properties["event"]["type"] == "text"
        assert properties["event"]["fields"]["keyword"]["type"] == "keyword"
        assert "data_stream" not in template

    def test_data_stream(self) -> None:
        """In data-stream mode the template declares the stream and matches its name."""
        template = esbulk.index_template("obsd-logs", data_stream=True, priority=150)
        assert template["data_stream"] == {}
        assert template["index_patterns"] == ["obsd-logs*"]
        assert template["priority"] == 150
