"""Sentry ingest codec: auth, bodies, JSON, envelopes and event fields."""

from __future__ import annotations

import base64
import gzip
import json
import tracemalloc
import zlib
from typing import Any, ClassVar

import brotli  # type: ignore[import-untyped]
import pytest

from obsd import events
from obsd.codecs.sentry import (
    MAX_EVENT_BYTES,
    Envelope,
    EnvelopeItem,
    SentryAuth,
    SentryRequestError,
    parse_envelope,
    parse_json,
)
from obsd.codecs.sentry_auth import authorize, parse_auth
from obsd.codecs.sentry_body import decode_body
from obsd.codecs.sentry_fields import (
    envelope_event_fields,
    error_event_fields,
    item_event_fields,
    parse_timestamp,
)
from obsd.errors import ParseError

KEY = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
OTHER_KEY = "0f" * 16
SECRET = "5ec2e7f00d5ec2e7f00d5ec2e7f00d12"
EVENT_ID = "9ec79c33ec9942ab8353589fcb2e04dc"


def raises(detail: str) -> Any:
    """Expect a SentryRequestError whose message starts with ``detail``."""
    return pytest.raises(SentryRequestError, match=f"^{detail}")


class TestParseAuth:
    @pytest.mark.parametrize(
        ("headers", "query", "expected"),
        [
            (
                {
                    "X-Sentry-Auth": f"Sentry sentry_key={KEY}, sentry_version=7, sentry_client=sentry.python/2.0"
                },
                {},
                SentryAuth(KEY, None, "sentry.python/2.0", 7),
            ),
            (
                {
                    "x-sentry-auth": "Sentry sentry_timestamp=1.5, sentry_client=raven-python/6.10.0, "
                    f"sentry_version=6, sentry_key={KEY}, sentry_secret={SECRET}"
                },
                {},
                SentryAuth(KEY, SECRET, "raven-python/6.10.0", 6),
            ),
            ({"X-Sentry-Auth": f"sentry_key={KEY}"}, {}, SentryAuth(KEY)),
            (
                {"Authorization": f"Sentry sentry_key={KEY},sentry_version=7"},
                {},
                SentryAuth(KEY, version=7),
            ),
            (
                {},
                {"sentry_key": [KEY], "sentry_version": ["7"]},
                SentryAuth(KEY, version=7),
            ),
            (
                {"X-Sentry-Auth": f"Sentry sentry_key={KEY}, sentry_version=7"},
                {"sentry_key": [KEY]},
                SentryAuth(KEY, version=7),
            ),
            (
                {
                    "Authorization": "Bearer abc",
                    "X-Sentry-Auth": f"Sentry sentry_key={KEY}",
                },
                {},
                SentryAuth(KEY),
            ),
            (
                {"X-Sentry-Auth": f"Sentry sentry_key={KEY}.no-cache"},
                {},
                SentryAuth(f"{KEY}.no-cache"),
            ),
        ],
    )
    def test_sources(
        self, headers: dict[str, str], query: dict[str, list[str]], expected: SentryAuth
    ) -> None:
        """Each place a client may put its key is read, and agreeing sources merge."""
        assert parse_auth(headers, query) == expected

    def test_envelope_dsn(self) -> None:
        """An envelope's dsn authenticates it and names the project."""
        auth = parse_auth({}, {}, f"https://{KEY}@o1.ingest.example/42")
        assert auth == SentryAuth(KEY, project_id=42)

    def test_envelope_dsn_agrees_with_header(self) -> None:
        """A dsn matching the header's key is no conflict."""
        auth = parse_auth(
            {"X-Sentry-Auth": f"Sentry sentry_key={KEY}"}, {}, f"http://{KEY}:@h/7"
        )
        assert (auth.key, auth.project_id) == (KEY, 7)

    @pytest.mark.parametrize(
        ("headers", "query", "dsn", "status", "detail"),
        [
            ({}, {}, None, 401, "missing authorization information"),
            (
                {"Authorization": "Bearer abc"},
                {"other": ["1"]},
                None,
                401,
                "missing authorization information",
            ),
            (
                {"X-Sentry-Auth": "Sentry sentry_version=7"},
                {},
                None,
                401,
                "bad x-sentry-auth header",
            ),
            (
                {"X-Sentry-Auth": f"Sentry sentry_key={KEY}, sentry_version=x"},
                {},
                None,
                401,
                "bad x-sentry-auth",
            ),
            (
                {"X-Sentry-Auth": f"Sentry sentry_key={KEY}"},
                {"sentry_key": [OTHER_KEY]},
                None,
                401,
                "multiple authorization payloads detected",
            ),
            (
                {
                    "X-Sentry-Auth": f"Sentry sentry_key={KEY}",
                    "Authorization": f"Sentry sentry_key={OTHER_KEY}",
                },
                {},
                None,
                401,
                "multiple authorization payloads detected",
            ),
            (
                {},
                {"sentry_key": [KEY, OTHER_KEY]},
                None,
                401,
                "multiple authorization payloads detected",
            ),
            (
                {"X-Sentry-Auth": f"Sentry sentry_key={KEY}"},
                {},
                f"http://{OTHER_KEY}@h/1",
                401,
                "multiple authorization payloads detected",
            ),
            ({}, {}, "not a dsn", 401, "bad envelope authentication header"),
            ({}, {}, f"http://{KEY}@h/", 401, "bad envelope authentication header"),
            (
                {"X-Sentry-Auth": "Sentry sentry_key=short"},
                {},
                None,
                400,
                "bad sentry DSN public key",
            ),
            (
                {},
                {"sentry_key": ["x" * 31 + "!"]},
                None,
                400,
                "bad sentry DSN public key",
            ),
            (
                {"X-Sentry-Auth": f"Sentry sentry_key={KEY}, sentry_version=8"},
                {},
                None,
                400,
                r"unsupported protocol",
            ),
        ],
    )
    def test_refused(
        self,
        headers: dict[str, str],
        query: dict[str, list[str]],
        dsn: str | None,
        status: int,
        detail: str,
    ) -> None:
        """Missing, unparsable, conflicting or malformed auth gets Relay's status and detail."""
        with raises(detail) as info:
            parse_auth(headers, query, dsn)
        assert info.value.status == status
        assert info.value.body()["detail"].startswith(detail.replace("\\", ""))

    def test_is_parse_error(self) -> None:
        """A refused request is a ParseError, the only exception codecs raise."""
        with pytest.raises(ParseError):
            parse_auth({}, {})


