"""The Sentry ingest resource over a real twisted.web Site in memory (treq's StubTreq)."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path
from typing import Any

import attrs
import pytest
from treq.testing import StubTreq
from twisted.internet.task import Clock

from obsd.config.model import HttpConfig, ObsdConfig
from obsd.config.schema import Problems, build
from obsd.daemon.topology import InputContext
from obsd.delivery.flowcontrol import FlowControl
from obsd.inputs import sentry
from obsd.net.web import HttpRoot
from obsd.ops.telemetry import Telemetry
from obsd.ops.throttle import ThrottledLogger
from obsd.pipeline import build_chain
from obsd.pipeline.ingest import IngestLogger
from obsd.testing import ListLog
from tests.helpers import success_result_of

DATA = Path(__file__).resolve().parent.parent / "data" / "sentry"
MANIFEST = json.loads((DATA / "manifest.json").read_text())
KEY = MANIFEST["public_key"]
SECRET = MANIFEST["secret_key"]
OTHER_KEY = "f" * 32
AUTH = f"Sentry sentry_key={KEY}, sentry_version=7, sentry_client=test/1.0"
BASE = "http://obsd.test"


class Capture:
    """The router double: what the chain hands on, by kind."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def route(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    log = error = metric = sentry = route


@attrs.define
class Harness:
    """A mounted resource, its client and what came out."""

    http: Any  # StubTreq: its HTTP methods are made at runtime
    capture: Capture
    telemetry: Telemetry
    flow: FlowControl
    clock: Clock
    root: HttpRoot

    def post(
        self, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any], Any]:
        """POST and return (status, JSON body, response headers)."""
        response = success_result_of(
            self.http.post(BASE + path, data=body, headers=headers or {})
        )
        content = success_result_of(self.http.content(response))
        return response.code, json.loads(content) if content else {}, response.headers

    def count(self, what: str) -> float:
        return self.telemetry.value(f"obsd.input.sentry.{what}")


def make_harness(mount_first: Any = None, **settings: Any) -> Harness:
    """Build the input from config settings the way topology does."""
    problems = Problems()
    config = build(sentry.Config, {"type": "sentry", **settings}, "inputs.sentry", problems)
    assert not problems, problems.lines
    clock = Clock()
    capture = Capture()
    telemetry = Telemetry()
    flow = FlowControl()
    chain = build_chain("testhost", clock.seconds, [], lambda: None, lambda *a: None)
    root = HttpRoot()
    if mount_first is not None:
        root.mount(("api", "obsd", "v1", "events"), mount_first)
    context = InputContext(
        name="sentry",
        reactor=clock,
        telemetry=telemetry,
        flow_control=flow,
        throttle=ThrottledLogger(ListLog(), clock, 10.0),
        ingest=IngestLogger(capture, chain, {"source": "sentry"}),
        http=root,
        config=ObsdConfig(http=HttpConfig(listen=["tcp:0:interface=127.0.0.1"])),
    )
    sentry.build_input("sentry", config, context)
    return Harness(StubTreq(root), capture, telemetry, flow, clock, root)


@pytest.fixture(name="harness")
def _harness() -> Harness:
    return make_harness()


def recorded(case: str) -> tuple[str, dict[str, str], bytes]:
    """The recorded path, headers and body of a real client's request."""
    entry = MANIFEST["cases"][case]
    path = "/" + entry["url"].split("/", 3)[3]
    return path, entry["headers"], (DATA / f"{case}.body").read_bytes()


def store_body(**payload: Any) -> bytes:
    return json.dumps({"message": "hello", "level": "error", **payload}).encode()


def envelope(*items: tuple[dict[str, Any], bytes], **headers: Any) -> bytes:
    lines = [json.dumps(headers).encode()]
    for item_headers, payload in items:
        lines += [json.dumps(item_headers).encode(), payload]
    return b"\n".join(lines) + b"\n"


