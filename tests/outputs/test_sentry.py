"""The Sentry output: forwarding, re-authentication, rate-limit holds, retries, errors from logs."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path
from typing import Any

import attrs
import pytest
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from obsd import events
from obsd.codecs.sentry import parse_envelope
from obsd.codecs.sentry_body import decode_body
from obsd.config.schema import Problems
from obsd.outputs.sentry import Config, SentryOutput, check_config
from obsd.testing import make_output_context

IN_KEY = "i" * 32
UP_KEY = "u" * 32
OTHER_KEY = "o" * 32
UPSTREAM = f"https://{UP_KEY}@up.example/9"
OTHER = f"https://{OTHER_KEY}@other.example/77"


@attrs.define
class Seen:
    """One request the upstream double received."""

    path: str
    headers: dict[str, str]
    body: bytes


@attrs.define
class Answer:
    status: int = 200
    headers: dict[str, str] = attrs.Factory(dict)
    body: bytes = b'{"id":"x"}'


class RecordingUpstream(Resource):
    """Records each request; answers from ``answers`` (then 200)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Seen] = []
        self.answers: list[Answer] = []

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        headers = {
            k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()
        }
        host = headers.get("host", "")
        self.seen.append(Seen(host + request.path.decode(), headers, request.content.read()))
        answer = self.answers.pop(0) if self.answers else Answer()
        request.setResponseCode(answer.status)
        for name, value in answer.headers.items():
            request.setHeader(name, value)
        return answer.body


