"""The Sentry codec on the exact requests raven 6.10 and sentry-sdk make.

The bodies under tests/data/sentry/ come from the real clients (see record.py
there); ids and timestamps change each time they are recorded, so the tests
read those from the payloads and pin everything else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from obsd.codecs.scrub import Scrubber
from obsd.codecs.sentry import (
    ENVELOPE_CONTENT_TYPE,
    MAX_ENVELOPE_BYTES,
    MAX_EVENT_BYTES,
    SentryAuth,
    parse_envelope,
    parse_json,
)
from obsd.codecs.sentry_auth import parse_auth
from obsd.codecs.sentry_body import decode_body
from obsd.codecs.sentry_fields import envelope_event_fields, error_event_fields, parse_timestamp

DATA = Path(__file__).resolve().parent.parent / "data" / "sentry"
MANIFEST = json.loads((DATA / "manifest.json").read_text())
KEY = MANIFEST["public_key"]
SECRET = MANIFEST["secret_key"]
PROJECT = MANIFEST["project_id"]
RAVEN = sorted(case for case in MANIFEST["cases"] if case.startswith("raven_"))
SDK = sorted(case for case in MANIFEST["cases"] if case.startswith("sdk_"))


def request(case: str) -> tuple[dict[str, str], bytes]:
    """The recorded headers and body of ``case``."""
    return MANIFEST["cases"][case]["headers"], (DATA / f"{case}.body").read_bytes()


def decoded(case: str) -> bytes:
    """The body of ``case`` after Content-Encoding."""
    headers, body = request(case)
    limit = (
        MAX_ENVELOPE_BYTES
        if headers["Content-Type"] == ENVELOPE_CONTENT_TYPE
        else MAX_EVENT_BYTES
    )
    return decode_body(body, headers.get("Content-Encoding"), limit)


def fields_of(case: str) -> list[dict[str, Any]]:
    """What obsd makes of ``case``: one field dict per event."""
    headers, _ = request(case)
    if headers["Content-Type"] == ENVELOPE_CONTENT_TYPE:
        return envelope_event_fields(parse_envelope(decoded(case)), PROJECT)
    return [error_event_fields(parse_json(decoded(case)), PROJECT)]


class TestRecordedRequests:
    @pytest.mark.parametrize("case", RAVEN + SDK)
    def test_auth(self, case: str) -> None:
        """Every recorded request authenticates with the fixture key."""
        headers, _ = request(case)
        auth = parse_auth(headers, {})
        assert auth.key == KEY
        assert auth.secret == (
            SECRET if "secret" in case or case == "raven_exception" else None
        )
        assert auth.version == (6 if case.startswith("raven_") else 7)

    @pytest.mark.parametrize(
        ("case", "encoding"),
        [
            ("raven_exception", "deflate"),
            ("raven_legacy_base64", None),
            ("sdk_exception", "br"),
            ("sdk_exception_gzip", "gzip"),
            ("sdk_message", None),
        ],
    )
    def test_encodings_recorded(self, case: str, encoding: str | None) -> None:
        """The fixtures cover deflate, base64 zlib, br, gzip and no compression."""
        headers, body = request(case)
        assert headers.get("Content-Encoding") == encoding
        assert decoded(case) != body or encoding is None
        assert decoded(case).lstrip()[:1] == b"{"

    def test_legacy_base64_is_raven_message(self) -> None:
        """The older base64-of-zlib form decodes to the same event as the deflate one."""
        assert decoded("raven_legacy_base64") == decoded("raven_message")


class TestRavenEvents:
    def test_exception(self) -> None:
        """captureException gives type, value, and the real traceback innermost last."""
        payload = parse_json(decoded("raven_exception"))
        (fields,) = fields_of("raven_exception")
        extra = fields.pop("extra")
        assert fields == {
            "kind": "error",
            "id": payload["event_id"],
            "level": "error",
            "event": "ZeroDivisionError: division by zero",
            "timestamp": parse_timestamp(payload["timestamp"]),
            "exception_type": "ZeroDivisionError",
            "exception_value": "division by zero",
            "frames": [
                f"__main__:{frame['function']}:{frame['lineno']}"
                for frame in payload["exception"]["values"][-1]["stacktrace"]["frames"]
            ],
            "release": "1.2.3",
            "environment": "test",
            "platform": "python",
            "server_name": "web-1",
            "host": "web-1",
            "sdk": "raven-python",
            "tags": {"region": "eu"},
            "user_id": "user-7",
            "project_id": PROJECT,
        }
        assert [frame.split(":")[1] for frame in fields["frames"]] == [
            "record_raven",
            "load_orders",
            "inner_ratio",
        ]
        assert SECRET in json.dumps(extra["sys.argv"])

    @pytest.mark.parametrize(
        ("case", "event", "level", "extra_fields"),
        [
            ("raven_message", "disk almost full", "warning", {}),
            ("raven_legacy_base64", "disk almost full", "warning", {}),
            (
                "raven_message_secret",
                "cache warmed in '1.5' s",
                "info",
                {"user_id": "user-7"},
            ),
            (
                "raven_logging",
                "invoice INV-9 failed for acme",
                "error",
                {"logger": "billing.jobs"},
            ),
        ],
    )
    def test_messages(
        self, case: str, event: str, level: str, extra_fields: dict[str, Any]
    ) -> None:
        """captureMessage and the logging handler give the formatted message and level."""
        payload = parse_json(decoded(case))
        (fields,) = fields_of(case)
        fields.pop("extra")
        assert fields == {
            "kind": "error",
            "id": payload["event_id"],
            "level": level,
            "event": event,
            "timestamp": parse_timestamp(payload["timestamp"]),
            "release": "1.2.3",
            "environment": "test",
            "platform": "python",
            "server_name": "web-1",
            "host": "web-1",
            "sdk": "raven-python",
            "tags": {"region": "eu"},
            "project_id": PROJECT,
            **extra_fields,
        }

    def test_logging_exception(self) -> None:
        """logger.exception keeps the log message as event and the exception beside it."""
        (fields,) = fields_of("raven_logging_exc")
        assert fields["event"] == "lookup failed"
        assert (fields["exception_type"], fields["exception_value"]) == (
            "KeyError",
            "'missing'",
        )
        assert fields["frames"][-1].startswith("__main__:record_raven:")
        assert fields["logger"] == "billing.jobs"

    def test_secret_scrubbed_for_other_outputs(self) -> None:
        """The DSN secret raven copies into extra["sys.argv"] is gone after scrubbing."""
        (fields,) = fields_of("raven_exception")
        scrubbed = Scrubber().scrub(fields)
        assert SECRET not in json.dumps(scrubbed)
        assert (
            f"http://{KEY}:[Filtered]@127.0.0.1:9/42"
            in scrubbed["extra"]["sys.argv"][2]
        )
        assert SECRET in json.dumps(fields)  # the Sentry-bound original is untouched


class TestSentrySdkEvents:
    @pytest.mark.parametrize("case", ["sdk_exception", "sdk_exception_gzip"])
    def test_exception(self, case: str) -> None:
        """capture_exception gives one error event with the SDK's event id."""
        envelope = parse_envelope(decoded(case))
        payload = json.loads(envelope.items[0].payload)
        (fields,) = fields_of(case)
        assert fields == {
            "kind": "error",
            "id": envelope.event_id,
            "level": "error",
            "event": "ValueError: invalid literal for int() with base 10: 'forty-two'",
            "timestamp": parse_timestamp(payload["timestamp"]),
            "exception_type": "ValueError",
            "exception_value": "invalid literal for int() with base 10: 'forty-two'",
            "frames": [
                f"__main__:{frame['function']}:{frame['lineno']}"
                for frame in payload["exception"]["values"][-1]["stacktrace"]["frames"]
            ],
            "release": "2.0.0",
            "environment": "prod",
            "platform": "python",
            "server_name": "api-3",
            "host": "api-3",
            "sdk": "sentry.python",
            "tags": {"region": "us"},
            "user_id": "user-42",
            "project_id": PROJECT,
        }
        assert fields["frames"][-1].startswith("__main__:parse_order:")

    def test_message(self) -> None:
        """capture_message gives its text and level."""
        (fields,) = fields_of("sdk_message")
        assert (fields["event"], fields["level"], fields["kind"]) == (
            "queue is backing up",
            "warning",
            "error",
        )

    def test_transaction(self) -> None:
        """A transaction with two spans becomes one sentry event named after it."""
        envelope = parse_envelope(decoded("sdk_transaction"))
        (item,) = envelope.items
        payload = json.loads(item.payload)
        (fields,) = fields_of("sdk_transaction")
        end = parse_timestamp(payload["timestamp"])
        start = parse_timestamp(payload["start_timestamp"])
        assert end is not None
        assert start is not None
        duration = end - start
        assert fields == {
            "kind": "sentry",
            "event": "GET /orders",
            "level": "info",
            "item_type": "transaction",
            "size": len(item.payload),
            "id": envelope.event_id,
            "transaction": "GET /orders",
            "op": "http.server",
            "trace_id": payload["contexts"]["trace"]["trace_id"],
            "duration_ms": round(duration * 1000, 3),
            "span_count": 2,
            "release": "2.0.0",
            "environment": "prod",
            "platform": "python",
            "server_name": "api-3",
            "timestamp": parse_timestamp(payload["timestamp"]),
            "project_id": PROJECT,
        }

    def test_attachment(self) -> None:
        """An event with an attachment gives an error event and an attachment event."""
        envelope = parse_envelope(decoded("sdk_attachment"))
        error, attachment = fields_of("sdk_attachment")
        assert (error["kind"], error["event"], error["id"]) == (
            "error",
            "order stuck",
            envelope.event_id,
        )
        assert attachment == {
            "kind": "sentry",
            "event": "sentry.attachment",
            "level": "info",
            "item_type": "attachment",
            "size": 21,
            "id": envelope.event_id,
            "filename": "state.txt",
            "content_type": "text/plain",
            "project_id": PROJECT,
        }
        assert envelope.items[1].payload == b"order=17\nstate=stuck\n"

    def test_session(self) -> None:
        """A session update becomes a sentry event with its status and release."""
        envelope = parse_envelope(decoded("sdk_session"))
        payload = json.loads(envelope.items[0].payload)
        (fields,) = fields_of("sdk_session")
        assert fields == {
            "kind": "sentry",
            "event": "sentry.session",
            "level": "info",
            "item_type": "session",
            "size": len(envelope.items[0].payload),
            "status": "exited",
            "sid": payload["sid"],
            "init": True,
            "release": "2.0.0",
            "environment": "prod",
            "timestamp": parse_timestamp(payload["timestamp"]),
            "project_id": PROJECT,
        }

    @pytest.mark.parametrize("case", SDK)
    def test_items_kept_whole(self, case: str) -> None:
        """Re-serialising the parsed items reproduces the decoded envelope byte for byte."""
        raw = decoded(case)
        envelope = parse_envelope(raw)
        rebuilt = raw[: raw.index(b"\n") + 1] + b"".join(
            json.dumps(item.headers, separators=(",", ":")).encode()
            + b"\n"
            + item.payload
            + b"\n"
            for item in envelope.items
        )
        assert rebuilt == raw

    def test_auth_object(self) -> None:
        """sentry-sdk's header names its client and protocol version 7."""
        headers, _ = request("sdk_message")
        assert parse_auth(headers, {}) == SentryAuth(
            KEY, None, "sentry.python/2.75.0", 7
        )
