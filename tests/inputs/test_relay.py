"""The relay input: bearer tokens, gzip NDJSON, dedupe by id, 503 while congested."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.task import Clock

from obsd.codecs.relaywire import encode_event
from obsd.config.loader import parse_config
from obsd.config.schema import Problems
from obsd.delivery.flowcontrol import FlowControl
from obsd.inputs.relay import Config, RelayResource, SeenIds, check_config
from obsd.net.web import HttpRoot
from obsd.ops.telemetry import Telemetry
from obsd.ops.throttle import ThrottledLogger
from obsd.pipeline import build_chain
from obsd.pipeline.ingest import IngestLogger
from obsd.testing import ListLog
from tests.helpers import success_result_of

URL = "http://central/api/obsd/v1/events"
GOOD = {b"Authorization": [b"Bearer tok-a"], b"Content-Encoding": [b"gzip"]}


class Recorder:
    """The router double: records (kind, event)."""

    def __init__(self) -> None:
        self.got: list[tuple[str, dict[str, Any]]] = []

    def _take(self, kind: str) -> Any:
        return lambda event: self.got.append((kind, event))

    def route_many(self, kind: str, batch: list[dict[str, Any]]) -> None:
        """A batch's run of one kind (what the relay input hands on)."""
        self.got.extend((kind, event) for event in batch)

    def __getattr__(self, kind: str) -> Any:
        return self._take(kind)


class Context:
    """Just what the relay input uses of an InputContext."""

    def __init__(self, clock: Clock, recorder: Recorder) -> None:
        self.reactor = clock
        self.telemetry = Telemetry()
        self.flow_control = FlowControl(retry_after=7)
        self.throttle = ThrottledLogger(ListLog(), clock, 10.0)
        self.http = HttpRoot()
        chain = build_chain("central", clock.seconds, [], lambda: None, lambda *a: None)
        self.make_ingest = lambda **ctx: IngestLogger(recorder, chain, ctx)


@pytest.fixture(name="clock")
def _clock() -> Clock:
    clock = Clock()
    clock.advance(1000)
    return clock


@pytest.fixture(name="recorder")
def _recorder() -> Recorder:
    return Recorder()


@pytest.fixture(name="context")
def _context(clock: Clock, recorder: Recorder) -> Context:
    return Context(clock, recorder)


def make(context: Context, **settings: Any) -> tuple[RelayResource, StubTreq]:
    config = parse_config(
        {"http": {"listen": ["tcp:0"]},
         "inputs": {"relay": {"tokens": [{"name": "a", "token": "tok-a"}], **settings}}}
    ).inputs["relay"]
    resource = RelayResource("relay", config, context)  # type: ignore[arg-type]
    return resource, StubTreq(resource)


def event(i: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"id{i}", "kind": "log", "event": f"line {i}", "timestamp": 10.0 + i,
            "host": "agent1", "source": "syslog", "level": "info", **extra}


def body(evs: list[dict[str, Any]], gzipped: bool = True) -> bytes:
    data = b"".join(encode_event(e) for e in evs)
    return gzip.compress(data) if gzipped else data


def post(stub: StubTreq, data: bytes, headers: dict[bytes, list[bytes]] | None = None) -> tuple[int, Any]:
    d = stub.post(URL, data=data, headers=GOOD if headers is None else headers)
    stub.flush()
    response = success_result_of(d)
    d2 = response.content()
    stub.flush()
    return response.code, json.loads(success_result_of(d2))


class TestAuth:
    @pytest.mark.parametrize("headers", [
        {},
        {b"Authorization": [b"Bearer wrong"]},
        {b"Authorization": [b"Basic dG9rLWE="]},
        {b"Authorization": [b"Bearer "]},
    ], ids=["none", "wrong", "basic", "empty"])
    def test_bad_token_is_401_and_nothing_accepted(
        self, context: Context, recorder: Recorder, headers: dict[bytes, list[bytes]]
    ) -> None:
        """A missing, unknown or non-bearer token gets 401 and no event is ingested."""
        _, stub = make(context)
        code, doc = post(stub, body([event(1)], gzipped=False), headers)
        assert code == 401
        assert "token" in doc["error"]
        assert recorder.got == []
        assert context.telemetry.value("obsd.input.relay.unauthorized") == 1

    def test_good_token_names_the_agent(self, context: Context, recorder: Recorder) -> None:
        """A known token is accepted and counted under its agent's name."""
        _, stub = make(context)
        code, doc = post(stub, body([event(1), event(2)]))
        assert (code, doc) == (200, {"accepted": 2, "duplicates": 0})
        assert context.telemetry.value("obsd.input.relay.agents.a.events") == 2