class TestRecordedClients:
    @pytest.mark.parametrize("case", sorted(MANIFEST["cases"]))
    def test_accepted(self, harness: Harness, case: str) -> None:
        """Every recorded raven and sentry-sdk request gets 200 and its event id."""
        path, headers, body = recorded(case)
        status, answer, _ = harness.post(path, body, headers)
        assert status == 200, answer
        first = harness.capture.events[0]
        if first["kind"] == "error":
            assert answer == {"id": first["id"]}
        assert harness.count("accepted") == 1
        assert harness.count("events") == len(harness.capture.events)

    @pytest.mark.parametrize(
        ("case", "kinds"),
        [
            ("raven_exception", ["error"]),
            ("raven_message", ["error"]),
            ("sdk_exception", ["error"]),
            ("sdk_transaction", ["sentry"]),
            ("sdk_attachment", ["error", "sentry"]),
            ("sdk_session", ["sentry"]),
        ],
    )
    def test_raw_kept_once(self, harness: Harness, case: str, kinds: list[str]) -> None:
        """The body as received rides on the first event only, with its encoding and auth."""
        path, headers, body = recorded(case)
        harness.post(path, body, headers)
        assert [e["kind"] for e in harness.capture.events] == kinds
        raws = [e["_sentry_raw"] for e in harness.capture.events if "_sentry_raw" in e]
        assert raws == [
            {
                "body": body,
                "content_type": headers["Content-Type"],
                "content_encoding": headers.get("Content-Encoding"),
                "endpoint": "store" if "/store/" in path else "envelope",
                "project_id": 42,
                "auth": {
                    "sentry_key": KEY,
                    "sentry_version": 6 if case.startswith("raven") else 7,
                    "sentry_client": headers["User-Agent"],
                },
            }
        ]
        assert "sentry_secret" not in json.dumps(raws[0]["auth"])

    def test_raven_exception_event(self, harness: Harness) -> None:
        """raven's captureException comes out as the documented error event, secret scrubbed."""
        path, headers, body = recorded("raven_exception")
        harness.post(path, body, headers)
        (event,) = harness.capture.events
        assert {k: event[k] for k in ("kind", "event", "level", "source", "host", "project_id")} == {
            "kind": "error",
            "event": "ZeroDivisionError: division by zero",
            "level": "error",
            "source": "sentry",
            "host": "web-1",
            "project_id": 42,
        }
        assert event["exception_type"] == "ZeroDivisionError"
        public = {k: v for k, v in event.items() if not k.startswith("_")}
        assert SECRET not in json.dumps(public)
        assert "[Filtered]" in json.dumps(event["extra"]["sys.argv"])
        assert SECRET.encode() in zlib.decompress(event["_sentry_raw"]["body"])

    def test_sdk_transaction_event(self, harness: Harness) -> None:
        """A sentry-sdk transaction is one kind=sentry event named after it."""
        path, headers, body = recorded("sdk_transaction")
        status, answer, _ = harness.post(path, body, headers)
        (event,) = harness.capture.events
        assert status == 200
        assert (event["kind"], event["event"], event["span_count"]) == ("sentry", "GET /orders", 2)
        assert answer == {"id": event["id"]}