class HangingUpstream(Resource):
    """Never answers: every request stays open until the client gives up."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[Request] = []

    def render_POST(self, request: Request) -> int:
        self.pending.append(request)
        return NOT_DONE_YET


class PendingHttp:
    """An HTTP client whose requests are never answered."""

    def __init__(self) -> None:
        self.pending: list[defer.Deferred[Any]] = []

    def post(self, url: str, **kw: Any) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.pending.append(d)
        return d


class FailingHttp:
    """An HTTP client whose requests fail like a refused connection."""

    def __init__(self) -> None:
        self.calls = 0

    def post(self, url: str, **kw: Any) -> defer.Deferred[Any]:
        self.calls += 1
        return defer.fail(ConnectionRefusedError("refused"))


@pytest.fixture(name="upstream")
def _upstream() -> RecordingUpstream:
    return RecordingUpstream()


def make(
    clock: Clock, tmp_path: Path, upstream: Resource | None = None, http: Any = None, **kw: Any
) -> SentryOutput:
    config = Config(type="sentry", dsn=kw.pop("dsn", UPSTREAM), **kw)
    ctx = make_output_context(clock, tmp_path)
    out = SentryOutput("sentry", config, ctx, http=http or StubTreq(upstream))
    out.startService()
    return out


def raw(
    body: bytes,
    *,
    endpoint: str = "envelope",
    encoding: str = "",
    project: int | None = 1,
    client: str = "sentry.python/2.75.0",
) -> dict[str, Any]:
    return {
        "body": body,
        "content_type": "application/x-sentry-envelope"
        if endpoint == "envelope"
        else "application/json",
        "content_encoding": encoding,
        "endpoint": endpoint,
        "project_id": project,
        "auth": {"sentry_key": IN_KEY, "sentry_version": 7, "sentry_client": client},
    }


def report(body: bytes, kind: str = events.ERROR, **kw: Any) -> dict[str, Any]:
    return {"id": "e" * 32, "kind": kind, "event": "boom", "_sentry_raw": raw(body, **kw)}


def envelope(*item_types: str, dsn: str | None = None) -> bytes:
    header: dict[str, Any] = {"event_id": "a" * 32}
    if dsn is not None:
        header["dsn"] = dsn
    lines = [json.dumps(header).encode()]
    for item_type in item_types:
        payload = json.dumps({"type": item_type, "n": 1}).encode()
        lines += [json.dumps({"type": item_type, "length": len(payload)}).encode(), payload]
    return b"\n".join(lines) + b"\n"


def counter(out: SentryOutput, name: str) -> float:
    return out.context.telemetry.value(f"obsd.output.sentry.{name}")


def dead_letters(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "dead-letter.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class TestForwarding:
    def test_store_byte_identical(
        self, clock: Clock, tmp_path: Path, upstream: RecordingUpstream
    ) -> None:
        """A raven store body goes to the upstream's store endpoint byte for byte."""
        out = make(clock, tmp_path, upstream)
        body = zlib.compress(b'{"message": "hi", "event_id": "' + b"b" * 32 + b'"}')
        out.accept(report(body, endpoint="store", encoding="deflate", client="raven-python/6.10"))
        clock.advance(0)
        (seen,) = upstream.seen
        assert seen.path == "up.example/api/9/store/"
        assert seen.body == body
        assert seen.headers["content-encoding"] == "deflate"
        assert seen.headers["content-type"] == "application/json"
        assert seen.headers["x-sentry-auth"] == (
            f"Sentry sentry_key={UP_KEY}, sentry_version=7, sentry_client=raven-python/6.10"
        )
        assert IN_KEY not in json.dumps(seen.headers)
        assert counter(out, "forwarded") == 1

    def test_client_from_user_agent_bytes(
        self, clock: Clock, tmp_path: Path, upstream: RecordingUpstream
    ) -> None:
        """A client name the ingest kept as bytes (a User-Agent header) is still sent as text."""
        out = make(clock, tmp_path, upstream)
        event = report(envelope("event"))
        event["_sentry_raw"]["auth"]["sentry_client"] = b"sentry.javascript.browser/8.0"
        out.accept(event)
        clock.advance(0)
        (seen,) = upstream.seen
        assert seen.headers["x-sentry-auth"].endswith("sentry_client=sentry.javascript.browser/8.0")

    def test_envelope_without_dsn_byte_identical(
        self, clock: Clock, tmp_path: Path, upstream: RecordingUpstream
    ) -> None:
        """An envelope that names no dsn is sent exactly as received, compressed or not."""
        out = make(clock, tmp_path, upstream)
        body = gzip.compress(envelope("event", "attachment"))
        out.accept(report(body, encoding="gzip"))
        clock.advance(0)
        (seen,) = upstream.seen
        assert seen.path == "up.example/api/9/envelope/"
        assert seen.body == body
        assert seen.headers["content-encoding"] == "gzip"

    def test_envelope_dsn_rewritten(
        self, clock: Clock, tmp_path: Path, upstream: RecordingUpstream
    ) -> None:
        """An envelope's dsn header is rewritten to the upstream's; items stay byte for byte."""
        out = make(clock, tmp_path, upstream)
        original = envelope("event", dsn=f"http://{IN_KEY}@127.0.0.1:1/1")
        out.accept(report(gzip.compress(original), encoding="gzip"))
        clock.advance(0)
        (seen,) = upstream.seen
        sent = decode_body(seen.body, "gzip", 10**6)
        assert parse_envelope(sent).dsn == f"https://{UP_KEY}@up.example/9"
        assert sent.partition(b"\n")[2] == original.partition(b"\n")[2]
        assert IN_KEY.encode() not in sent

    def test_project_map(self, clock: Clock, tmp_path: Path, upstream: RecordingUpstream) -> None:
        """Mapped incoming projects go to their upstream with its key; others to dsn."""
        out = make(clock, tmp_path, upstream, projects={"5": OTHER})
        out.accept(report(envelope("event"), project=5))
        out.accept(report(envelope("event"), project=6))
        out.accept(report(envelope("event"), project=None))
        clock.advance(0)
        assert [(s.path, s.headers["x-sentry-auth"].split(",")[0]) for s in upstream.seen] == [
            ("other.example/api/77/envelope/", f"Sentry sentry_key={OTHER_KEY}"),
            ("up.example/api/9/envelope/", f"Sentry sentry_key={UP_KEY}"),
            ("up.example/api/9/envelope/", f"Sentry sentry_key={UP_KEY}"),
        ]

    def test_unmapped_without_dsn_skipped(
        self, clock: Clock, tmp_path: Path, upstream: RecordingUpstream
    ) -> None:
        """With only a project map, reports of other projects are counted and skipped."""
        out = make(clock, tmp_path, upstream, dsn="", projects={"5": OTHER})
        out.accept(report(envelope("event"), project=6))
        clock.advance(0)
        assert upstream.seen == []
        assert counter(out, "skipped.unmapped") == 1

    @pytest.mark.parametrize("kind", [events.ERROR, events.SENTRY])
    def test_events_without_raw_skipped(
        self, clock: Clock, tmp_path: Path, upstream: RecordingUpstream, kind: str
    ) -> None:
        """The other events of a request were forwarded with its first one: skipped, counted."""
        out = make(clock, tmp_path, upstream)
        out.accept({"id": "1", "kind": kind, "event": "x", "level": "error"})
        clock.advance(0)
        assert upstream.seen == []
        assert counter(out, "skipped.no_raw") == 1


