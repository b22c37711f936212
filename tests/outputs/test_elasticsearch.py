"""The Elasticsearch output against treq's in-memory stubs, with time on a Clock."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import attrs
import pytest
from treq.testing import RequestSequence, StringStubbingResource, StubTreq
from twisted.internet import defer, error
from twisted.internet.task import Clock

from obsd.config.model import ObsdConfig
from obsd.config.schema import Problems
from obsd.outputs.elasticsearch import Config, ElasticsearchOutput, check_config
from obsd.testing import make_output_context

T0 = 1764000000.25  # 2025-11-24T16:00:00.25Z
DAY = 86400.0
ALL_OK = b'{"took":3,"errors":false,"items":[]}'

Answer = tuple[int, dict[str, str], bytes]


@attrs.define
class Seen:
    """One request as the stub resource saw it."""

    method: bytes
    url: str
    headers: dict[bytes, list[bytes]]
    data: bytes

    @property
    def body(self) -> bytes:
        if self.headers.get(b"Content-Encoding") == [b"gzip"]:
            return gzip.decompress(self.data)
        return self.data

    @property
    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.body.splitlines()]


class Responder:
    """Records every request and answers from a script (then ``errors: false``)."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.answers: list[Answer | Callable[[Seen], Answer]] = []

    def __call__(
        self, method: bytes, url: str, params: Any, headers: Any, data: bytes
    ) -> Answer:
        request = Seen(method, url, headers, data)
        self.seen.append(request)
        if not self.answers:
            return (200, {}, ALL_OK)
        answer = self.answers.pop(0)
        return answer(request) if callable(answer) else answer

    @property
    def bulks(self) -> list[Seen]:
        return [r for r in self.seen if r.url.endswith("/_bulk")]


class FlakyHosts:
    """An HTTP client that refuses connections to some hosts and passes the rest on."""

    def __init__(self, inner: Any, down: set[str]) -> None:
        self.inner = inner
        self.down = down
        self.refused: list[str] = []

    def request(self, method: str, url: str, **kwargs: Any) -> defer.Deferred[Any]:
        host = url.split("/")[2]
        if host in self.down:
            self.refused.append(host)
            return defer.fail(error.ConnectionRefusedError("Connection refused"))
        return self.inner.request(method, url, **kwargs)


@pytest.fixture(name="responder")
def _responder() -> Responder:
    return Responder()


def make(
    clock: Clock,
    tmp_path: Path,
    responder: Responder,
    *,
    wrap: Callable[[StubTreq], Any] = lambda stub: stub,
    **settings: Any,
) -> ElasticsearchOutput:
    settings.setdefault("urls", ["http://es1:9200"])
    settings.setdefault("template", False)
    config = Config(type="elasticsearch", **settings)
    stub = StubTreq(StringStubbingResource(responder))
    out = ElasticsearchOutput("es", config, make_output_context(clock, tmp_path), wrap(stub))
    out.startService()
    return out


def event(i: int, ts: float = T0, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"e{i}",
        "event": f"hello {i}",
        "kind": "log",
        "level": "info",
        "source": "test",
        "host": "h1",
        "timestamp": ts,
        "_private": "never indexed",
        **extra,
    }


def items(*statuses: tuple[int, dict[str, Any] | None]) -> bytes:
    out = []
    for status, problem in statuses:
        item: dict[str, Any] = {"_index": "obsd-2025.11.24", "status": status}
        if problem:
            item["error"] = problem
        out.append({"index": item})
    return json.dumps({"took": 1, "errors": True, "items": out}).encode()


MAPPING_ERROR = {
    "type": "mapper_parsing_exception",
    "reason": "failed to parse field [value] of type [double]",
    "caused_by": {"type": "number_format_exception", "reason": 'For input string: "abc"'},
}
QUEUE_FULL = {"type": "es_rejected_execution_exception", "reason": "queue is full"}