class TestDecode:
    def test_gzip_ndjson_keeps_id_timestamp_host_source(
        self, context: Context, recorder: Recorder
    ) -> None:
        """Relayed events keep id, timestamp, host, source and their private bytes."""
        _, stub = make(context)
        raw = {"event_id": "abc", "message": "boom"}
        sent = [
            event(1),
            {"id": "e2", "kind": "error", "event": "boom", "timestamp": 5.5, "host": "agent2",
             "source": "sentry", "_sentry_raw": b"\x00\xffraw"},
            {"id": "m3", "kind": "metric", "event": "agent1.stats.hits", "value": 3.0,
             "timestamp": 60.0, "host": "agent1", "source": "statsd"},
            {"id": "s4", "kind": "sentry", "event": "transaction", "timestamp": 6.0,
             "host": "agent2", "source": "sentry", "payload": raw},
            {"id": "p5", "kind": "span", "event": "POST /pay", "timestamp": 7.0,
             "host": "agent1", "source": "otlp", "trace_id": "ab" * 16},
        ]
        code, _ = post(stub, body(sent))
        assert code == 200
        kinds = [k for k, _ in recorder.got]
        assert kinds == ["log", "error", "metric", "sentry", "span"]
        for (_, got), want in zip(recorder.got, sent, strict=True):
            for key in ("id", "timestamp", "host", "source", "event"):
                assert got[key] == want[key]
        assert recorder.got[1][1]["_sentry_raw"] == b"\x00\xffraw"
        assert recorder.got[2][1]["value"] == 3.0
        assert recorder.got[3][1]["payload"] == raw

    def test_plain_ndjson_is_accepted(self, context: Context, recorder: Recorder) -> None:
        """A body without Content-Encoding is read as plain NDJSON."""
        _, stub = make(context)
        code, _ = post(stub, body([event(1)], gzipped=False), {b"Authorization": [b"Bearer tok-a"]})
        assert code == 200
        assert len(recorder.got) == 1

    def test_missing_source_and_id_are_filled(self, context: Context, recorder: Recorder) -> None:
        """An event without source gets the input's name; one without id gets a new id."""
        _, stub = make(context)
        code, _ = post(stub, body([{"event": "x", "kind": "log"}]))
        assert code == 200
        got = recorder.got[0][1]
        assert got["source"] == "relay"
        assert len(got["id"]) == 32
        assert got["host"] == "central"

    @pytest.mark.parametrize(("data", "why"), [
        (b"not gzip", "gzip"),
        (gzip.compress(b'{"id": "x"}\n[1,2]\n'), "object"),
        (gzip.compress(b'{"id": \n'), "JSON"),
        (gzip.compress(b"{}\n" * 2000), "larger"),
    ], ids=["not-gzip", "not-object", "bad-json", "too-big"])
    def test_bad_body_is_400_all_or_nothing(
        self, context: Context, recorder: Recorder, data: bytes, why: str
    ) -> None:
        """A body that does not decode is refused whole: 400 and nothing ingested."""
        _, stub = make(context, max_body_bytes=2048)
        code, doc = post(stub, data)
        assert code == 400
        assert why in doc["error"]
        assert recorder.got == []

    def test_too_many_events_is_400(self, context: Context, recorder: Recorder) -> None:
        """More than max_events in one request is refused."""
        _, stub = make(context, max_events=2)
        code, _doc = post(stub, body([event(i) for i in range(3)]))
        assert code == 400
        assert recorder.got == []


