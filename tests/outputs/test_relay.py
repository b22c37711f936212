"""The relay output: gzip NDJSON with a bearer token, failover, retries, permanent refusals."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet import error as net_error
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import Request

from obsd.codecs.relaywire import decode_body
from obsd.config.loader import parse_config
from obsd.delivery.contract import PermanentError, SendResult
from obsd.outputs.relay import RelayOutput, events_url, partial_url, retry_after_seconds
from obsd.testing import make_output_context
from tests.helpers import failure_result_of, success_result_of


class Central(Resource):
    """A fake central: records requests; ``codes`` scripts answers per host."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[dict[str, Any]] = []
        self.codes: dict[str, list[tuple[int, dict[bytes, bytes]]]] = {}

    def render_POST(self, request: Request) -> bytes:
        host = request.getRequestHostname().decode()
        assert request.content is not None
        self.requests.append({
            "host": host,
            "path": request.path,
            "headers": {k.lower(): v for k, v in request.requestHeaders.getAllRawHeaders()},
            "body": request.content.read(),
        })
        script = self.codes.get(host) or [(200, {})]
        code, headers = script.pop(0) if len(script) > 1 else script[0]
        request.setResponseCode(code)
        for name, value in headers.items():
            request.setHeader(name, value)
        return b'{"ok": true}'


class FailingClient:
    """An HTTP client double whose posts fail, per url, as scripted."""

    def __init__(self, stub: StubTreq, down: set[bytes]) -> None:
        self.stub = stub
        self.down = down
        self.tried: list[bytes] = []

    def post(self, url: bytes, **kw: Any) -> defer.Deferred[Any]:
        self.tried.append(url)
        if any(url.startswith(d) for d in self.down):
            return defer.fail(net_error.ConnectionRefusedError("refused"))
        return self.stub.post(url, **kw)


@pytest.fixture(name="central")
def _central() -> Central:
    return Central()


def config(**settings: Any) -> Any:
    raw = {"urls": ["http://a", "http://b"], "token": "tok-a", "batch_timeout": 0.0, **settings}
    return parse_config({"outputs": {"relay": raw}}).outputs["relay"]


def make(clock: Clock, tmp_path: Path, client: Any, **settings: Any) -> RelayOutput:
    out = RelayOutput("relay", config(**settings), make_output_context(clock, tmp_path), client)
    out.startService()
    return out


def event(i: int) -> dict[str, Any]:
    return {"id": f"id{i}", "kind": "error", "event": "boom", "timestamp": 1.5,
            "host": "agent1", "source": "sentry", "_sentry_raw": b"\x00raw"}


def run(stub: StubTreq, clock: Clock, seconds: float = 0.0) -> None:
    stub.flush()
    clock.advance(seconds)
    stub.flush()


class TestWire:
    def test_gzip_ndjson_with_bearer_token(
        self, clock: Clock, tmp_path: Path, central: Central
    ) -> None:
        """A batch is one gzip NDJSON POST to /api/obsd/v1/events with the bearer token."""
        stub = StubTreq(central)
        out = make(clock, tmp_path, stub)
        out.accept(event(1))
        out.accept(event(2))
        run(stub, clock)
        (req,) = central.requests
        assert req["path"] == b"/api/obsd/v1/events"
        assert req["headers"][b"authorization"] == [b"Bearer tok-a"]
        assert req["headers"][b"content-encoding"] == [b"gzip"]
        got = decode_body(req["body"], gzipped=True, max_bytes=10**6, max_events=10)
        assert got == [event(1), event(2)]
        assert got[0]["_sentry_raw"] == b"\x00raw"
        assert clock.seconds() == 0
        assert out.health()["state"] == "ok"

    def test_without_gzip(self, clock: Clock, tmp_path: Path, central: Central) -> None:
        """gzip = false sends plain NDJSON without Content-Encoding."""
        stub = StubTreq(central)
        out = make(clock, tmp_path, stub, gzip=False)
        out.accept(event(1))
        run(stub, clock)
        (req,) = central.requests
        assert b"content-encoding" not in req["headers"]
        assert json.loads(req["body"])["id"] == "id1"

    @pytest.mark.parametrize(("base", "url"), [
        ("http://c:9000", b"http://c:9000/api/obsd/v1/events"),
        ("http://c:9000/", b"http://c:9000/api/obsd/v1/events"),
        ("https://c/api/obsd/v1/events", b"https://c/api/obsd/v1/events"),
    ])
    def test_events_url(self, base: str, url: bytes) -> None:
        """A base url gets the events path; a full endpoint url is kept."""
        assert events_url(base) == url

    @pytest.mark.parametrize(("header", "seconds"), [
        (b"5", 5.0), (b" 2.5 ", 2.5), (b"Wed, 21 Oct 2015 07:28:00 GMT", None), (None, None),
        (b"-1", None),
    ])
    def test_retry_after(self, header: bytes | None, seconds: float | None) -> None:
        """Retry-After in seconds is read; dates and junk are ignored."""
        assert retry_after_seconds(header) == seconds