class TestAnswers:
    def test_rate_limit_holds_only_named_category(
        self, clock: Clock, tmp_path: Path, upstream: RecordingUpstream
    ) -> None:
        """A transaction limit holds transactions for its time while errors go on."""
        out = make(clock, tmp_path, upstream)
        upstream.answers = [Answer(429, {"X-Sentry-Rate-Limits": "60:transaction:key"})]
        out.accept(report(envelope("transaction"), kind=events.SENTRY))
        clock.advance(0)
        assert len(upstream.seen) == 1
        out.accept(report(envelope("transaction"), kind=events.SENTRY))
        out.accept(report(envelope("event")))
        clock.advance(0)
        assert [parse_envelope(s.body).items[0].type for s in upstream.seen] == [
            "transaction",
            "event",
        ]
        assert counter(out, "rate_limited.transaction") == 2
        assert counter(out, "held") == 2
        assert out.health()["held"] == 2
        assert out.health()["rate_limited_until"] == {"transaction": 60.0}
        clock.advance(59)
        assert len(upstream.seen) == 2
        clock.advance(1)
        assert [parse_envelope(s.body).items[0].type for s in upstream.seen[2:]] == [
            "transaction",
            "transaction",
        ]
        assert counter(out, "held") == 0
        assert clock.getDelayedCalls() == []

    def test_limits_on_success_answer(
        self, clock: Clock, tmp_path: Path, upstream: RecordingUpstream
    ) -> None:
        """Rate limits on a 200 answer hold later records of that category, unsent."""
        out = make(clock, tmp_path, upstream)
        upstream.answers = [Answer(200, {"X-Sentry-Rate-Limits": "30:error:org"})]
        out.accept(report(envelope("event")))
        clock.advance(0)
        out.accept(report(envelope("event")))
        clock.advance(0)
        assert len(upstream.seen) == 1
        assert counter(out, "rate_limited.error") == 1
        clock.advance(30)
        assert len(upstream.seen) == 2

    def test_mixed_envelope_split(
        self, clock: Clock, tmp_path: Path, upstream: RecordingUpstream
    ) -> None:
        """An envelope whose attachment is limited sends its event now, the attachment later."""
        out = make(clock, tmp_path, upstream)
        upstream.answers = [Answer(200, {"X-Sentry-Rate-Limits": "10:attachment:key"})]
        out.accept(report(envelope("session")))
        clock.advance(0)
        out.accept(report(envelope("event", "attachment")))
        clock.advance(0)
        assert [i.type for i in parse_envelope(upstream.seen[1].body).items] == ["event"]
        assert counter(out, "split") == 1
        clock.advance(10)
        assert [i.type for i in parse_envelope(upstream.seen[2].body).items] == ["attachment"]

    def test_retry_after_holds_everything(
        self, clock: Clock, tmp_path: Path, upstream: RecordingUpstream
    ) -> None:
        """A 429 with only Retry-After holds every category for that long, then resends."""
        out = make(clock, tmp_path, upstream)
        upstream.answers = [Answer(429, {"Retry-After": "30"})]
        out.accept(report(envelope("event")))
        clock.advance(0)
        out.accept(report(envelope("session"), kind=events.SENTRY))
        clock.advance(29)
        assert len(upstream.seen) == 1
        clock.advance(1)
        assert len(upstream.seen) == 3
        assert dead_letters(tmp_path) == []

    def test_server_error_retried(
        self, clock: Clock, tmp_path: Path, upstream: RecordingUpstream
    ) -> None:
        """A 503 retries the same bytes through the queue's backoff."""
        out = make(clock, tmp_path, upstream, retry_initial=1.0)
        upstream.answers = [Answer(503, body=b"busy")]
        body = envelope("event")
        out.accept(report(body))
        clock.advance(0)
        assert len(upstream.seen) == 1
        clock.advance(1.0)
        assert [s.body for s in upstream.seen] == [body, body]
        assert out.context.telemetry.value("obsd.output.sentry.retried") == 1
        assert counter(out, "forwarded") == 1

    def test_network_error_retried(self, clock: Clock, tmp_path: Path) -> None:
        """A refused connection is retried with backoff, never dead-lettered."""
        http = FailingHttp()
        out = make(clock, tmp_path, http=http, retry_initial=1.0, retry_max=1.0)
        out.accept(report(envelope("event")))
        clock.advance(0)
        clock.advance(1.0)
        clock.advance(1.0)
        assert http.calls == 3
        assert out.health()["state"] == "degraded"
        assert dead_letters(tmp_path) == []

    def test_client_error_dead_lettered(
        self, clock: Clock, tmp_path: Path, upstream: RecordingUpstream
    ) -> None:
        """A 400 goes to the dead-letter file with the upstream's status and body."""
        out = make(clock, tmp_path, upstream)
        upstream.answers = [Answer(400, body=b'{"detail":"invalid event envelope"}')]
        out.accept(report(envelope("event")))
        clock.advance(0)
        (letter,) = dead_letters(tmp_path)
        assert "upstream answered 400" in letter["reason"]
        assert "invalid event envelope" in letter["reason"]
        assert out.context.telemetry.value("obsd.output.sentry.rejected") == 1
        assert len(upstream.seen) == 1

    def test_429_for_other_categories_retries(
        self, clock: Clock, tmp_path: Path, upstream: RecordingUpstream
    ) -> None:
        """A 429 whose limits name none of the record's categories retries it after Retry-After."""
        out = make(clock, tmp_path, upstream, retry_initial=0.1)
        upstream.answers = [
            Answer(429, {"X-Sentry-Rate-Limits": "60:transaction:key", "Retry-After": "5"})
        ]
        out.accept(report(envelope("event")))
        clock.advance(0)
        clock.advance(4.9)
        assert len(upstream.seen) == 1
        clock.advance(0.1)
        assert len(upstream.seen) == 2
        assert counter(out, "held") == 0

    def test_hold_list_bounded(
        self, clock: Clock, tmp_path: Path, upstream: RecordingUpstream
    ) -> None:
        """Past max_held the oldest held record is dead-lettered and counted, never lost."""
        out = make(clock, tmp_path, upstream, max_held=2)
        upstream.answers = [Answer(429, {"Retry-After": "60"})]
        for _ in range(4):
            out.accept(report(envelope("event")))
            clock.advance(0)
        assert counter(out, "held") == 2
        assert counter(out, "dropped.rate_limited") == 2
        letters = dead_letters(tmp_path)
        assert [letter["reason"] for letter in letters] == ["rate-limit hold list full"] * 2
        assert letters[0]["event"]["endpoint"] == "envelope"
        assert json.loads(letters[0]["event"]["body"].partition("\n")[0]) == {
            "event_id": "a" * 32
        }

    def test_timeout_retried(self, clock: Clock, tmp_path: Path) -> None:
        """A request unanswered for request_timeout is cancelled and retried."""
        hanging = HangingUpstream()
        out = make(clock, tmp_path, hanging, request_timeout=5.0, retry_initial=1.0)
        out.accept(report(envelope("event")))
        clock.advance(0)
        assert len(hanging.pending) == 1
        clock.advance(5.0)
        assert out.health()["destinations"]["default"]["last_error"] == "upstream request timed out"
        clock.advance(1.0)
        assert len(hanging.pending) == 2

    def test_max_in_flight(self, clock: Clock, tmp_path: Path) -> None:
        """No more than max_in_flight requests are open at once."""
        http = PendingHttp()
        out = make(clock, tmp_path, http=http, max_in_flight=3)
        for _ in range(10):
            out.accept(report(envelope("event")))
        clock.advance(0)
        assert len(http.pending) == 3

    def test_held_kept_for_next_run_at_stop(
        self, clock: Clock, tmp_path: Path, upstream: RecordingUpstream
    ) -> None:
        """Records still held back when obsd stops are kept in data_dir and sent after a restart."""
        out = make(clock, tmp_path, upstream)
        upstream.answers = [Answer(429, {"Retry-After": "600"})]
        out.accept(report(envelope("event")))
        clock.advance(0)
        assert len(upstream.seen) == 1
        out.stopService()
        clock.advance(out.context.shutdown_timeout)
        assert dead_letters(tmp_path) == []
        assert clock.getDelayedCalls() == []

        again = make(clock, tmp_path, upstream)
        clock.advance(again.config.batch_timeout)
        assert len(upstream.seen) == 2  # the held report, sent by the next run
        assert upstream.seen[1].body == upstream.seen[0].body