class TestDecodeBody:
    PAYLOAD = json.dumps({"event_id": EVENT_ID, "message": "hi"}).encode()

    @pytest.mark.parametrize(
        ("encoding", "encode"),
        [
            (None, lambda b: b),
            ("identity", lambda b: b),
            ("deflate", zlib.compress),
            (
                "Deflate",
                lambda b: zlib.compress(b)[2:-4],
            ),  # raw deflate, no zlib header
            ("gzip", gzip.compress),
            (
                "gzip",
                lambda b: gzip.compress(b[:10]) + gzip.compress(b[10:]),
            ),  # two members
            ("br", brotli.compress),
            (
                None,
                lambda b: base64.b64encode(zlib.compress(b)),
            ),  # older raven, no header
            ("", zlib.compress),  # bare zlib, no header
        ],
    )
    def test_encodings(self, encoding: str | None, encode: Any) -> None:
        """Every encoding raven and sentry-sdk use decodes to the same JSON."""
        assert (
            decode_body(encode(self.PAYLOAD), encoding, MAX_EVENT_BYTES) == self.PAYLOAD
        )

    @pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
    def test_large_body_many_steps(self, encoding: str) -> None:
        """A body decoding to many times the internal step size comes out whole."""
        data = bytes(range(256)) * 2000 + b"".join(
            str(i).encode() for i in range(40000)
        )
        encode = {
            "gzip": gzip.compress,
            "deflate": zlib.compress,
            "br": brotli.compress,
        }
        body = encode[encoding](data)
        assert decode_body(body, encoding, len(data)) == data
        assert decode_body(body, encoding, MAX_EVENT_BYTES) == data

    @pytest.mark.parametrize("encoding", [None, "gzip", "deflate", "br"])
    def test_exact_limit_fits(self, encoding: str | None) -> None:
        """A body exactly at the limit is accepted once decoded."""
        data = b"x" * 1000
        body = {
            None: bytes,
            "gzip": gzip.compress,
            "deflate": zlib.compress,
            "br": brotli.compress,
        }[encoding](data)
        assert decode_body(body, encoding, 1000) == data

    @pytest.mark.parametrize("encoding", [None, "gzip", "deflate", "br"])
    def test_oversize(self, encoding: str | None) -> None:
        """One byte over the limit, raw or decoded, is 413."""
        data = b"x" * 1001
        body = {
            None: bytes,
            "gzip": gzip.compress,
            "deflate": zlib.compress,
            "br": brotli.compress,
        }[encoding](data)
        with raises("request body exceeded the size limit") as info:
            decode_body(body, encoding, 1000)
        assert info.value.status == 413

    def test_oversize_raw_before_decoding(self) -> None:
        """A compressed body larger than the limit is refused without decoding it."""
        with raises("request body exceeded") as info:
            decode_body(b"\x1f\x8b" + b"\0" * 2000, "gzip", 1000)
        assert info.value.status == 413

    def test_envelope_parsing_stops_at_the_item_cap(self) -> None:
        """250,000 one-line items are refused after the cap, not parsed into 250,000 items."""
        from obsd.codecs.sentry import parse_envelope

        data = b"{}\n" + b'{"type":"log"}\n{}\n' * 250_000
        with raises("request body exceeded the size limit") as info:
            parse_envelope(data, max_items=1000)
        assert info.value.status == 413
        assert info.value.causes == ("more than 1000 items",)

    def test_many_gzip_members_cost_linear_work(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """20,000 one-byte gzip members: the input handed to zlib stays linear in the body.

        Decoding used to hand zlib the whole rest of the body for every member (and
        copy it), so this body stalled the reactor for seconds.  The work is counted,
        not timed.
        """
        from obsd.codecs import sentry_body

        fed = [0]
        real = zlib.decompressobj

        class Counting:
            def __init__(self, wbits: int) -> None:
                self._inner = real(wbits)

            def decompress(self, data: bytes, max_length: int = 0) -> bytes:
                fed[0] += len(data)
                return self._inner.decompress(data, max_length)

            def __getattr__(self, name: str) -> object:
                return getattr(self._inner, name)

        monkeypatch.setattr(sentry_body.zlib, "decompressobj", Counting)
        body = b"".join(gzip.compress(b"x", mtime=0) for _ in range(20_000))
        assert decode_body(body, "gzip", MAX_EVENT_BYTES) == b"x" * 20_000
        assert fed[0] < 20 * len(body)

    @pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
    def test_bomb(self, encoding: str, bombs: dict[str, bytes]) -> None:
        """A 64 MiB compression bomb is cut off at the 1 MiB limit with 413.

        The work is bounded by memory, not timed: decoding never holds more than
        a few times the limit (a wall-clock bound would fail on a busy machine).
        """
        tracemalloc.start()
        try:
            with raises("request body exceeded") as info:
                decode_body(bombs[encoding], encoding, MAX_EVENT_BYTES)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert info.value.status == 413
        assert peak < 4 * MAX_EVENT_BYTES

    @pytest.mark.parametrize(
        ("encoding", "body", "cause"),
        [
            ("gzip", gzip.compress(PAYLOAD)[:-12], "truncated gzip data"),
            (
                "gzip",
                b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"\xff" * 8,
                "invalid gzip data",
            ),
            ("gzip", b"\x1f\x8b\x08\x00garbage", "truncated gzip data"),
            (
                "gzip",
                gzip.compress(PAYLOAD) + b"junk",
                "trailing data after gzip stream",
            ),
            ("deflate", zlib.compress(PAYLOAD)[:-6], "truncated deflate data"),
            ("deflate", b"\xff\xfe not deflate", "invalid deflate data"),
            ("br", brotli.compress(PAYLOAD)[:-3], "truncated br data"),
            ("br", b"\xff\xff\xff garbage", "invalid br data"),
            ("compress", PAYLOAD, "unsupported content encoding 'compress'"),
            (
                None,
                base64.b64encode(zlib.compress(PAYLOAD)[:-6]),
                "truncated base64 zlib data",
            ),
        ],
    )
    def test_bad_compression(
        self, encoding: str | None, body: bytes, cause: str
    ) -> None:
        """Truncated, corrupt or unknown compression is a 400 with the cause."""
        with raises("invalid request body") as info:
            decode_body(body, encoding, MAX_EVENT_BYTES)
        assert info.value.status == 400
        assert info.value.causes[0].startswith(cause)

    def test_plain_text_left_for_json(self) -> None:
        """An unencoded body that is neither JSON nor raven's forms is passed through."""
        assert decode_body(b"hello", None, 100) == b"hello"


@pytest.fixture(name="bombs", scope="module")
def _bombs() -> dict[str, bytes]:
    zeros = bytes(64 << 20)
    return {
        "gzip": gzip.compress(zeros, compresslevel=9, mtime=0),
        "deflate": zlib.compress(zeros, 9),
        "br": brotli.compress(zeros, quality=5),
    }


class TestParseJson:
    def test_nan_and_infinity(self) -> None:
        """NaN and Infinity, which Python's json writes, are accepted."""
        value = parse_json(b'{"a": NaN, "b": Infinity, "c": -Infinity}')
        assert value["b"] == float("inf")
        assert value["a"] != value["a"]

    @pytest.mark.parametrize(
        ("body", "detail"),
        [
            (b"", "empty request body"),
            (b"  \n", "empty request body"),
            (b"{", "invalid JSON data"),
            (b"[1, 2]", "invalid JSON data"),
            (b"\xff\xfe", "invalid JSON data"),
            (b"[" * 100000, "invalid JSON data"),
        ],
    )
    def test_malformed(self, body: bytes, detail: str) -> None:
        """Empty, broken or non-object JSON is a 400."""
        with raises(detail) as info:
            parse_json(body)
        assert info.value.status == 400


class TestParseEnvelope:
    def test_length_and_newline_items(self) -> None:
        """Items with a length may hold newlines; items without end at the newline."""
        data = (
            b'{"event_id":"' + EVENT_ID.encode() + b'","dsn":"https://k@h/1"}\n'
            b'{"type":"attachment","length":6,"filename":"a.txt"}\n'
            b"a\nb\nc\n\n"
            b'{"type":"session"}\n'
            b'{"sid":"x","status":"ok"}\n'
            b'{"type":"attachment","length":0}\n'
            b"\n"
            b'{"type":"statsd_future_thing"}\n'
            b"raw bytes"
        )
        envelope = parse_envelope(data)
        assert envelope.event_id == EVENT_ID
        assert envelope.dsn == "https://k@h/1"
        assert [(item.type, item.payload) for item in envelope.items] == [
            ("attachment", b"a\nb\nc\n"),
            ("session", b'{"sid":"x","status":"ok"}'),
            ("attachment", b""),
            ("statsd_future_thing", b"raw bytes"),
        ]

    def test_header_only(self) -> None:
        """An envelope may have no items at all."""
        assert parse_envelope(b"{}\n") == Envelope({}, [])

    def test_payload_at_eof_without_newline(self) -> None:
        """The last length-given payload need not end with a newline."""
        envelope = parse_envelope(b'{}\n{"type":"event","length":2}\n{}')
        assert envelope.items == [EnvelopeItem({"type": "event", "length": 2}, b"{}")]

    @pytest.mark.parametrize(
        ("data", "cause"),
        [
            (b"not json\n", "invalid envelope header"),
            (b"[]\n", "invalid envelope header"),
            (b'{}\n{"type":"event","length":50}\n{}\n', "unexpected end of file"),
            (
                b'{}\n{"type":"event","length":2}\n{}X\n',
                "missing newline after header or payload",
            ),
            (b'{}\n{"length":2}\n{}\n', "invalid item header"),
            (b'{}\n{"type":"event","length":-1}\n{}\n', "invalid item header"),
            (b'{}\n{"type":"event","length":"2"}\n{}\n', "invalid item header"),
            (b"{}\ngarbage\n", "invalid item header"),
            (b"\x00\x01\x02garbage", "invalid envelope header"),
        ],
    )
    def test_garbage(self, data: bytes, cause: str) -> None:
        """Broken framing or headers is 400 ``invalid event envelope`` with Relay's cause."""
        with raises("invalid event envelope") as info:
            parse_envelope(data)
        assert info.value.status == 400
        assert info.value.causes == (cause,)

    def test_empty(self) -> None:
        """An empty body is 400 ``empty request body``."""
        with raises("empty request body"):
            parse_envelope(b"")


class TestErrorEventFields:
    def test_raven_exception(self) -> None:
        """A raven-shaped exception event gives every documented field."""
        payload = {
            "event_id": EVENT_ID,
            "level": 40,
            "timestamp": "2024-05-01T12:00:00Z",
            "message": "ZeroDivisionError: division by zero",
            "culprit": "app.jobs in run",
            "exception": {
                "values": [
                    {"type": "KeyError", "value": "'x'"},
                    {
                        "type": "ZeroDivisionError",
                        "value": "division by zero",
                        "stacktrace": {
                            "frames": [
                                {"module": "app.jobs", "function": "run", "lineno": 10},
                                {
                                    "filename": "app/util.py",
                                    "function": "ratio",
                                    "lineno": 3,
                                },
                            ]
                        },
                    },
                ]
            },
            "release": "1.0",
            "environment": "prod",
            "platform": "python",
            "logger": "app",
            "server_name": "web-1",
            "sdk": {"name": "raven-python", "version": "6.10.0"},
            "tags": {"region": "eu", "n": 3},
            "user": {"id": 7},
            "extra": {"k": "v"},
        }
        assert error_event_fields(payload, 42) == {
            "kind": "error",
            "id": EVENT_ID,
            "level": "error",
            "event": "ZeroDivisionError: division by zero",
            "timestamp": 1714564800.0,
            "exception_type": "ZeroDivisionError",
            "exception_value": "division by zero",
            "frames": ["app.jobs:run:10", "app/util.py:ratio:3"],
            "culprit": "app.jobs in run",
            "release": "1.0",
            "environment": "prod",
            "platform": "python",
            "logger": "app",
            "server_name": "web-1",
            "host": "web-1",
            "sdk": "raven-python",
            "tags": {"region": "eu", "n": "3"},
            "user_id": "7",
            "extra": {"k": "v"},
            "project_id": 42,
        }

    @pytest.mark.parametrize(
        ("payload", "event"),
        [
            ({"message": "plain"}, "plain"),
            ({"logentry": {"message": "tmpl %s", "formatted": "tmpl 1"}}, "tmpl 1"),
            ({"logentry": {"message": "tmpl %s", "params": ["x"]}}, "tmpl x"),
            ({"logentry": {"message": "tmpl %s %s", "params": ["x"]}}, "tmpl %s %s"),
            ({"message": {"formatted": "from dict"}}, "from dict"),
            ({"exception": {"values": [{"type": "E", "value": "v"}]}}, "E: v"),
            ({"exception": [{"type": "E"}]}, "E"),
            ({"sentry.interfaces.Exception": {"type": "Old", "value": "x"}}, "Old: x"),
            ({}, "<no message>"),
        ],
    )
    def test_event_text(self, payload: dict[str, Any], event: str) -> None:
        """The message comes from message, logentry, or the last exception's ``Type: value``."""
        assert error_event_fields(payload, None)["event"] == event

    @pytest.mark.parametrize(
        ("level", "expected"),
        [
            (50, "critical"),
            (30, "warning"),
            ("fatal", "critical"),
            ("info", "info"),
            (None, "error"),
            ("x", "error"),
        ],
    )
    def test_level(self, level: Any, expected: str) -> None:
        """raven's numbers and Sentry's names map through the one level table; default error."""
        assert error_event_fields({"level": level}, None)["level"] == expected

    @pytest.mark.parametrize(
        ("tags", "expected"),
        [
            ({"a": "1"}, {"a": "1"}),
            ([["a", "1"], ["b", 2], "junk", ["only-one"]], {"a": "1", "b": "2"}),
            ("nonsense", None),
        ],
    )
    def test_tags(self, tags: Any, expected: dict[str, str] | None) -> None:
        """Tags as a dict or list of pairs become a dict of strings."""
        assert error_event_fields({"tags": tags}, None).get("tags") == expected

    @pytest.mark.parametrize("event_id", [None, "short", 12, "zz" * 16])
    def test_new_id_when_missing(self, event_id: Any) -> None:
        """A missing or invalid event_id is replaced by a fresh 32-hex id."""
        fields = error_event_fields({"event_id": event_id}, None)
        assert len(fields["id"]) == 32
        assert int(fields["id"], 16) >= 0

    def test_dashed_uuid_id(self) -> None:
        """A dashed UUID event_id is kept in Sentry's 32-hex form."""
        dashed = "9ec79c33-ec99-42ab-8353-589fcb2e04dc"
        assert error_event_fields({"event_id": dashed}, None)["id"] == EVENT_ID

    def test_sender_cannot_set_reserved_keys(self) -> None:
        """Sender keys such as source or received_at never reach the fields."""
        fields = error_event_fields(
            {"source": "evil", "received_at": 1, "kind": "metric", "_x": 1}, None
        )
        assert fields["kind"] == "error"
        assert not {"source", "received_at", "_x"} & fields.keys()

    def test_frames_keep_innermost(self) -> None:
        """A deep stack keeps its innermost ten frames, innermost last."""
        frames = [{"module": "m", "function": f"f{i}", "lineno": i} for i in range(30)]
        fields = error_event_fields(
            {
                "exception": {
                    "values": [{"type": "E", "stacktrace": {"frames": frames}}]
                }
            },
            None,
        )
        assert fields["frames"][0] == "m:f20:20"
        assert fields["frames"][-1] == "m:f29:29"


class TestParseTimestamp:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (1714564800, 1714564800.0),
            (1714564800.5, 1714564800.5),
            ("1714564800.5", 1714564800.5),
            ("2024-05-01T12:00:00", 1714564800.0),
            ("2024-05-01T12:00:00Z", 1714564800.0),
            ("2024-05-01T14:00:00+02:00", 1714564800.0),
            ("2024-05-01T12:00:00.250000Z", 1714564800.25),
            ("yesterday", None),
            ("nan", None),
            (float("inf"), None),
            (True, None),
            (None, None),
            (-5, None),
        ],
    )
    def test_values(self, value: Any, expected: float | None) -> None:
        """Numbers and ISO strings (naive means UTC) become UTC epoch seconds."""
        assert parse_timestamp(value) == expected


