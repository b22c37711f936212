"""The sending side of Sentry's wire format: DSNs, auth, envelopes, rate limits, log events."""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import brotli  # type: ignore[import-untyped]
import pytest

from obsd import events
from obsd.codecs import sentry_encode as enc
from obsd.codecs.sentry import EnvelopeItem, parse_envelope
from obsd.codecs.sentry_body import decode_body
from obsd.errors import ParseError

KEY = "a" * 32


class TestDsn:
    def test_parts(self) -> None:
        """A DSN gives the upstream URL per endpoint, key, secret and public form."""
        dsn = enc.parse_dsn(f"https://{KEY}:s3cret@sentry.example.com:8443/sub/42")
        assert dsn.url("envelope") == "https://sentry.example.com:8443/sub/api/42/envelope/"
        assert dsn.url("store") == "https://sentry.example.com:8443/sub/api/42/store/"
        assert (dsn.key, dsn.secret, dsn.project_id) == (KEY, "s3cret", 42)
        assert dsn.public == f"https://{KEY}@sentry.example.com:8443/sub/42"

    @pytest.mark.parametrize(
        "text",
        [
            f"ftp://{KEY}@h/1",
            "https://h/1",
            "https://short@h/1",
            f"https://{KEY}@h/",
            f"https://{KEY}@h/abc",
            f"https://{KEY}@h:x/1",
        ],
    )
    def test_bad(self, text: str) -> None:
        """Malformed DSNs are refused with a reason that never shows the key."""
        with pytest.raises(ParseError) as info:
            enc.parse_dsn(text)
        assert KEY not in str(info.value)

    def test_auth_header(self) -> None:
        """X-Sentry-Auth carries the upstream key, protocol 7 and the client's name."""
        assert enc.auth_header(KEY, "raven-python/6.10.0") == (
            f"Sentry sentry_key={KEY}, sentry_version=7, sentry_client=raven-python/6.10.0"
        )


class TestBodies:
    @pytest.mark.parametrize("encoding", ["", "gzip", "deflate", "br"])
    def test_round_trip(self, encoding: str) -> None:
        """What encode_body compresses, the ingest's decode_body reads back."""
        data = b'{"x": 1}' * 50
        assert decode_body(enc.encode_body(data, encoding), encoding, 10**6) == data

    def test_brotli_module(self) -> None:
        """br bodies are real brotli."""
        assert brotli.decompress(enc.encode_body(b"abc", "br")) == b"abc"

    def test_unknown_encoding(self) -> None:
        """An encoding obsd cannot write is a ParseError."""
        with pytest.raises(ParseError):
            enc.encode_body(b"x", "compress")

    def test_envelope_round_trip(self) -> None:
        """encode_envelope writes what parse_envelope reads, with lengths."""
        items = [EnvelopeItem({"type": "event"}, b'{"a":1}'), EnvelopeItem({"type": "x"}, b"\n\0")]
        data = enc.encode_envelope({"event_id": "e" * 32}, items)
        parsed = parse_envelope(data)
        assert parsed.headers == {"event_id": "e" * 32}
        assert [(i.type, i.payload) for i in parsed.items] == [("event", b'{"a":1}'), ("x", b"\n\0")]

    def test_replace_header_keeps_items(self) -> None:
        """Replacing the header line leaves every item byte for byte."""
        data = b'{"dsn":"old"}\n{"type":"event"}\n{"a":1}\n'
        assert enc.replace_envelope_header(data, {"dsn": "new"}) == (
            b'{"dsn":"new"}\n{"type":"event"}\n{"a":1}\n'
        )

    def test_gzip_is_deterministic(self) -> None:
        """Re-compressed gzip carries no timestamp, so a retry sends the same bytes."""
        assert enc.encode_body(b"x", "gzip") == enc.encode_body(b"x", "gzip")
        assert gzip.decompress(enc.encode_body(b"x", "gzip")) == b"x"
        assert zlib.decompress(enc.encode_body(b"x", "deflate")) == b"x"