def log_event(**fields: Any) -> dict[str, Any]:
    event = {
        "id": "c" * 32,
        "kind": events.LOG,
        "event": "payment failed",
        "level": "error",
        "timestamp": 1700000000.0,
        "host": "web1",
        "appname": "shop",
        "source": "syslog",
    }
    event.update(fields)
    return event


TRACEBACK = """Traceback (most recent call last):
  File "/srv/shop/pay.py", line 40, in charge
    gateway.charge(order)
  File "/srv/shop/gateway.py", line 7, in charge
    raise PaymentError("card declined")
shop.errors.PaymentError: card declined
"""

DICT_TRACEBACK = [
    {
        "exc_type": "PaymentError",
        "exc_value": "card declined",
        "is_cause": False,
        "frames": [
            {"filename": "/srv/shop/pay.py", "lineno": 40, "name": "charge"},
            {"filename": "/srv/shop/gateway.py", "lineno": 7, "name": "charge"},
        ],
    }
]


def sent_event(seen: Seen) -> dict[str, Any]:
    envelope_ = parse_envelope(seen.body)
    (item,) = envelope_.items
    assert item.type == "event"
    payload: dict[str, Any] = json.loads(item.payload)
    return payload


class TestErrorsFromLogs:
    @pytest.mark.parametrize(
        ("level", "min_level", "sentry_level"),
        [
            ("error", "error", "error"),
            ("critical", "error", "fatal"),
            ("crit", "error", "fatal"),
            ("warning", "warning", "warning"),
            ("warning", "error", None),
            ("info", "error", None),
        ],
    )
    def test_levels(
        self,
        clock: Clock,
        tmp_path: Path,
        upstream: RecordingUpstream,
        level: str,
        min_level: str,
        sentry_level: str | None,
    ) -> None:
        """Log levels at or above min_level map to Sentry's through events.LEVEL_SENTRY."""
        out = make(clock, tmp_path, upstream, min_level=min_level)
        out.accept(log_event(level=level))
        clock.advance(0)
        if sentry_level is None:
            assert upstream.seen == []
            assert counter(out, "skipped.below_level") == 1
        else:
            (seen,) = upstream.seen
            payload = sent_event(seen)
            assert payload["level"] == sentry_level
            assert payload["level"] == events.LEVEL_SENTRY[events.normalise_level(level)]

    def test_event_fields(self, clock: Clock, tmp_path: Path, upstream: RecordingUpstream) -> None:
        """Message, logger, server name, timestamp, tags and extra reach Sentry."""
        out = make(clock, tmp_path, upstream, tags=["source", "order"])
        out.accept(log_event(order=17, user="ann"))
        clock.advance(0)
        (seen,) = upstream.seen
        assert seen.path == "up.example/api/9/envelope/"
        assert seen.headers["x-sentry-auth"].startswith(f"Sentry sentry_key={UP_KEY}, ")
        assert "sentry_client=obsd/" in seen.headers["x-sentry-auth"]
        assert parse_envelope(seen.body).dsn == f"https://{UP_KEY}@up.example/9"
        payload = sent_event(seen)
        assert payload["event_id"] == "c" * 32
        assert payload["logentry"] == {"formatted": "payment failed"}
        assert (payload["logger"], payload["server_name"]) == ("shop", "web1")
        assert payload["timestamp"] == 1700000000.0
        assert payload["tags"] == {"source": "syslog", "order": "17"}
        assert payload["extra"] == {"user": "ann"}

    @pytest.mark.parametrize(
        ("key", "value"),
        [("exception", TRACEBACK), ("exc_info", TRACEBACK), ("exception", DICT_TRACEBACK)],
    )
    def test_traceback_becomes_exception(
        self, clock: Clock, tmp_path: Path, upstream: RecordingUpstream, key: str, value: Any
    ) -> None:
        """format_exc_info text and dict_tracebacks become a Sentry exception with frames."""
        out = make(clock, tmp_path, upstream)
        out.accept(log_event(**{key: value}))
        clock.advance(0)
        (exc,) = sent_event(upstream.seen[0])["exception"]["values"]
        assert (exc["type"], exc["value"]) == ("PaymentError", "card declined")
        frames = exc["stacktrace"]["frames"]
        assert [(f["filename"], f["function"], f["lineno"], f["module"]) for f in frames] == [
            ("/srv/shop/pay.py", "charge", 40, "pay"),
            ("/srv/shop/gateway.py", "charge", 7, "gateway"),
        ]

    def test_dedupe_window(self, clock: Clock, tmp_path: Path, upstream: RecordingUpstream) -> None:
        """Identical errors within the window are sent once; the next says how many waited."""
        out = make(clock, tmp_path, upstream, dedupe_window=60.0)
        for _ in range(5):
            out.accept(log_event(exception=TRACEBACK))
        out.accept(log_event(event="other failure"))
        clock.advance(0)
        assert len(upstream.seen) == 2
        assert counter(out, "deduplicated") == 4
        clock.advance(60)
        out.accept(log_event(exception=TRACEBACK))
        clock.advance(0)
        assert sent_event(upstream.seen[2])["extra"]["obsd_repeats_held_back"] == 4

    def test_dedupe_off(self, clock: Clock, tmp_path: Path, upstream: RecordingUpstream) -> None:
        """dedupe_window = 0 sends every repeat."""
        out = make(clock, tmp_path, upstream, dedupe_window=0.0)
        for _ in range(3):
            out.accept(log_event())
        clock.advance(0)
        assert len(upstream.seen) == 3


