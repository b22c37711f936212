"""The InfluxDB output against treq's in-memory stubs, with time on a Clock."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from treq.testing import StringStubbingResource, StubTreq
from twisted.internet.task import Clock

from obsd.config.model import ObsdConfig
from obsd.config.schema import Problems
from obsd.outputs.influxdb import Config, InfluxOutput, check_config
from obsd.testing import make_output_context

Answer = tuple[int, dict[str, str], bytes]


class Server:
    """Records each write; refuses lines containing ``bad`` with 400, or answers a script."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, dict[bytes, list[bytes]], list[str]]] = []
        self.script: list[Answer] = []
        self.params: list[Any] = []

    def __call__(self, method: bytes, url: str, params: Any, headers: Any, data: bytes) -> Answer:
        body = gzip.decompress(data) if headers.get(b"Content-Encoding") == [b"gzip"] else data
        lines = body.decode().splitlines()
        self.writes.append((url, headers, lines))
        self.params.append(params)
        if self.script:
            return self.script.pop(0)
        if any("bad" in line for line in lines):
            return 400, {}, b'{"error":"partial write: field type conflict dropped=1"}'
        return 204, {}, b""

    @property
    def lines(self) -> list[str]:
        return [line for _, _, lines in self.writes for line in lines]


@pytest.fixture(name="server")
def _server() -> Server:
    return Server()


def make(clock: Clock, tmp_path: Path, server: Server, **settings: Any) -> InfluxOutput:
    settings.setdefault("batch_timeout", 0.0)
    config = Config(type="influxdb", **settings)
    stub = StubTreq(StringStubbingResource(server))
    out = InfluxOutput("influx", config, make_output_context(clock, tmp_path), stub)
    out.startService()
    return out


def metric(name: str, value: Any, stat: str = "count", ts: float = 1700000000.0) -> dict[str, Any]:
    return {"kind": "metric", "event": f"stats_counts.{name}", "value": value, "timestamp": ts,
            "host": "web1", "metric": name, "metric_type": "counter", "stat": stat, "tags": {}}


def dead_letters(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "dead-letter.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class TestWrites:
    def test_write_url_auth_and_gzip(self, tmp_path: Path, server: Server) -> None:
        """One POST to /write with db, rp and precision; basic auth; a gzip body."""
        clock = Clock()
        out = make(clock, tmp_path, server, database="metrics", retention_policy="week",
                   username="u", password="p", batch_size=2, batch_timeout=1.0)
        out.accept(metric("req", 5))
        clock.advance(0)
        out.accept(metric("req", 0.5, stat="rate"))
        ((url, headers, lines),) = server.writes
        assert urlsplit(url).path == "/write"
        assert server.params == [{b"db": [b"metrics"], b"rp": [b"week"], b"precision": [b"s"]}]
        assert headers[b"Authorization"] == [b"Basic dTpw"]
        assert headers[b"Content-Encoding"] == [b"gzip"]
        assert lines == [
            "req,host=web1,metric_type=counter count=5.0 1700000000",
            "req,host=web1,metric_type=counter rate=0.5 1700000000",
        ]
        assert out.queues[""]._sent.value == 2

    def test_token_auth(self, tmp_path: Path, server: Server) -> None:
        clock = Clock()
        out = make(clock, tmp_path, server, token="s3cret", gzip=False)
        out.accept(metric("req", 1))
        clock.advance(0)
        ((_, headers, _),) = server.writes
        assert headers[b"Authorization"] == [b"Token s3cret"]
        assert b"Content-Encoding" not in headers

    def test_non_finite_skipped_and_counted(self, tmp_path: Path, server: Server) -> None:
        clock = Clock()
        out = make(clock, tmp_path, server)
        out.accept(metric("req", float("nan")))
        clock.advance(0)
        assert server.writes == []
        assert out.context.telemetry.value("obsd.output.influx.skipped_nonfinite") == 1
        assert dead_letters(tmp_path) == []

    def test_not_a_number_dead_lettered(self, tmp_path: Path, server: Server) -> None:
        clock = Clock()
        out = make(clock, tmp_path, server)
        out.accept(metric("req", "12"))
        clock.advance(0)
        (letter,) = dead_letters(tmp_path)
        assert "value is not a number" in letter["reason"]


class TestAnswers:
    def test_refused_line_alone_is_dead_lettered(self, tmp_path: Path, server: Server) -> None:
        """A 400 halves the batch until the refused line stands alone; the rest is written."""
        clock = Clock()
        out = make(clock, tmp_path, server, batch_size=4)
        for name in ("a", "b", "bad", "d"):
            out.accept(metric(name, 1))
        clock.advance(0)
        (letter,) = dead_letters(tmp_path)
        assert letter["event"].startswith("bad,host=web1")
        assert "400 partial write: field type conflict" in letter["reason"]
        written = {line.split(",")[0] for _, _, lines in server.writes[-4:] for line in lines}
        assert {"a", "b", "d"} <= written
        assert out.context.telemetry.value("obsd.output.influx.bisects") >= 1
        assert len(out.queues[""]) == 0

    @pytest.mark.parametrize("code", [429, 500, 503])
    def test_overload_retried_after(self, tmp_path: Path, server: Server, code: int) -> None:
        """429 and 5xx keep the batch; Retry-After is honoured."""
        clock = Clock()
        out = make(clock, tmp_path, server)
        server.script = [(code, {"Retry-After": "7"}, b'{"error":"busy"}')]
        out.accept(metric("req", 1))
        clock.advance(0)
        assert len(server.writes) == 1
        clock.advance(6.9)
        assert len(server.writes) == 1
        clock.advance(0.2)
        assert len(server.writes) == 2
        assert len(out.queues[""]) == 0
        assert dead_letters(tmp_path) == []

    @pytest.mark.parametrize(
        ("code", "text"),
        [(401, "authorization failed"), (404, 'database not found: "obsd"')],
    )
    def test_config_problems_keep_points(
        self, tmp_path: Path, server: Server, code: int, text: str
    ) -> None:
        """Bad credentials or a missing database: points stay queued, nothing dead-lettered."""
        clock = Clock()
        out = make(clock, tmp_path, server, retry_initial=1.0, retry_max=1.0)
        server.script = [(code, {}, json.dumps({"error": text}).encode())]
        out.accept(metric("req", 1))
        clock.advance(0)
        assert len(out.queues[""]) == 1
        assert dead_letters(tmp_path) == []
        clock.advance(1.0)
        assert len(server.writes) == 2
        assert len(out.queues[""]) == 0

    def test_other_client_error_dead_letters(self, tmp_path: Path, server: Server) -> None:
        clock = Clock()
        out = make(clock, tmp_path, server)
        server.script = [(422, {}, b'{"error":"unprocessable"}')]
        out.accept(metric("req", 1))
        clock.advance(0)
        (letter,) = dead_letters(tmp_path)
        assert "422 unprocessable" in letter["reason"]


class TestConfig:
    @pytest.mark.parametrize(
        ("settings", "problem"),
        [
            ({"url": "udp://x"}, "outputs.influx.url: expected http(s)://host[:port], got 'udp://x'"),
            ({"database": ""}, "outputs.influx.database: a database (or bucket) name is needed"),
            ({"token": "t", "username": "u"},
             "outputs.influx.token: give either token or username/password, not both"),
            ({"password": "p"}, "outputs.influx.password: a password needs a username"),
        ],
    )
    def test_problems(self, settings: dict[str, Any], problem: str) -> None:
        problems = Problems()
        check_config("influx", Config(type="influxdb", **settings), ObsdConfig(), problems)
        assert problem in problems.lines