class TestFailover:
    def test_next_url_when_first_is_down(
        self, clock: Clock, tmp_path: Path, central: Central
    ) -> None:
        """A refused connection moves on to the next url at once and stays there."""
        stub = StubTreq(central)
        client = FailingClient(stub, {b"http://a"})
        out = make(clock, tmp_path, client)
        out.accept(event(1))
        run(stub, clock)
        assert [r["host"] for r in central.requests] == ["b"]
        assert out.current_url == b"http://b/api/obsd/v1/events"
        out.accept(event(2))
        run(stub, clock)
        assert client.tried[-1].startswith(b"http://b")
        assert out.context.telemetry.value("obsd.output.relay.failovers") == 1

    @pytest.mark.parametrize("code", [500, 502, 503, 429, 408])
    def test_retryable_status_fails_over(
        self, clock: Clock, tmp_path: Path, central: Central, code: int
    ) -> None:
        """5xx, 429 and 408 from one url move the batch on to the next url."""
        central.codes["a"] = [(code, {})]
        stub = StubTreq(central)
        out = make(clock, tmp_path, stub)
        out.accept(event(1))
        run(stub, clock)
        assert [r["host"] for r in central.requests] == ["a", "b"]
        assert out.context.telemetry.value("obsd.output.relay.sent") == 1

    def test_all_down_retries_with_backoff_then_delivers(
        self, clock: Clock, tmp_path: Path, central: Central
    ) -> None:
        """When every url fails the queue keeps the batch and retries it after backoff."""
        stub = StubTreq(central)
        client = FailingClient(stub, {b"http://a", b"http://b"})
        out = make(clock, tmp_path, client, retry_initial=1.0)
        out.accept(event(1))
        run(stub, clock)
        assert central.requests == []
        assert out.health()["state"] == "degraded"
        assert out.context.telemetry.value("obsd.output.relay.retried") == 1
        client.down.clear()
        run(stub, clock, 1.0)
        assert len(central.requests) == 1
        assert out.health()["state"] == "ok"

    def test_retry_after_is_honoured(
        self, clock: Clock, tmp_path: Path, central: Central
    ) -> None:
        """503 with Retry-After from every url delays the retry that long."""
        central.codes["a"] = [(503, {b"retry-after": b"30"}), (200, {})]
        central.codes["b"] = [(429, {b"retry-after": b"20"}), (200, {})]
        stub = StubTreq(central)
        out = make(clock, tmp_path, stub, retry_initial=0.5)
        out.accept(event(1))
        run(stub, clock)
        assert len(central.requests) == 2
        run(stub, clock, 29.0)
        assert len(central.requests) == 2
        run(stub, clock, 1.0)
        assert len(central.requests) == 3
        assert out.context.telemetry.value("obsd.output.relay.sent") == 1

    def test_send_result_names_every_record(
        self, clock: Clock, tmp_path: Path, central: Central
    ) -> None:
        """A batch no url took comes back as a SendResult retrying every record."""
        central.codes = {"a": [(500, {})], "b": [(500, {})]}
        stub = StubTreq(central)
        out = RelayOutput("relay", config(), make_output_context(clock, tmp_path), stub)
        d = out.send([b'{"id":"1"}\n', b'{"id":"2"}\n'])
        stub.flush()
        result = success_result_of(d)
        assert isinstance(result, SendResult)
        assert result.retry == [0, 1]
        assert "HTTP 500" in result.retry_reason


class TestPermanent:
    @pytest.mark.parametrize("code", [401, 403, 400, 413])
    def test_refusal_is_dead_lettered(
        self, clock: Clock, tmp_path: Path, central: Central, code: int
    ) -> None:
        """401/403 (bad token) and other 4xx dead-letter the batch, logged, not retried."""
        central.codes["a"] = [(code, {})]
        stub = StubTreq(central)
        out = make(clock, tmp_path, stub)
        out.accept(event(1))
        run(stub, clock, 10.0)
        assert len(central.requests) == 1
        assert out.context.telemetry.value("obsd.output.relay.rejected") == 1
        assert out.context.telemetry.value("obsd.output.relay.refused") == 1
        out.context.dead_letter.close()
        (line,) = (tmp_path / "dead-letter.jsonl").read_text().splitlines()
        letter = json.loads(line)
        assert f"HTTP {code}" in letter["reason"]
        assert letter["event"]["id"] == "id1"

    def test_send_fails_with_permanent_error(
        self, clock: Clock, tmp_path: Path, central: Central
    ) -> None:
        """send() itself fails with PermanentError on 401."""
        central.codes["a"] = [(401, {})]
        stub = StubTreq(central)
        out = RelayOutput("relay", config(), make_output_context(clock, tmp_path), stub)
        d = out.send([b"{}\n"])
        stub.flush()
        failure_result_of(d, PermanentError)