class TestItemEventFields:
    HEADERS: ClassVar[dict[str, Any]] = {
        "event_id": EVENT_ID,
        "sdk": {"name": "sentry.javascript.browser"},
    }

    def item(self, item_type: str, payload: Any, **headers: Any) -> EnvelopeItem:
        """An item of ``item_type`` whose payload is ``payload`` as JSON (or bytes as is)."""
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return EnvelopeItem({"type": item_type, **headers}, raw)

    def test_transaction(self) -> None:
        """A transaction is named by its transaction and summarised."""
        item = self.item(
            "transaction",
            {
                "transaction": "GET /x",
                "start_timestamp": 100.0,
                "timestamp": 100.25,
                "contexts": {
                    "trace": {"op": "http.server", "status": "ok", "trace_id": "t"}
                },
                "spans": [{}, {}],
                "release": "1",
            },
        )
        fields = item_event_fields(item, self.HEADERS, 3)
        assert fields == {
            "kind": "sentry",
            "event": "GET /x",
            "level": "info",
            "item_type": "transaction",
            "size": len(item.payload),
            "id": EVENT_ID,
            "sdk": "sentry.javascript.browser",
            "transaction": "GET /x",
            "op": "http.server",
            "status": "ok",
            "trace_id": "t",
            "duration_ms": 250.0,
            "span_count": 2,
            "release": "1",
            "timestamp": 100.25,
            "project_id": 3,
        }

    @pytest.mark.parametrize(
        ("item_type", "payload", "headers", "expected"),
        [
            (
                "session",
                {
                    "sid": "s1",
                    "status": "crashed",
                    "errors": 2,
                    "init": False,
                    "attrs": {"release": "r"},
                },
                {},
                {
                    "status": "crashed",
                    "sid": "s1",
                    "errors": 2,
                    "init": False,
                    "release": "r",
                },
            ),
            (
                "sessions",
                {
                    "aggregates": [
                        {"exited": 3, "errored": 1},
                        {"exited": 2, "crashed": 1},
                    ],
                    "attrs": {"environment": "e"},
                },
                {},
                {"exited": 5, "errored": 1, "crashed": 1, "environment": "e"},
            ),
            (
                "attachment",
                b"\x00\x01binary",
                {"filename": "dump.bin", "content_type": "application/octet-stream"},
                {
                    "filename": "dump.bin",
                    "content_type": "application/octet-stream",
                    "size": 8,
                    "id": EVENT_ID,
                },
            ),
            (
                "client_report",
                {
                    "timestamp": 5,
                    "discarded_events": [
                        {"reason": "queue", "quantity": 4},
                        {"quantity": 2},
                    ],
                },
                {},
                {"discarded": 6, "timestamp": 5.0},
            ),
            (
                "check_in",
                {
                    "monitor_slug": "nightly",
                    "status": "ok",
                    "check_in_id": "c",
                    "duration": 1.5,
                },
                {},
                {
                    "monitor_slug": "nightly",
                    "status": "ok",
                    "check_in_id": "c",
                    "duration": 1.5,
                },
            ),
            ("log", {"items": [{}, {}, {}]}, {"item_count": 3}, {"item_count": 3}),
            (
                "user_report",
                {"event_id": "ab" * 16, "comments": "broke"},
                {},
                {"id": "ab" * 16},
            ),
            ("feedback", {"contexts": {}}, {}, {"id": EVENT_ID}),
            ("profile", b"not json", {}, {"id": EVENT_ID}),
            ("replay_video", b"\xff\xff", {}, {}),
        ],
    )
    def test_item_summaries(
        self,
        item_type: str,
        payload: Any,
        headers: dict[str, Any],
        expected: dict[str, Any],
    ) -> None:
        """Each item type keeps its small useful fields; unknown or unreadable ones keep type and size."""
        fields = item_event_fields(
            self.item(item_type, payload, **headers), self.HEADERS, None
        )
        assert fields["kind"] == "sentry"
        assert fields["item_type"] == item_type
        assert fields["event"] == f"sentry.{item_type}"
        assert fields.items() >= expected.items()
        assert "project_id" not in fields

    def test_envelope_routes_events(self) -> None:
        """Event items give error fields, other items sentry fields, in order."""
        envelope = Envelope(
            {"event_id": EVENT_ID},
            [self.item("event", {"message": "boom"}), self.item("attachment", b"x")],
        )
        first, second = envelope_event_fields(envelope, 9)
        assert (first["kind"], first["id"], first["event"]) == (
            "error",
            EVENT_ID,
            "boom",
        )
        assert (second["kind"], second["item_type"], second["project_id"]) == (
            "sentry",
            "attachment",
            9,
        )

    def test_envelope_bad_event_item(self) -> None:
        """An event item that is not a JSON object is a 400."""
        envelope = Envelope({}, [self.item("event", b"nope")])
        with raises("invalid JSON data"):
            envelope_event_fields(envelope, None)