class TestCategories:
    @pytest.mark.parametrize(
        ("item_type", "category"),
        [
            ("event", "error"),
            ("transaction", "transaction"),
            ("attachment", "attachment"),
            ("session", "session"),
            ("sessions", "session"),
            ("client_report", "internal"),
            ("check_in", "monitor"),
            ("log", "log_item"),
            ("something_new", "default"),
        ],
    )
    def test_item(self, item_type: str, category: str) -> None:
        """Item types map to Sentry's data categories as the SDKs map them."""
        assert enc.item_category(item_type) == category

    @pytest.mark.parametrize(
        ("payload", "category"),
        [({}, "error"), ({"type": "transaction"}, "transaction"), ({"type": "csp"}, "security")],
    )
    def test_store(self, payload: dict[str, Any], category: str) -> None:
        """A store payload is an error unless its type says otherwise."""
        assert enc.store_category(payload) == category


class TestRateLimits:
    @pytest.mark.parametrize(
        ("header", "limits"),
        [
            ("60:transaction:key", {"transaction": 60.0}),
            (
                "2700:default;error;security:organization, 60:transaction:key",
                {"default": 2700.0, "error": 2700.0, "security": 2700.0, "transaction": 60.0},
            ),
            ("30::organization:quota_exceeded", {"": 30.0}),
            ("10:error:key, 20:error:org", {"error": 20.0}),
            ("nonsense, x:error:key, 5:attachment", {"attachment": 5.0}),
            ("", {}),
        ],
    )
    def test_header(self, header: str, limits: dict[str, float]) -> None:
        """X-Sentry-Rate-Limits is read per category; '' means every category."""
        assert enc.parse_rate_limits(header) == limits

    @pytest.mark.parametrize(
        ("status", "header", "retry_after", "limits"),
        [
            (429, None, "17", {"": 17.0}),
            (429, None, None, {"": 60.0}),
            (429, "5:error:key", "99", {"error": 5.0}),
            (200, "5:session:key", None, {"session": 5.0}),
            (200, None, None, {}),
            (503, None, "10", {}),
        ],
    )
    def test_answer(
        self, status: int, header: str | None, retry_after: str | None, limits: dict[str, float]
    ) -> None:
        """The rate-limit header wins on any answer; a bare 429 holds all for Retry-After."""
        assert enc.rate_limits_from_answer(status, header, retry_after, 0.0) == limits

    def test_http_date(self) -> None:
        """Retry-After may be an HTTP date."""
        assert enc.parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", 40.0) == 60.0


class TestLogEvents:
    def test_fields(self) -> None:
        """Message, level, logger, server name, tags and extra come from the event."""
        payload = enc.log_event_payload(
            {
                "id": "0" * 31 + "1",
                "kind": "log",
                "event": "db down",
                "level": "critical",
                "timestamp": 12.5,
                "host": "web1",
                "appname": "shop",
                "source": "syslog",
                "region": "eu",
                "attempt": 3,
                "_private": 1,
            },
            tag_fields=["region"],
        )
        assert payload["event_id"] == "0" * 31 + "1"
        assert payload["level"] == events.LEVEL_SENTRY["critical"] == "fatal"
        assert payload["logentry"] == {"formatted": "db down"}
        assert (payload["logger"], payload["server_name"]) == ("shop", "web1")
        assert payload["timestamp"] == 12.5
        assert payload["tags"] == {"region": "eu"}
        assert payload["extra"] == {"source": "syslog", "attempt": 3}

    def test_envelope(self) -> None:
        """A log event's envelope names the upstream DSN and holds one event item."""
        dsn = enc.parse_dsn(f"https://{KEY}@up.example/3")
        payload = enc.log_event_payload({"event": "x", "level": "error"})
        envelope = parse_envelope(enc.log_event_envelope(payload, dsn, "2026-01-01T00:00:00Z"))
        assert envelope.dsn == dsn.public
        assert envelope.event_id == payload["event_id"]
        (item,) = envelope.items
        assert item.type == "event"
        assert json.loads(item.payload)["logentry"] == {"formatted": "x"}

    def test_unreadable_traceback_kept_in_extra(self) -> None:
        """Exception text that is no traceback stays visible in extra."""
        payload = enc.log_event_payload({"event": "x", "exception": "oops"})
        assert "exception" not in payload
        assert payload["extra"] == {"exception": "oops"}