class TestEndpoints:
    @pytest.mark.parametrize("relay_first", [True, False])
    def test_deeper_mounts_still_resolve(self, relay_first: bool) -> None:
        """A resource mounted under /api/obsd/ (the relay input) is reached, in either order."""
        from obsd.net.web import JsonResource

        relay = JsonResource(lambda: {"relay": True})
        harness = make_harness(mount_first=relay if relay_first else None)
        if not relay_first:
            harness.root.mount(("api", "obsd", "v1", "events"), relay)
        response = success_result_of(harness.http.get(f"{BASE}/api/obsd/v1/events"))
        assert success_result_of(harness.http.json_content(response)) == {"relay": True}
        status, _, _ = harness.post("/api/3/store/", store_body(), {"X-Sentry-Auth": AUTH})
        assert status == 200

    def test_store_without_project_in_path(self, harness: Harness) -> None:
        """POST /api/store/ takes the project from the key (none in open mode)."""
        status, answer, _ = harness.post("/api/store/", store_body(), {"X-Sentry-Auth": AUTH})
        assert status == 200
        (event,) = harness.capture.events
        assert answer == {"id": event["id"]}
        assert "project_id" not in event

    def test_store_with_known_key_gets_its_project(self) -> None:
        """With projects configured, /api/store/ fills the key's project id."""
        harness = make_harness(projects=[{"id": 7, "keys": [KEY]}])
        status, _, _ = harness.post("/api/store/", store_body(), {"X-Sentry-Auth": AUTH})
        assert status == 200
        assert harness.capture.events[0]["project_id"] == 7

    def test_store_with_envelope_content_type(self, harness: Harness) -> None:
        """/store/ with Content-Type application/x-sentry-envelope parses an envelope."""
        body = envelope(({"type": "event"}, store_body(event_id="a" * 32)), event_id="a" * 32)
        status, answer, _ = harness.post(
            "/api/3/store/",
            body,
            {"X-Sentry-Auth": AUTH, "Content-Type": "application/x-sentry-envelope"},
        )
        assert (status, answer) == (200, {"id": "a" * 32})
        assert harness.capture.events[0]["_sentry_raw"]["endpoint"] == "envelope"

    def test_envelope_without_event_answers_empty(self, harness: Harness) -> None:
        """An envelope with no event id (a session) is answered with {}."""
        body = envelope(({"type": "session"}, b'{"sid":"x","status":"ok"}'))
        status, answer, _ = harness.post("/api/3/envelope/", body, {"X-Sentry-Auth": AUTH})
        assert (status, answer) == (200, {})
        assert harness.capture.events[0]["kind"] == "sentry"

    def test_envelope_auth_from_dsn(self, harness: Harness) -> None:
        """An envelope may authenticate with the dsn in its header alone."""
        body = envelope(
            ({"type": "event"}, store_body()), dsn=f"http://{KEY}@obsd.test/3"
        )
        status, _, _ = harness.post("/api/3/envelope/", body)
        assert status == 200

    def test_query_string_auth(self, harness: Harness) -> None:
        """sentry_key in the query string authenticates (browser SDKs)."""
        status, _, _ = harness.post(f"/api/3/store/?sentry_key={KEY}&sentry_version=7", store_body())
        assert status == 200

    @pytest.mark.parametrize("which", ["live", "ready"])
    def test_healthcheck(self, harness: Harness, which: str) -> None:
        """Relay's health checks answer 200 is_healthy."""
        response = success_result_of(harness.http.get(f"{BASE}/api/relay/healthcheck/{which}/"))
        assert response.code == 200
        assert success_result_of(harness.http.json_content(response)) == {"is_healthy": True}

    def test_ready_while_congested(self, harness: Harness) -> None:
        """The ready check says 503 while outputs are congested; live stays 200."""
        harness.flow.report("file", True)
        ready = success_result_of(harness.http.get(f"{BASE}/api/relay/healthcheck/ready/"))
        live = success_result_of(harness.http.get(f"{BASE}/api/relay/healthcheck/live/"))
        assert (ready.code, live.code) == (503, 200)
        assert ready.headers.getRawHeaders("retry-after") == ["5"]

    def test_cors_preflight(self, harness: Harness) -> None:
        """OPTIONS answers the preflight with the headers browser SDKs need."""
        response = success_result_of(
            harness.http.request(
                "OPTIONS",
                f"{BASE}/api/3/envelope/",
                headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
            )
        )
        assert response.code == 200
        headers = response.headers
        assert headers.getRawHeaders("access-control-allow-origin") == ["https://app.example"]
        assert "POST" in headers.getRawHeaders("access-control-allow-methods")[0]
        assert "x-sentry-auth" in headers.getRawHeaders("access-control-allow-headers")[0]
        assert not harness.capture.events

    def test_cors_headers_on_post(self, harness: Harness) -> None:
        """A POST with an Origin gets Access-Control-Allow-Origin back."""
        _, _, headers = harness.post(
            "/api/3/store/", store_body(), {"X-Sentry-Auth": AUTH, "Origin": "https://a.example"}
        )
        assert headers.getRawHeaders("access-control-allow-origin") == ["https://a.example"]

    @pytest.mark.parametrize(
        ("method", "path", "status"),
        [
            ("GET", "/api/3/store/", 405),
            ("GET", "/api/nothing/here/", 404),
            ("POST", "/api/relay/healthcheck/live/", 405),
        ],
    )
    def test_other_paths_and_methods(
        self, harness: Harness, method: str, path: str, status: int
    ) -> None:
        """Wrong methods and unknown paths get 405 and 404 with a detail."""
        response = success_result_of(harness.http.request(method, BASE + path))
        assert response.code == status
        assert "detail" in success_result_of(harness.http.json_content(response))