def test_event_kinds_are_known() -> None:
    """The kinds the codec produces are the event model's own."""
    assert {events.ERROR, events.SENTRY} <= set(events.KINDS)


class TestAuthorize:
    PROJECTS: ClassVar[dict[int, frozenset[str]]] = {
        42: frozenset({KEY}),
        7: frozenset({OTHER_KEY}),
    }

    @pytest.mark.parametrize(
        ("auth", "path", "projects", "expected"),
        [
            (SentryAuth(KEY), "42", PROJECTS, 42),
            (SentryAuth(KEY), None, PROJECTS, 42),
            (SentryAuth(f"{KEY}.no-cache"), "42", PROJECTS, 42),
            (SentryAuth(KEY, project_id=42), None, PROJECTS, 42),
            (SentryAuth(KEY), "5", None, 5),
            (SentryAuth(KEY, project_id=9), None, None, 9),
            (SentryAuth(KEY), None, None, None),
        ],
    )
    def test_allowed(
        self,
        auth: SentryAuth,
        path: str | None,
        projects: dict[int, frozenset[str]] | None,
        expected: int | None,
    ) -> None:
        """A listed key gives its project; with no list any key passes."""
        assert authorize(auth, path, projects) == expected

    @pytest.mark.parametrize(
        ("auth", "path", "projects", "status", "detail"),
        [
            (SentryAuth("9" * 32), "42", PROJECTS, 403, "event submission rejected"),
            (SentryAuth(OTHER_KEY), "42", PROJECTS, 403, "event submission rejected"),
            (SentryAuth(KEY, project_id=7), None, PROJECTS, 403, "event submission"),
            (SentryAuth(KEY), "abc", PROJECTS, 400, "bad project path parameter"),
            (SentryAuth(KEY, project_id=7), "42", None, 400, "invalid event envelope"),
        ],
    )
    def test_refused(
        self,
        auth: SentryAuth,
        path: str | None,
        projects: dict[int, frozenset[str]] | None,
        status: int,
        detail: str,
    ) -> None:
        """Unknown keys, keys of another project and bad paths are refused."""
        with raises(detail) as info:
            authorize(auth, path, projects)
        assert info.value.status == status