class TestConfig:
    def test_needs_upstream(self) -> None:
        """An output without dsn or projects is a config problem."""
        problems = Problems()
        check_config("sentry", Config(type="sentry"), None, problems)
        assert problems.lines == ["outputs.sentry.dsn: set dsn (or projects) to the upstream Sentry"]

    def test_bad_dsn_reported_without_key(self) -> None:
        """A malformed DSN is reported through parse_config, never echoing it."""
        from obsd.config.loader import parse_config
        from obsd.errors import ConfigError

        with pytest.raises(ConfigError) as info:
            parse_config(
                {"outputs": {"sentry": {"dsn": f"ftp://{UP_KEY}@h/1", "projects": {"x": UPSTREAM}}}}
            )
        text = str(info.value)
        assert "outputs.sentry.dsn" in text
        assert "outputs.sentry.projects" in text
        assert UP_KEY not in text

    def test_log_route_accepted(self) -> None:
        """A route may send log events to a sentry output; by default it takes none."""
        from obsd.config.loader import output_accepts, output_default_kinds, parse_config

        config = parse_config(
            {
                "outputs": {"sentry": {"dsn": UPSTREAM}},
                "routes": [{"match": {"kind": ["log"], "level": "error"}, "outputs": ["sentry"]}],
            }
        )
        out = config.outputs["sentry"]
        assert "log" in output_accepts(out)
        assert "log" not in output_default_kinds(out)