class TestDedupe:
    def test_a_resent_batch_is_dropped(self, context: Context, recorder: Recorder) -> None:
        """The same ids sent again within the window are counted and not passed on."""
        _, stub = make(context)
        post(stub, body([event(1), event(2)]))
        code, doc = post(stub, body([event(1), event(2), event(3)]))
        assert (code, doc) == (200, {"accepted": 1, "duplicates": 2})
        assert [e["id"] for _, e in recorder.got] == ["id1", "id2", "id3"]
        assert context.telemetry.value("obsd.input.relay.duplicates") == 2

    def test_ids_expire_after_the_window(
        self, context: Context, recorder: Recorder, clock: Clock
    ) -> None:
        """After dedupe_window seconds an id is forgotten and passes again."""
        _, stub = make(context, dedupe_window=60.0)
        post(stub, body([event(1)]))
        clock.advance(61)
        _code, doc = post(stub, body([event(1)]))
        assert doc == {"accepted": 1, "duplicates": 0}

    def test_duplicates_within_one_batch(self, context: Context, recorder: Recorder) -> None:
        """An id twice in one batch passes once."""
        _, stub = make(context)
        _, doc = post(stub, body([event(1), event(1)]))
        assert doc == {"accepted": 1, "duplicates": 1}


class TestSeenIds:
    def test_bounded_by_size_least_recent_first(self, clock: Clock) -> None:
        """Past dedupe_size ids, the least recently seen is forgotten."""
        seen = SeenIds(600.0, 2, clock.seconds)
        for i in ("a", "b", "c"):
            seen.add(i)
        assert (seen.seen("a"), seen.seen("b"), seen.seen("c")) == (False, True, True)
        assert len(seen) == 2

    def test_expire_drops_old_ones(self, clock: Clock) -> None:
        """expire() forgets ids older than the window."""
        seen = SeenIds(10.0, 100, clock.seconds)
        seen.add("a")
        clock.advance(5)
        seen.add("b")
        clock.advance(6)
        seen.expire()
        assert len(seen) == 1
        assert seen.seen("b")


class TestCongestion:
    def test_503_with_retry_after_when_congested(
        self, context: Context, recorder: Recorder
    ) -> None:
        """While a queue is congested the answer is 503 with Retry-After and nothing is read."""
        _, stub = make(context)
        context.flow_control.report("es", True)
        d = stub.post(URL, data=body([event(1)]), headers=GOOD)
        stub.flush()
        response = success_result_of(d)
        assert response.code == 503
        assert response.headers.getRawHeaders(b"retry-after") == [b"7"]
        assert recorder.got == []
        context.flow_control.report("es", False)
        code, _ = post(stub, body([event(1)]))
        assert code == 200


class TestMount:
    def test_mounts_beside_api(self, context: Context) -> None:
        """build_input mounts at /api/obsd/v1/events, under a resource already at /api."""
        from twisted.web.resource import Resource

        from obsd.inputs.relay import build_input

        context.http.mount(("api",), Resource())
        config = Config(type="relay")
        build_input("relay", config, context)
        assert ("api", "obsd", "v1", "events") in context.http.mounted


class TestCheckConfig:
    @pytest.mark.parametrize(("tokens", "problem"), [
        ([], "no tokens"),
        ([{"name": "a", "token": ""}], "empty token"),
        ([{"name": "a", "token": "x"}, {"name": "a", "token": "y"}], "given twice"),
        ([{"name": "a", "token": "x"}, {"name": "b", "token": "x"}], "two agents"),
    ])
    def test_problems(self, tokens: list[dict[str, str]], problem: str) -> None:
        """Missing, empty or shared tokens and repeated names are reported."""
        from obsd.inputs.relay import AgentToken

        cfg = Config(type="relay", tokens=[AgentToken(**t) for t in tokens])
        problems = Problems()
        check_config("relay", cfg, None, problems)  # type: ignore[arg-type]
        assert any(problem in line for line in problems.lines)