class TestAuthBeforeDecoding:
    def test_unknown_key_refused_before_the_body_is_decoded(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An envelope naming a wrong key in its header is 403 with no decoding work done.

        Decoding ran before auth for envelopes, so an unauthenticated client could
        make obsd inflate anything it sent.
        """
        harness = make_harness(projects=[{"id": 7, "keys": [KEY]}])
        decoded: list[int] = []
        real = sentry.sentry_body.decode_body

        def counting(body: bytes, encoding: str | None, limit: int) -> bytes:
            decoded.append(len(body))
            return real(body, encoding, limit)

        monkeypatch.setattr(sentry.sentry_body, "decode_body", counting)
        body = gzip.compress(envelope(({"type": "event"}, store_body())))
        headers = {"Content-Encoding": "gzip",
                   "X-Sentry-Auth": f"Sentry sentry_key={OTHER_KEY}, sentry_version=7"}
        status, answer, _ = harness.post("/api/7/envelope/", body, headers)
        assert status == 403
        assert answer["detail"].startswith("event submission rejected")
        assert decoded == []
        # the same envelope with the right key is decoded and taken
        headers["X-Sentry-Auth"] = AUTH
        status, _, _ = harness.post("/api/7/envelope/", body, headers)
        assert status == 200
        assert decoded == [len(body)]


class TestEnvelopeItemCap:
    def test_too_many_items_is_413_and_nothing_is_taken(self) -> None:
        """One envelope of many tiny items became that many events; now it is refused whole."""
        harness = make_harness(max_envelope_items=3)
        items = [({"type": "event"}, store_body(message=f"m{i}")) for i in range(4)]
        status, answer, _ = harness.post(
            "/api/7/envelope/", envelope(*items), {"X-Sentry-Auth": AUTH}
        )
        assert status == 413
        assert answer == {"detail": "request body exceeded the size limit",
                          "causes": ["more than 3 items"]}
        assert harness.capture.events == []
        status, _, _ = harness.post(
            "/api/7/envelope/", envelope(*items[:3]), {"X-Sentry-Auth": AUTH}
        )
        assert status == 200


def gzip_bomb() -> bytes:
    return gzip.compress(b"{" + b" " * (8 * 1024 * 1024) + b"}", compresslevel=9)


class TestBadRequests:
    @pytest.mark.parametrize(
        ("path", "body", "headers", "status", "detail"),
        [
            ("/api/3/store/", store_body(), {}, 401, "missing authorization information"),
            (
                "/api/3/store/",
                store_body(),
                {"X-Sentry-Auth": "Sentry sentry_version=7"},
                401,
                "bad x-sentry-auth header",
            ),
            (
                "/api/3/store/",
                store_body(),
                {"X-Sentry-Auth": AUTH, "Authorization": f"Sentry sentry_key={OTHER_KEY}"},
                401,
                "multiple authorization payloads detected",
            ),
            (
                "/api/3/store/",
                store_body(),
                {"X-Sentry-Auth": "Sentry sentry_key=short"},
                400,
                "bad sentry DSN public key",
            ),
            ("/api/x/store/", store_body(), {"X-Sentry-Auth": AUTH}, 400, "bad project path parameter"),
            ("/api/3/store/", b"", {"X-Sentry-Auth": AUTH}, 400, "empty request body"),
            ("/api/3/store/", b"{not json", {"X-Sentry-Auth": AUTH}, 400, "invalid JSON data"),
            (
                "/api/3/store/",
                gzip.compress(store_body())[:-12],
                {"X-Sentry-Auth": AUTH, "Content-Encoding": "gzip"},
                400,
                "invalid request body",
            ),
            (
                "/api/3/envelope/",
                b"garbage\n{]\n",
                {"X-Sentry-Auth": AUTH},
                400,
                "invalid event envelope",
            ),
            (
                "/api/3/envelope/",
                envelope(({"type": "event"}, store_body()), dsn=f"http://{KEY}@h/4"),
                {"X-Sentry-Auth": AUTH},
                400,
                "invalid event envelope",
            ),
            (
                "/api/3/store/",
                gzip_bomb(),
                {"X-Sentry-Auth": AUTH, "Content-Encoding": "gzip"},
                413,
                "request body exceeded the size limit",
            ),
            (
                "/api/3/store/",
                b"{" + b" " * (2 * 1024 * 1024) + b"}",
                {"X-Sentry-Auth": AUTH},
                413,
                "request body exceeded the size limit",
            ),
        ],
        ids=[
            "no-auth",
            "auth-without-key",
            "two-keys",
            "bad-key",
            "bad-project",
            "empty",
            "bad-json",
            "truncated-gzip",
            "garbage-envelope",
            "dsn-project-mismatch",
            "gzip-bomb",
            "too-large",
        ],
    )
    def test_refused(
        self,
        harness: Harness,
        path: str,
        body: bytes,
        headers: dict[str, str],
        status: int,
        detail: str,
    ) -> None:
        """Each bad request class gets Relay's status and detail, is counted, emits nothing."""
        got, answer, response_headers = harness.post(path, body, headers)
        assert (got, answer["detail"]) == (status, detail)
        assert response_headers.getRawHeaders("x-sentry-error") == [detail]
        assert harness.count(f"rejected.{status}") == 1
        assert harness.count("accepted") == 0
        assert harness.capture.events == []

    @pytest.mark.parametrize(
        ("path", "key", "cause"),
        [
            ("/api/7/store/", OTHER_KEY, "unknown public key"),
            ("/api/8/store/", KEY, "project id and key disagree"),
        ],
    )
    def test_key_not_allowed(self, path: str, key: str, cause: str) -> None:
        """With projects configured, an unknown key or another project's key gets 403."""
        harness = make_harness(projects=[{"id": 7, "keys": [KEY]}, {"id": 8, "keys": ["e" * 32]}])
        status, answer, _ = harness.post(path, store_body(), {"X-Sentry-Auth": f"Sentry sentry_key={key}"})
        assert (status, answer) == (
            403,
            {"detail": "event submission rejected with_reason: ProjectId", "causes": [cause]},
        )
        assert harness.count("rejected.403") == 1

    def test_event_item_over_event_limit(self) -> None:
        """An envelope's event item over max_event_bytes refuses the envelope with 413."""
        harness = make_harness(max_event_bytes=2048)
        body = envelope(({"type": "event"}, store_body(extra={"blob": "x" * 4096})))
        status, answer, _ = harness.post("/api/3/envelope/", body, {"X-Sentry-Auth": AUTH})
        assert (status, answer["causes"]) == (413, ["event item over 2048 bytes"])
        assert harness.capture.events == []

    def test_unexpected_error_is_a_json_500(
        self, harness: Harness, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A bug in parsing answers 500 with a detail and is counted, not a Twisted error page."""

        def broken(*_args: Any) -> Any:
            raise KeyError("bug")

        monkeypatch.setattr(sentry.sentry_fields, "error_event_fields", broken)
        status, answer, _ = harness.post("/api/3/store/", store_body(), {"X-Sentry-Auth": AUTH})
        assert (status, answer) == (500, {"detail": "internal server error"})
        assert harness.count("rejected.500") == 1

    def test_declared_length_over_limit_refused_unread(self) -> None:
        """A Content-Length over max_event_bytes is refused with 413 before decoding."""
        harness = make_harness(max_event_bytes=2048)
        status, answer, _ = harness.post("/api/3/store/", b"x" * 4096, {"X-Sentry-Auth": AUTH})
        assert (status, answer["detail"]) == (413, "request body exceeded the size limit")
        assert harness.count("bytes") == 0

    @pytest.mark.parametrize("shed_status", [503, 429])
    def test_congested(self, shed_status: int) -> None:
        """While outputs are congested requests get 503 (or 429) with Retry-After."""
        harness = make_harness(shed_status=shed_status)
        harness.flow.report("file", True)
        status, answer, headers = harness.post("/api/3/store/", store_body(), {"X-Sentry-Auth": AUTH})
        assert status == shed_status
        assert "detail" in answer
        assert headers.getRawHeaders("retry-after") == ["5"]
        assert harness.count("shed") == 1
        assert harness.capture.events == []
        harness.flow.report("file", False)
        assert harness.post("/api/3/store/", store_body(), {"X-Sentry-Auth": AUTH})[0] == 200


class TestScrubbing:
    def test_default_rules(self, harness: Harness) -> None:
        """Passwords, tokens and URL secrets are filtered from the event; raw stays intact."""
        body = store_body(
            extra={"password": "hunter2", "db": "postgres://u:pw123@db/x", "note": "fine"},
        )
        harness.post("/api/3/store/", body, {"X-Sentry-Auth": AUTH})
        (event,) = harness.capture.events
        assert event["extra"] == {
            "password": "[Filtered]",
            "db": "postgres://u:[Filtered]@db/x",
            "note": "fine",
        }
        assert event["_sentry_raw"]["body"] == body

    def test_extra_keys_and_no_defaults(self) -> None:
        """scrub.keys adds patterns; scrub.defaults = false drops the default ones."""
        harness = make_harness(scrub={"keys": ["card"], "defaults": False})
        body = store_body(extra={"card_number": "4111", "password": "kept"})
        harness.post("/api/3/store/", body, {"X-Sentry-Auth": AUTH})
        assert harness.capture.events[0]["extra"] == {
            "card_number": "[Filtered]",
            "password": "kept",
        }


class TestConfig:
    def whole(self, *listen: str) -> ObsdConfig:
        return ObsdConfig(http=HttpConfig(listen=list(listen)))

    @pytest.mark.parametrize(
        ("listen", "settings", "ok"),
        [
            (["tcp:9000:interface=127.0.0.1"], {}, True),
            (["unix:/run/obsd.sock"], {}, True),
            (["tcp:9000"], {}, False),
            (["tcp:9000:interface=127.0.0.1", "tcp:9001:interface=10.0.0.1"], {}, False),
            (["tcp:9000"], {"allow_any_key": True}, True),
            (["tcp:9000"], {"projects": [{"id": 1, "keys": [KEY]}]}, True),
        ],
    )
    def test_open_key_list_needs_loopback(
        self, listen: list[str], settings: dict[str, Any], ok: bool
    ) -> None:
        """Without projects, any non-loopback [http] listener is a problem unless allowed."""
        problems = Problems()
        config = build(sentry.Config, {"type": "sentry", **settings}, "inputs.sentry", problems)
        sentry.check_config("sentry", config, self.whole(*listen), problems)
        assert (not problems) == ok, problems.lines
        if not ok:
            assert problems.lines[0].startswith("inputs.sentry.projects: empty, so any key")

    @pytest.mark.parametrize(
        ("projects", "line"),
        [
            (
                [{"id": 1, "keys": ["nope"]}],
                "inputs.sentry.projects[0].keys: public keys are 32 characters of "
                "[0-9A-Za-z_-]; not: nope",
            ),
            (
                [{"id": 1, "keys": [KEY]}, {"id": 2, "keys": [KEY]}],
                f"inputs.sentry.projects[1].keys: key {KEY} belongs to project 1 already",
            ),
        ],
    )
    def test_bad_keys(self, projects: list[dict[str, Any]], line: str) -> None:
        """A malformed key, or a key in two projects, is a problem line."""
        problems = Problems()
        config = build(sentry.Config, {"projects": projects}, "inputs.sentry", problems)
        sentry.check_config("sentry", config, self.whole("tcp:9000"), problems)
        assert problems.lines == [line]

    def test_default_config_accepts_any_key_on_loopback(self) -> None:
        """The embedded default has [inputs.sentry] on loopback [http], any key accepted."""
        from obsd.config.loader import load_default

        config = load_default(env={})
        cfg = config.inputs["sentry"]
        assert isinstance(cfg, sentry.Config)
        assert cfg.projects == []
        problems = Problems()
        sentry.check_config("sentry", cfg, config, problems)
        assert not problems