class TestTimeout:
    def test_hung_url_times_out_and_fails_over(
        self, clock: Clock, tmp_path: Path, central: Central
    ) -> None:
        """A url that never answers is given up after request_timeout; the next one gets it."""
        stub = StubTreq(central)

        class Hanging(FailingClient):
            def post(self, url: bytes, **kw: Any) -> defer.Deferred[Any]:
                self.tried.append(url)
                if url.startswith(b"http://a"):
                    d: defer.Deferred[Any] = defer.Deferred()
                    kw["reactor"].callLater(kw["timeout"], d.errback, Exception("timed out"))
                    return d
                return self.stub.post(url, **kw)

        client = Hanging(stub, set())
        out = make(clock, tmp_path, client, request_timeout=5.0)
        out.accept(event(1))
        run(stub, clock)
        run(stub, clock, 4.9)
        assert central.requests == []
        run(stub, clock, 0.1)
        assert [r["host"] for r in central.requests] == ["b"]


class TestGzipBody:
    def test_body_is_gzip(self, clock: Clock, tmp_path: Path, central: Central) -> None:
        """The request body inflates to the records joined."""
        stub = StubTreq(central)
        out = make(clock, tmp_path, stub)
        out.accept(event(7))
        run(stub, clock)
        assert gzip.decompress(central.requests[0]["body"]).startswith(b'{"id":"id7"')


def partial(name: str, total: float = 1.0) -> dict[str, Any]:
    return {"id": f"p-{name}", "kind": "statsd_partial", "event": name, "metric": name,
            "metric_type": "counter", "timestamp": 10.0, "host": "agent1", "source": "statsd",
            "interval": 0, "interval_length": 10.0, "partial": {"v": 1, "sum": total}}


class TestPartialsByName:
    NAMES = [f"app.metric{i}" for i in range(12)]

    def test_each_name_goes_to_the_url_it_hashes_to(
        self, clock: Clock, tmp_path: Path, central: Central
    ) -> None:
        """Every agent sends a name's partials to one central: they add up there."""
        stub = StubTreq(central)
        out = make(clock, tmp_path, stub)
        for name in self.NAMES:
            out.accept(partial(name))
        out.accept(event(1))  # everything else: the failover queue, to the first url
        run(stub, clock)
        got: dict[str, str] = {}
        for req in central.requests:
            for item in decode_body(req["body"], gzipped=True, max_bytes=10**6, max_events=99):
                got[item.get("metric") or item["id"]] = req["host"]
        assert got.pop("id1") == "a"
        assert got == {n: "ab"[partial_url(n, 2)] for n in self.NAMES}
        assert set(got.values()) == {"a", "b"}  # the names spread over both

    def test_a_partial_waits_for_its_own_url(
        self, clock: Clock, tmp_path: Path, central: Central
    ) -> None:
        """No failover for partials: another central would split the name's interval."""
        stub = StubTreq(central)
        name = next(n for n in self.NAMES if partial_url(n, 2) == 1)  # hashes to b
        client = FailingClient(stub, {b"http://b"})
        out = make(clock, tmp_path, client, retry_initial=1.0)
        out.accept(partial(name))
        out.accept(event(1))
        run(stub, clock)
        assert [r["host"] for r in central.requests] == ["a"]  # only the other event
        assert client.tried.count(b"http://b/api/obsd/v1/events") == 1
        assert b"http://a/api/obsd/v1/events" in client.tried
        client.down.clear()  # central b is back
        run(stub, clock, 5.0)
        assert [r["host"] for r in central.requests] == ["a", "b"]

    def test_one_url_keeps_one_queue(self, clock: Clock, tmp_path: Path, central: Central) -> None:
        out = make(clock, tmp_path, StubTreq(central), urls=["http://a"])
        assert list(out.queues) == [""]

    def test_the_hash_is_the_same_everywhere(self) -> None:
        """CRC-32, not Python's per-process hash: every agent agrees."""
        assert [partial_url("app.requests", n) for n in (1, 2, 3, 5)] == [
            2497536362 % n for n in (1, 2, 3, 5)]  # CRC-32 of b"app.requests" is 2497536362