class TestPersistence:
    def test_ids_survive_a_restart(self, context: Context, clock: Clock, tmp_path: Any) -> None:
        """Ids saved on stop are loaded on start, so a resend after a restart is still dropped."""
        from obsd.inputs.relay import RelayInputService

        resource, stub = make(context)
        service = RelayInputService("relay", resource, tmp_path / "seen.txt")
        service.startService()
        post(stub, body([event(1), event(2)]))
        service.stopService()
        again, stub2 = make(context)
        RelayInputService("relay", again, tmp_path / "seen.txt").startService()
        _, doc = post(stub2, body([event(1), event(3)]))
        assert doc == {"accepted": 1, "duplicates": 1}

    def test_expired_and_damaged_lines_are_skipped(self, clock: Clock, tmp_path: Any) -> None:
        """Lines past the window or not parseable are not loaded."""
        path = tmp_path / "seen.txt"
        path.write_text(f"{clock.seconds() - 700!r} old\nnonsense\n{clock.seconds()!r} new\n")
        seen = SeenIds(600.0, 10, clock.seconds)
        seen.load(path)
        assert (seen.seen("old"), seen.seen("new"), len(seen)) == (False, True, 1)


class TestDurability:
    def test_answer_waits_until_durable(self, context: Context, recorder: Recorder) -> None:
        """With wait_durable (durability = "sync") the 200 comes only once it fires."""
        from twisted.internet import defer

        from tests.helpers import assert_no_result

        pending: list[defer.Deferred[None]] = []

        def wait_durable() -> defer.Deferred[None]:
            pending.append(defer.Deferred())
            return pending[-1]

        context.wait_durable = wait_durable  # type: ignore[attr-defined]
        _, stub = make(context)
        d = stub.post(URL, data=body([event(1)]), headers=GOOD)
        stub.flush()
        assert_no_result(d)
        assert len(recorder.got) == 1
        pending[0].callback(None)
        stub.flush()
        assert success_result_of(d).code == 200

    def test_failure_to_persist_is_500(self, context: Context) -> None:
        """If the events cannot be made durable the answer is 500, so the agent resends."""
        from twisted.internet import defer

        context.wait_durable = lambda: defer.fail(OSError("disk full"))  # type: ignore[attr-defined]
        _, stub = make(context)
        d = stub.post(URL, data=body([event(1)]), headers=GOOD)
        stub.flush()
        assert success_result_of(d).code == 500


class TestFleetEvents:
    def test_a_mixed_batch_keeps_its_order_and_kinds(
        self, context: Context, recorder: Recorder
    ) -> None:
        """Runs of one kind go on together (one pass), in the batch's order."""
        resource, _ = make(context)
        kinds = ["log", "log", "error", "log", "metric", "metric", "span", "weird"]
        batch = [{"id": f"e{i}", "kind": k, "event": f"n{i}", "value": 1.0}
                 for i, k in enumerate(kinds)]
        assert resource.ingest_batch(batch) == (len(kinds), 0)
        assert [(kind, event["event"]) for kind, event in recorder.got] == [
            (k if k != "weird" else "log", f"n{i}") for i, k in enumerate(kinds)
        ]

    def test_partials_go_on_as_partials(self, context: Context, recorder: Recorder) -> None:
        """statsd_partial events keep their kind, for central's merging statsd input."""
        resource, _ = make(context)
        partial = {"id": "p1", "kind": "statsd_partial", "event": "req", "metric": "req",
                   "host": "web1", "partial": {"v": 1, "sum": 3.0}}
        resource.ingest_batch([partial])
        assert [(kind, event["partial"]) for kind, event in recorder.got] == [
            ("statsd_partial", {"v": 1, "sum": 3.0})
        ]

    def test_agents_own_numbers_are_named_by_host(
        self, context: Context, recorder: Recorder
    ) -> None:
        """An agent's obsd.* numbers become obsd.<host>.*; other metric names are kept."""
        resource, _ = make(context)
        resource.ingest_batch(
            [
                {"id": "m1", "kind": "metric", "event": "obsd.input.statsd.packets_received",
                 "metric": "obsd.input.statsd.packets_received", "host": "web1.example.com",
                 "value": 3.0},
                {"id": "m2", "kind": "metric", "event": "stats_counts.req", "host": "web1",
                 "value": 1.0},
            ]
        )
        assert [(e["event"], e.get("metric")) for _, e in recorder.got] == [
            ("obsd.web1_example_com.input.statsd.packets_received",
             "obsd.web1_example_com.input.statsd.packets_received"),
            ("stats_counts.req", None),
        ]
