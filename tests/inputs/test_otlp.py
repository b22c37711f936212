"""The OTLP input over a real twisted.web Site in memory: status codes, answers, pacing."""

from __future__ import annotations

import gzip
import json
from typing import Any

import attrs
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from treq.testing import StubTreq
from twisted.internet.task import Clock

from obsd.delivery.flowcontrol import FlowControl
from obsd.inputs import otlp
from obsd.ops.telemetry import Telemetry
from obsd.ops.throttle import ThrottledLogger
from obsd.testing import ListLog
from tests.codecs.otlp_requests import (
    counter,
    log_record,
    logs_request,
    metrics_request,
    span,
    traces_request,
)
from tests.helpers import assert_no_result, success_result_of

PB = {"Content-Type": "application/x-protobuf"}


class CapturingIngest:
    """Records (kind, fields) for every event handed on."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, kind: str) -> Any:
        return lambda fields: self.events.append((kind, fields))


@attrs.define
class FakeContext:
    """The parts of InputContext the OTLP input uses."""

    reactor: Clock = attrs.Factory(Clock)
    telemetry: Telemetry = attrs.Factory(Telemetry)
    flow_control: FlowControl = attrs.Factory(FlowControl)
    ingest: CapturingIngest = attrs.Factory(CapturingIngest)
    log: ListLog = attrs.Factory(ListLog)
    config: Any = None
    wait_durable: Any = None
    throttle: ThrottledLogger = attrs.field(default=None)

    def __attrs_post_init__(self) -> None:
        self.throttle = ThrottledLogger(self.log, self.reactor, 10.0)

    def counter(self, what: str) -> int:
        return self.telemetry.counter(f"obsd.input.otlp.{what}").value


@attrs.define
class Harness:
    context: FakeContext
    stub: Any

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None,
             turns: int = 0) -> tuple[int, bytes, dict[str, Any]]:
        d = self.stub.post(f"http://obsd{path}", data=body, headers=headers or PB)
        self.stub.flush()
        for _ in range(turns):
            self.context.reactor.advance(0)
            self.stub.flush()
        response = success_result_of(d)
        content = self.stub.content(response)
        self.stub.flush()
        return response.code, success_result_of(content), dict(
            response.headers.getAllRawHeaders())


def make(**kw: Any) -> Harness:
    context = FakeContext()
    receiver = otlp.OtlpReceiver("otlp", otlp.Config(type="otlp", **kw), context)
    return Harness(context, StubTreq(otlp.OtlpRoot(receiver)))


class TestSignals:
    def test_logs_protobuf(self) -> None:
        """POST /v1/logs: 200, an empty protobuf response, one log event per record."""
        h = make()
        code, body, headers = h.post("/v1/logs", logs_request(log_record()).SerializeToString())
        assert code == 200
        assert headers[b"Content-Type"] == [b"application/x-protobuf"]
        assert ExportLogsServiceResponse.FromString(body).HasField("partial_success") is False
        assert [k for k, _ in h.context.ingest.events] == ["log"]
        assert h.context.counter("logs.items") == 1

    def test_metrics_gzip(self) -> None:
        """POST /v1/metrics gzipped: metric events."""
        h = make()
        body = gzip.compress(metrics_request(counter(5)).SerializeToString())
        code, _, _ = h.post("/v1/metrics", body, {**PB, "Content-Encoding": "gzip"})
        assert code == 200
        assert [(k, f["event"]) for k, f in h.context.ingest.events] == [("metric", "shop.orders")]

    def test_traces_json(self) -> None:
        """POST /v1/traces in JSON: a span and its exception error, a JSON answer."""
        from google.protobuf import json_format

        doc = json_format.MessageToDict(traces_request(span()))
        spans = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
        for one in spans:
            for key in ("traceId", "spanId"):
                one[key] = __import__("base64").b64decode(one[key]).hex()
        code, body, _ = h_post_json(doc)
        assert code == 200
        assert json.loads(body) == {}

    def test_partial_success(self) -> None:
        """Refused records are counted in partial_success with the first reason."""
        h = make()
        request = logs_request(log_record(trace_id=b"short"), log_record())
        code, body, _ = h.post("/v1/logs", request.SerializeToString())
        assert code == 200
        partial = ExportLogsServiceResponse.FromString(body).partial_success
        assert partial.rejected_log_records == 1
        assert "trace_id" in partial.error_message
        assert h.context.counter("logs.refused_items") == 1

    def test_paced_across_turns(self) -> None:
        """A large request is handed on events_per_turn at a time, then answered."""
        h = make(events_per_turn=2)
        request = logs_request(*[log_record() for _ in range(5)])
        d = h.stub.post("http://obsd/v1/logs", data=request.SerializeToString(), headers=PB)
        h.stub.flush()
        assert len(h.context.ingest.events) == 2
        assert_no_result(d)
        assert len(h.context.reactor.getDelayedCalls()) == 1  # the rest waits for a turn
        h.context.reactor.advance(0)
        h.stub.flush()
        assert success_result_of(d).code == 200
        assert len(h.context.ingest.events) == 5


def h_post_json(doc: Any) -> tuple[int, bytes, dict[str, Any]]:
    h = make()
    result = h.post("/v1/traces", json.dumps(doc).encode(), {"Content-Type": "application/json"})
    assert [k for k, _ in h.context.ingest.events] == ["span", "error"]
    return result


class TestRefusals:
    def test_bad_body_400(self) -> None:
        """A body that is not the message is 400 with a google.rpc.Status, counted and logged."""
        h = make()
        code, body, _ = h.post("/v1/logs", b"\xff\xff\xff")
        assert code == 400
        assert body.startswith(b"\x08\x03\x12")
        assert h.context.counter("rejected.400") == 1
        assert h.context.log.lines[0][1] == "OTLP request refused"

    def test_content_length_413(self) -> None:
        """A Content-Length past max_body_bytes is 413 before reading."""
        h = make(max_body_bytes=1024)
        code, _, _ = h.post("/v1/logs", b"x" * 2048)
        assert code == 413

    @pytest.mark.parametrize(
        ("path", "request_of"),
        [
            ("/v1/logs", lambda n: logs_request(*[log_record() for _ in range(n)])),
            ("/v1/traces", lambda n: traces_request(*[span() for _ in range(n)])),
            ("/v1/metrics", lambda n: metrics_request(*[counter(1) for _ in range(n)])),
        ],
    )
    def test_more_items_than_max_items_per_request_413(self, path: str, request_of: Any) -> None:
        """One item over the cap refuses the request; nothing of it is taken."""
        h = make(max_items_per_request=3)
        assert h.post(path, request_of(3).SerializeToString(), PB)[0] == 200
        taken = len(h.context.ingest.events)
        code, body, _ = h.post(path, request_of(4).SerializeToString(), PB)
        assert code == 413
        assert b"4 items in one request; at most 3 are taken" in body
        assert len(h.context.ingest.events) == taken

    def test_unsupported_content_type_415(self) -> None:
        """Another content type is 415."""
        code, _, _ = make().post("/v1/logs", b"{}", {"Content-Type": "text/plain"})
        assert code == 415

    def test_congested_503(self) -> None:
        """While outputs are congested: 503 with Retry-After, and nothing handed on."""
        h = make()
        h.context.flow_control.report("q", True)
        code, _, headers = h.post("/v1/logs", logs_request(log_record()).SerializeToString())
        assert code == 503
        assert headers[b"Retry-After"] == [b"5"]
        assert h.context.ingest.events == []

    def test_unknown_path_404(self) -> None:
        """Paths other than the three signals are 404."""
        assert make().post("/v1/profiles", b"")[0] == 404

    def test_get_405(self) -> None:
        """GET on a signal is 405."""
        h = make()
        d = h.stub.get("http://obsd/v1/logs")
        h.stub.flush()
        assert success_result_of(d).code == 405


class TestConfig:
    def test_default_listener(self) -> None:
        """By default the input listens on 127.0.0.1:4318, OTLP/HTTP's port."""
        assert otlp.Config(type="otlp").listen == ["tcp:4318:interface=127.0.0.1"]

    @pytest.mark.parametrize("kind", ["span"])
    def test_span_kind_routable(self, kind: str) -> None:
        """Routes may match the span kind."""
        from obsd.config.loader import parse_config

        parse_config({"inputs": {"otlp": {}}, "outputs": {"file": {}},
                      "routes": [{"match": {"kind": [kind]}, "outputs": ["file"]}]})
