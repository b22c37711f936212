"""The remote_write output against treq's stubs: the wire format, semantics and answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from treq.testing import StringStubbingResource, StubTreq
from twisted.internet.task import Clock

from obsd.codecs import remote_write as wire
from obsd.config.model import ObsdConfig
from obsd.config.schema import Problems
from obsd.outputs.remote_write import Config, RemoteWriteOutput, check_config
from obsd.testing import make_output_context


def read_varint(data: bytes, at: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def fields(data: bytes) -> list[tuple[int, bytes | int]]:
    """A protobuf message's (field number, payload) pairs: enough to read WriteRequests."""
    out: list[tuple[int, bytes | int]] = []
    at = 0
    while at < len(data):
        key, at = read_varint(data, at)
        number, kind = key >> 3, key & 7
        if kind == 2:
            size, at = read_varint(data, at)
            out.append((number, data[at : at + size]))
            at += size
        elif kind == 1:
            out.append((number, data[at : at + 8]))
            at += 8
        else:
            value, at = read_varint(data, at)
            out.append((number, value))
    return out


def series(write_request: bytes) -> list[tuple[dict[str, str], float, int]]:
    """(labels, value, timestamp) of each series of a WriteRequest."""
    found = []
    for _, ts in fields(write_request):
        assert isinstance(ts, bytes)
        labels: dict[str, str] = {}
        value, stamp = 0.0, 0
        for number, payload in fields(ts):
            assert isinstance(payload, bytes)
            parts = dict(fields(payload))
            if number == 1:
                labels[parts[1].decode()] = parts[2].decode()  # type: ignore[union-attr]
            else:
                value = wire._DOUBLE.unpack(parts[1])[0]  # type: ignore[arg-type]
                stamp = int(parts[2])  # type: ignore[arg-type]
        found.append((labels, value, stamp))
    return found


class Receiver:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.headers: list[Any] = []
        self.script: list[tuple[int, dict[str, str], bytes]] = []

    def __call__(self, method: bytes, url: str, params: Any, headers: Any, data: bytes) -> Any:
        self.bodies.append(wire.decompress(data))
        self.headers.append(headers)
        if self.script:
            return self.script.pop(0)
        if b"bad" in self.bodies[-1]:
            return 400, {}, b"out of order sample"
        return 204, {}, b""


def make(tmp_path: Path, receiver: Receiver, **settings: Any) -> tuple[RemoteWriteOutput, Clock]:
    clock = Clock()
    config = Config(type="remote_write", batch_timeout=0.0, **settings)
    out = RemoteWriteOutput("rw", config, make_output_context(clock, tmp_path),
                            StubTreq(StringStubbingResource(receiver)))
    out.startService()
    return out, clock


def counter(name: str, count: float, ts: float = 1700000000.0) -> dict[str, Any]:
    return {"kind": "metric", "event": name, "value": count, "timestamp": ts, "metric": name,
            "metric_type": "counter", "stat": "count", "tags": {"env": "prod"}}


class TestWire:
    def test_cumulative_counter_snappy_protobuf(self, tmp_path: Path) -> None:
        """Headers of the 1.0 spec; the counter's samples are its running total, in ms."""
        receiver = Receiver()
        out, clock = make(tmp_path, receiver, bearer_token="t0k")
        out.accept(counter("app.req", 5))
        out.accept(counter("app.req", 7, ts=1700000001.5))
        clock.advance(0)
        (headers,) = receiver.headers
        assert headers[b"Content-Encoding"] == [b"snappy"]
        assert headers[b"Content-Type"] == [b"application/x-protobuf"]
        assert headers[b"X-Prometheus-Remote-Write-Version"] == [b"0.1.0"]
        assert headers[b"Authorization"] == [b"Bearer t0k"]
        labels = {"__name__": "app_req_total", "env": "prod"}
        assert series(receiver.bodies[0]) == [
            (labels, 5.0, 1700000000000),
            (labels, 12.0, 1700000001500),
        ]

    def test_labels_sorted_by_name(self) -> None:
        ((labels, _, _),) = series(wire.encode_series("m", [("z", "1"), ("a", "2")], 1.0, 1))
        assert list(labels) == ["__name__", "a", "z"]


class TestAnswers:
    def test_refused_sample_alone_dead_lettered(self, tmp_path: Path) -> None:
        receiver = Receiver()
        out, clock = make(tmp_path, receiver, batch_size=4)
        for name in ("a", "b", "bad", "d"):
            out.accept(counter(name, 1))
        clock.advance(0)
        dead = (tmp_path / "dead-letter.jsonl").read_text()
        assert dead.count("\n") == 1
        assert "400 out of order sample" in dead
        assert len(out.queues[""]) == 0

    @pytest.mark.parametrize("code", [429, 503])
    def test_overload_retried(self, tmp_path: Path, code: int) -> None:
        receiver = Receiver()
        receiver.script = [(code, {"Retry-After": "3"}, b"slow down")]
        out, clock = make(tmp_path, receiver)
        out.accept(counter("a", 1))
        clock.advance(0)
        assert len(out.queues[""]) == 1
        clock.advance(3.1)
        assert len(receiver.bodies) == 2
        assert len(out.queues[""]) == 0


class TestConfig:
    def test_problems(self) -> None:
        problems = Problems()
        check_config("rw", Config(type="remote_write", url="ftp://x", password="p"),
                     ObsdConfig(), problems)
        assert problems.lines == [
            "outputs.rw.url: expected http(s)://host[:port]/path, got 'ftp://x'",
            "outputs.rw.password: a password needs a username",
        ]