class TestHeldWithDiskBuffer:
    def test_held_reports_survive_kill_9_with_a_disk_queue(
        self, clock: Clock, tmp_path: Path, upstream: RecordingUpstream
    ) -> None:
        """A held report stays in the queue, unacked: a run killed mid-hold still has it on disk."""
        from obsd.config.model import BufferConfig

        def disk_output(clk: Clock) -> SentryOutput:
            config = Config(type="sentry", dsn=UPSTREAM, buffer=BufferConfig(type="disk"))
            out = SentryOutput("sentry", config, make_output_context(clk, tmp_path),
                               http=StubTreq(upstream))
            out.startService()
            return out

        out = disk_output(clock)
        upstream.answers = [Answer(429, {"Retry-After": "600"})]
        out.accept(report(envelope("event")))
        clock.advance(0)
        assert out.health()["held"] == 1
        clock.advance(out.context.sync_interval * 2)  # synced, and the ack written
        # kill -9: no stop at all; the next run opens the same spool
        clock2 = Clock()
        again = disk_output(clock2)
        clock2.advance(1)
        assert len(upstream.seen) == 2
        assert upstream.seen[1].body == upstream.seen[0].body
        again.stopService()
        clock2.advance(again.context.shutdown_timeout)
        again.context.throttle.stop()

    def test_held_reports_are_spooled_at_stop_and_sent_by_the_next_run(
        self, clock: Clock, tmp_path: Path, upstream: RecordingUpstream
    ) -> None:
        """With a disk queue, a report held for a rate limit at stop is kept, not dead-lettered."""
        from twisted.internet import defer as tdefer

        from obsd.config.model import BufferConfig

        def run_now(job: Any) -> Any:
            return tdefer.maybeDeferred(job)

        def disk_output(clk: Clock) -> SentryOutput:
            config = Config(type="sentry", dsn=UPSTREAM, buffer=BufferConfig(type="disk"))
            ctx = make_output_context(clk, tmp_path, run_io=run_now)
            out = SentryOutput("sentry", config, ctx, http=StubTreq(upstream))
            out.startService()
            return out

        out = disk_output(clock)
        upstream.answers = [Answer(429, {"Retry-After": "600"})]
        out.accept(report(envelope("event")))
        clock.advance(0)
        out.stopService()
        clock.advance(out.context.shutdown_timeout)
        assert dead_letters(tmp_path) == []
        out.context.throttle.stop()

        before = len(upstream.seen)
        clock2 = Clock()
        again = disk_output(clock2)  # replays the spool at once
        clock2.advance(1)
        assert len(upstream.seen) == before + 1
        assert upstream.seen[-1].body == upstream.seen[0].body
        again.stopService()
        clock2.advance(again.context.shutdown_timeout)
        again.context.throttle.stop()