def dead_letters(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "dead-letter.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class TestDocuments:
    def test_ndjson_body(self, clock: Clock, tmp_path: Path, responder: Responder) -> None:
        """A batch is one POST to /_bulk: an action and a source line per event, NDJSON."""
        out = make(clock, tmp_path, responder, batch_size=2)
        out.accept(event(2))
        assert responder.seen == []
        out.accept(event(3))
        (request,) = responder.bulks
        assert request.method == b"POST"
        assert request.url == "http://es1:9200/_bulk"
        assert request.headers[b"Content-Type"] == [b"application/x-ndjson"]
        assert request.body.endswith(b"\n")
        action, source, action2, _ = request.lines
        assert action == {"index": {"_index": "obsd-2025.11.24", "_id": "e2"}}
        assert action2["index"]["_id"] == "e3"
        assert source == {
            "@timestamp": "2025-11-24T16:00:00.250000Z",
            "id": "e2",
            "event": "hello 2",
            "kind": "log",
            "level": "info",
            "source": "test",
            "host": "h1",
        }
        assert out.health()["state"] == "ok"
        assert out.queues[""]._sent.value == 2

    def test_gzip(self, clock: Clock, tmp_path: Path, responder: Responder) -> None:
        """With gzip, the body is gzip-compressed NDJSON with Content-Encoding: gzip."""
        out = make(clock, tmp_path, responder, batch_size=1, gzip=True)
        out.accept(event(1))
        (request,) = responder.bulks
        assert request.headers[b"Content-Encoding"] == [b"gzip"]
        assert request.data[:2] == b"\x1f\x8b"
        assert request.body == out.encode(event(1))

    @pytest.mark.parametrize(
        ("settings", "expected"),
        [
            ({}, None),
            (
                {"username": "obsd", "password": "s3cret"},
                b"Basic " + base64.b64encode(b"obsd:s3cret"),
            ),
            ({"api_key": "aWQ6a2V5"}, b"ApiKey aWQ6a2V5"),
        ],
    )
    def test_auth_headers(
        self,
        clock: Clock,
        tmp_path: Path,
        responder: Responder,
        settings: dict[str, Any],
        expected: bytes | None,
    ) -> None:
        """Basic auth or an API key goes in Authorization; without either, nothing does."""
        out = make(clock, tmp_path, responder, batch_size=1, **settings)
        out.accept(event(1))
        (request,) = responder.bulks
        assert request.headers.get(b"Authorization") == (None if expected is None else [expected])

    def test_index_by_event_time(
        self, clock: Clock, tmp_path: Path, responder: Responder
    ) -> None:
        """Each document's index comes from its own timestamp, not from the clock."""
        clock.advance(T0 + 100 * DAY)
        out = make(clock, tmp_path, responder, batch_size=3, index="logs-%Y.%m.%d")
        out.accept(event(1, T0))
        out.accept(event(2, T0 + DAY))
        out.accept(event(3, T0 - 365 * DAY))
        lines = responder.bulks[0].lines
        assert [a["index"]["_index"] for a in lines[::2]] == [
            "logs-2025.11.24",
            "logs-2025.11.25",
            "logs-2024.11.24",
        ]
        assert lines[3]["@timestamp"] == "2025-11-25T16:00:00.250000Z"

    def test_data_stream_creates(self, clock: Clock, tmp_path: Path, responder: Responder) -> None:
        """In data-stream mode every action is a create into the stream, with the id."""
        out = make(clock, tmp_path, responder, batch_size=1, index="logs-obsd", data_stream=True)
        out.accept(event(1))
        assert responder.bulks[0].lines[0] == {"create": {"_index": "logs-obsd", "_id": "e1"}}

    def test_id_is_event_id(self, clock: Clock, tmp_path: Path, responder: Responder) -> None:
        """A retried batch carries the same _id values, so it never duplicates."""
        responder.answers.append((503, {}, b'{"error":"unavailable","status":503}'))
        out = make(clock, tmp_path, responder, batch_size=2)
        out.accept(event(1))
        out.accept(event(2))
        clock.advance(1.0)
        first, second = responder.bulks
        assert first.body == second.body
        assert [a["index"]["_id"] for a in second.lines[::2]] == ["e1", "e2"]


class TestFailures:
    def test_partial_retry(self, clock: Clock, tmp_path: Path, responder: Responder) -> None:
        """Items answered 429 are sent again after the backoff; the others are not."""
        responder.answers.append((200, {}, items((201, None), (429, QUEUE_FULL), (200, None))))
        out = make(clock, tmp_path, responder, batch_size=3)
        for i in range(3):
            out.accept(event(i))
        assert len(responder.bulks) == 1
        queue = out.queues[""]
        assert queue._sent.value == 2
        assert queue.last_error == "429 es_rejected_execution_exception: queue is full"
        assert out.health()["state"] == "degraded"
        clock.advance(0.375)  # backoff_delay(1, 0.5, ...) with random 0.5
        assert len(responder.bulks) == 2
        assert [a["index"]["_id"] for a in responder.bulks[1].lines[::2]] == ["e1"]
        assert queue._sent.value == 3
        assert out.health()["state"] == "ok"
        assert dead_letters(tmp_path) == []

    def test_block_retried(self, clock: Clock, tmp_path: Path, responder: Responder) -> None:
        """A cluster_block_exception (read_only_allow_delete) is retried, not rejected."""
        block = {
            "type": "cluster_block_exception",
            "reason": "index [x] blocked by: [TOO_MANY_REQUESTS/12/disk usage exceeded flood-stage"
            " watermark, index has read-only-allow-delete block];",
        }
        responder.answers.append((200, {}, items((429, block))))
        out = make(clock, tmp_path, responder, batch_size=1)
        out.accept(event(1))
        clock.advance(0.375)
        assert len(responder.bulks) == 2
        assert out.queues[""]._rejected.value == 0

    def test_mapping_conflict_dead_letters(
        self, clock: Clock, tmp_path: Path, responder: Responder
    ) -> None:
        """A mapping conflict goes to the dead-letter file with the status and ES's reason."""
        responder.answers.append((200, {}, items((200, None), (400, MAPPING_ERROR))))
        out = make(clock, tmp_path, responder, batch_size=2)
        out.accept(event(1, value=1.5))
        out.accept(event(2, value="abc"))
        clock.advance(60)
        assert len(responder.bulks) == 1
        (letter,) = dead_letters(tmp_path)
        assert letter["output"] == "es"
        assert letter["reason"] == (
            "400 mapper_parsing_exception: failed to parse field [value] of type [double]; "
            'caused by number_format_exception: For input string: "abc"'
        )
        assert letter["event"]["id"] == "e2"
        assert letter["event"]["value"] == "abc"
        assert letter["event"]["_index"] == "obsd-2025.11.24"
        assert out.queues[""]._rejected.value == 1
        assert out.health()["state"] == "ok"

    def test_429_whole_request_backs_off(self, clock: Clock, tmp_path: Path) -> None:
        """A whole-request 429 retries the whole batch with growing backoff, then lands."""
        failures: list[str] = []
        busy: Answer = (429, {}, b'{"error":{"type":"es_rejected_execution_exception","reason":"busy"},'
                         b'"status":429}')
        request: tuple[Any, ...] = (b"post", "http://es1:9200/_bulk", {}, mock.ANY, mock.ANY)
        sequence = RequestSequence(
            [(request, busy), (request, busy), (request, (200, {}, ALL_OK))], failures.append
        )
        config = Config(type="elasticsearch", urls=["http://es1:9200"], template=False,
                        batch_size=2)
        stub = StubTreq(StringStubbingResource(sequence))
        out = ElasticsearchOutput("es", config, make_output_context(clock, tmp_path), stub)
        out.startService()
        queue = out.queues[""]
        with sequence.consume(failures.append):
            out.accept(event(1))
            out.accept(event(2))
            assert queue.failures_in_row == 1
            clock.advance(0.37)
            assert queue.failures_in_row == 1  # still backing off
            clock.advance(0.01)  # 0.375: first retry
            assert queue.failures_in_row == 2
            clock.advance(0.74)
            assert queue.failures_in_row == 2
            clock.advance(0.01)  # 0.75: second retry, answered 200
            assert queue.failures_in_row == 0
        assert failures == []
        assert queue._sent.value == 2
        assert queue._retried.value == 4
        assert dead_letters(tmp_path) == []

    def test_retry_after_honoured(self, clock: Clock, tmp_path: Path, responder: Responder) -> None:
        """A 429 with Retry-After waits that long even when the backoff is shorter."""
        responder.answers.append((429, {"Retry-After": "7"}, b'{"error":"busy","status":429}'))
        out = make(clock, tmp_path, responder, batch_size=1)
        out.accept(event(1))
        clock.advance(6.9)
        assert len(responder.bulks) == 1
        clock.advance(0.1)
        assert len(responder.bulks) == 2

    def test_bad_request_bisected(self, clock: Clock, tmp_path: Path, responder: Responder) -> None:
        """A whole-request 400 is split until the one refused document is dead-lettered."""

        def judge(request: Seen) -> Answer:
            if b'"id":"e2"' in request.body:
                return (400, {}, b'{"error":{"type":"parse_exception","reason":"bad"},"status":400}')
            return (200, {}, ALL_OK)

        responder.answers.extend([judge] * 10)
        out = make(clock, tmp_path, responder, batch_size=4)
        for i in range(4):
            out.accept(event(i))
        (letter,) = dead_letters(tmp_path)
        assert letter["event"]["id"] == "e2"
        assert letter["reason"] == "400 parse_exception: bad"
        assert out.queues[""]._sent.value == 3

    @pytest.mark.parametrize("code", [401, 403, 404])
    def test_config_errors_kept(
        self, clock: Clock, tmp_path: Path, responder: Responder, code: int
    ) -> None:
        """401/403/404 keep the batch and retry it: a configuration problem loses nothing."""
        responder.answers.append((code, {}, b'{"error":{"type":"security_exception","reason":"no"}}'))
        out = make(clock, tmp_path, responder, batch_size=1)
        out.accept(event(1))
        assert out.queues[""].last_error.endswith(f"{code} security_exception: no")
        clock.advance(0.375)
        assert len(responder.bulks) == 2
        assert dead_letters(tmp_path) == []

    def test_stuck_output_fails_health(
        self, clock: Clock, tmp_path: Path, responder: Responder
    ) -> None:
        """An output that keeps failing says failing in health after failing_after."""
        responder.answers.extend([(503, {}, b"{}")] * 100)
        out = make(clock, tmp_path, responder, batch_size=1, failing_after=30.0, retry_max=5.0)
        out.accept(event(1))
        for _ in range(10):
            clock.advance(5.0)
        assert out.health()["state"] == "failing"
        assert out.health()["destinations"]["default"]["queued"] == 1


class TestNodes:
    def test_round_robin(self, clock: Clock, tmp_path: Path, responder: Responder) -> None:
        """Healthy nodes take turns."""
        out = make(clock, tmp_path, responder, batch_size=1,
                   urls=["http://es1:9200", "http://es2:9200/"])
        for i in range(4):
            out.accept(event(i))
        assert [r.url for r in responder.bulks] == [
            "http://es1:9200/_bulk",
            "http://es2:9200/_bulk",
            "http://es1:9200/_bulk",
            "http://es2:9200/_bulk",
        ]

    def test_failover(self, clock: Clock, tmp_path: Path, responder: Responder) -> None:
        """A node that refuses connections is skipped at once and for a while, then tried again."""
        flaky: list[FlakyHosts] = []

        def wrap(stub: StubTreq) -> FlakyHosts:
            flaky.append(FlakyHosts(stub, {"es1:9200"}))
            return flaky[0]

        out = make(clock, tmp_path, responder, wrap=wrap, batch_size=1,
                   urls=["http://es1:9200", "http://es2:9200"])
        for i in range(3):
            out.accept(event(i))
        assert [r.url for r in responder.bulks] == ["http://es2:9200/_bulk"] * 3
        assert flaky[0].refused == ["es1:9200"]
        assert out.queues[""]._sent.value == 3
        assert out.health()["state"] == "ok"
        flaky[0].down.clear()
        clock.advance(5.0)
        out.accept(event(3))
        out.accept(event(4))
        assert {r.url for r in responder.bulks[3:]} == {
            "http://es1:9200/_bulk",
            "http://es2:9200/_bulk",
        }

    def test_5xx_fails_over(self, clock: Clock, tmp_path: Path, responder: Responder) -> None:
        """A node answering 503 is left for the next node within the same send."""
        responder.answers.append((503, {}, b'{"error":"down","status":503}'))
        out = make(clock, tmp_path, responder, batch_size=1,
                   urls=["http://es1:9200", "http://es2:9200"])
        out.accept(event(1))
        assert [r.url for r in responder.bulks] == [
            "http://es1:9200/_bulk",
            "http://es2:9200/_bulk",
        ]
        assert out.queues[""]._sent.value == 1

    def test_timeout_fails_over(self, clock: Clock, tmp_path: Path) -> None:
        """A node that does not answer within request_timeout is left for the next one."""
        from twisted.web.resource import Resource
        from twisted.web.server import NOT_DONE_YET

        class HangsOnEs1(Resource):
            isLeaf = True

            def render_POST(self, request: Any) -> Any:
                if request.getHeader(b"host") == b"es1:9200":
                    return NOT_DONE_YET
                return ALL_OK

        config = Config(type="elasticsearch", urls=["http://es1:9200", "http://es2:9200"],
                        template=False, batch_size=1, request_timeout=10.0)
        stub = StubTreq(HangsOnEs1())
        out = ElasticsearchOutput("es", config, make_output_context(clock, tmp_path), stub)
        out.startService()
        out.accept(event(1))
        queue = out.queues[""]
        assert queue._sent.value == 0
        clock.advance(10.0)
        stub.flush()
        assert queue._sent.value == 1
        assert out._failovers.value == 1
        assert queue.failures_in_row == 0

    def test_all_down_retries(self, clock: Clock, tmp_path: Path, responder: Responder) -> None:
        """When every node fails, the batch goes back to the queue, naming each node's error."""
        out = make(clock, tmp_path, responder,
                   wrap=lambda stub: FlakyHosts(stub, {"es1:9200", "es2:9200"}),
                   batch_size=1, urls=["http://es1:9200", "http://es2:9200"])
        out.accept(event(1))
        queue = out.queues[""]
        assert queue.failures_in_row == 1
        assert "http://es1:9200: Connection was refused" in queue.last_error
        assert "http://es2:9200: Connection was refused" in queue.last_error
        assert len(queue.buffer) == 1


class TestTemplate:
    def test_installed_before_documents(
        self, clock: Clock, tmp_path: Path, responder: Responder
    ) -> None:
        """The index template is PUT at start, mapping the fields Kibana users expect."""
        out = make(clock, tmp_path, responder, batch_size=1, template=True)
        (put,) = responder.seen
        assert (put.method, put.url) == (b"PUT", "http://es1:9200/_index_template/obsd")
        body = json.loads(put.data)
        assert body["index_patterns"] == ["obsd-*"]
        props = body["template"]["mappings"]["properties"]
        assert props["@timestamp"] == {"type": "date"}
        assert props["event"]["fields"]["keyword"]["type"] == "keyword"
        out.accept(event(1))
        assert len(responder.seen) == 2
        assert out.template_installed

    def test_retried_until_installed(
        self, clock: Clock, tmp_path: Path, responder: Responder
    ) -> None:
        """A failing template install is retried; documents wait for it without being lost."""
        refusal: Answer = (500, {}, b'{"error":{"type":"x","reason":"not yet"},"status":500}')
        responder.answers.extend([refusal, refusal])
        out = make(clock, tmp_path, responder, batch_size=1, template=True)
        assert not out.template_installed
        out.accept(event(1))  # tries the template again first, fails again
        assert responder.bulks == []
        assert "not yet" in out.queues[""].last_error
        clock.advance(1.0)
        assert out.template_installed
        clock.advance(1.0)
        assert len(responder.bulks) == 1
        assert out.queues[""]._sent.value == 1

    def test_template_file(self, clock: Clock, tmp_path: Path, responder: Responder) -> None:
        """template = a path installs that JSON body instead of obsd's."""
        path = tmp_path / "t.json"
        path.write_text('{"index_patterns": ["mine-*"], "priority": 300}')
        make(clock, tmp_path, responder, template=str(path), template_name="mine")
        (put,) = responder.seen
        assert put.url.endswith("/_index_template/mine")
        assert json.loads(put.data) == {"index_patterns": ["mine-*"], "priority": 300}


class TestCheckConfig:
    @pytest.mark.parametrize(
        ("settings", "problem"),
        [
            ({"urls": []}, "outputs.es.urls: needs at least one url"),
            ({"urls": ["es1:9200"]}, "outputs.es.urls[0]: expected http(s)://host[:port]"),
            ({"api_key": "k", "username": "u"}, "outputs.es.api_key: give either"),
            ({"password": "p"}, "outputs.es.password: a password needs a username"),
            ({"data_stream": True}, "outputs.es.index: a data stream has one name"),
            ({"template": "/nonexistent.json"}, "outputs.es.template: cannot load template"),
            ({"ca_file": "/nonexistent.pem"}, "outputs.es.ca_file: cannot load CA bundle"),
            ({"gzip_level": 10}, "outputs.es.gzip_level: must be at most 9"),
        ],
    )
    def test_problems(self, settings: dict[str, Any], problem: str) -> None:
        """Each bad setting is reported with its key path."""
        problems = Problems()
        check_config("es", Config(type="elasticsearch", **settings), ObsdConfig(), problems)
        assert len(problems.lines) == 1
        assert problems.lines[0].startswith(problem)

    def test_defaults_are_fine(self) -> None:
        """The default config has no problems."""
        problems = Problems()
        check_config("es", Config(type="elasticsearch"), ObsdConfig(), problems)
        assert problems.lines == []


def self_signed_pem(name: str) -> bytes:
    """A throwaway self-signed CA certificate."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


class TestTemplateName:
    @pytest.mark.parametrize(
        ("index", "name"),
        [
            ("obsd-%Y.%m.%d", "obsd"),
            ("logs-app-%Y.%m", "logs-app"),
            ("%Y.%m.%d-web", "web"),
            ("logs-obsd", "logs-obsd"),
            ("%Y.%m.%d", "obsd"),
        ],
    )
    def test_named_after_index(self, index: str, name: str) -> None:
        """Outputs writing the same indices share one template name."""
        from obsd.outputs.elasticsearch import default_template_name

        assert default_template_name(index) == name


class TestTls:
    def test_ca_file_trusted(self, tmp_path: Path) -> None:
        """A PEM bundle of several CAs loads, passes the config check and builds a client."""
        from obsd.net.httpclient import make_http_client

        pems = [self_signed_pem(f"ca{i}") for i in (1, 2)]
        bundle = tmp_path / "ca.pem"
        bundle.write_bytes(b"".join(pems))
        config = Config(type="elasticsearch", urls=["https://es1:9200"], ca_file=str(bundle))
        problems = Problems()
        check_config("es", config, ObsdConfig(), problems)
        assert problems.lines == []
        clock = Clock()
        client, pool = make_http_client(clock, connect_timeout=5.0, ca_file=config.ca_file)
        assert client is not None
        assert pool.persistent

    def test_not_pem(self, tmp_path: Path) -> None:
        """A file without certificates is a config problem."""
        bundle = tmp_path / "ca.pem"
        bundle.write_text("hello")
        problems = Problems()
        check_config("es", Config(type="elasticsearch", ca_file=str(bundle)), ObsdConfig(), problems)
        assert problems.lines == [
            "outputs.es.ca_file: cannot load CA bundle: no PEM certificate in the file"
        ]
