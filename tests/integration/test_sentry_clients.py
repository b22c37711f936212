"""raven 6.10 and sentry-sdk pointed at a real obsd: 200s, and the documented events come out.

obsd runs as ``twistd -n obsd`` with ``[http]`` on 127.0.0.1 port 0, the Sentry
input and the file output; each test reads ``events.jsonl``.  raven runs in
this process with its synchronous ``HTTPTransport`` (so a send has finished, or
raised, when the call returns); sentry-sdk runs in a subprocess per case, with
brotli importable or blocked (then it falls back to gzip), and is flushed.
"""

from __future__ import annotations

import gzip
import http.client
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.fixtures.obsd import ObsdProcess, obsd_env

pytestmark = pytest.mark.integration

KEY = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
SECRET = "5ec2e7f00d5ec2e7f00d5ec2e7f00d12"
UNKNOWN_KEY = "0123456789abcdef0123456789abcdef"
PROJECT = 42

CONFIG = f"""
[daemon]
data_dir = '{{data_dir}}'
log_interval = 0.1

[http]
listen = ['tcp:0:interface=127.0.0.1']

[inputs.sentry]
projects = [{{ id = {PROJECT}, keys = ['{KEY}'] }}]

[outputs.file]
batch_timeout = 0.02

[[routes]]
match = {{ kind = ['error', 'sentry'] }}
outputs = ['file']
"""

#: The keys whose values change per run; the tests check them separately.
VOLATILE = ("id", "timestamp", "received_at", "frames", "extra", "sid", "trace_id",
            "duration_ms", "size")


class Obsd:
    """A running obsd with the Sentry input, and what it wrote."""

    def __init__(self, proc: ObsdProcess) -> None:
        self.proc = proc
        self.port = proc.port("http", "tcp")
        self.events_path = Path(proc.data_dir) / "events.jsonl"  # type: ignore[attr-defined]
        self.seen = 0

    def dsn(self, secret: bool = False) -> str:
        auth = f"{KEY}:{SECRET}" if secret else KEY
        return f"http://{auth}@127.0.0.1:{self.port}/{PROJECT}"

    def all_events(self) -> list[dict[str, Any]]:
        if not self.events_path.exists():
            return []
        return [json.loads(line) for line in self.events_path.read_text().splitlines()]

    def new_events(self, count: int) -> list[dict[str, Any]]:
        """Wait for ``count`` events after the ones already taken, and take them."""
        self.proc.wait_for(
            lambda: len(self.all_events()) >= self.seen + count,
            what=f"{count} new events in events.jsonl",
        )
        found = self.all_events()[self.seen : self.seen + count]
        self.seen += count
        return found

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        finally:
            conn.close()


@pytest.fixture(name="obsd", scope="module")
def _obsd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Obsd]:
    from tests.integration.fixtures.obsd import twistd_args

    workdir = tmp_path_factory.mktemp("obsd-sentry")
    data_dir = workdir / "data"
    config = workdir / "obsd.toml"
    config.write_text(CONFIG.replace("{data_dir}", str(data_dir)))
    proc = ObsdProcess(workdir, twistd_args(config))
    proc.data_dir = data_dir  # type: ignore[attr-defined]
    try:
        proc.start()
    except RuntimeError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"obsd did not start: {exc}")
        pytest.skip(f"obsd did not start: {exc}")
    yield Obsd(proc)
    if proc.proc is not None and proc.proc.poll() is None:
        proc.stop()


def stable(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in VOLATILE}


# --- raven 6.10 -------------------------------------------------------------

def need(module: str) -> None:
    """Skip without the client library, except in CI where it must be installed."""
    try:
        __import__(module)
    except ImportError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{module} is not installed: {exc}")
        pytest.skip(f"{module} is not installed")


def raven_client(dsn: str) -> Any:
    need("raven")
    from raven import Client  # type: ignore[import-untyped]
    from raven.transport.http import HTTPTransport  # type: ignore[import-untyped]

    return Client(
        dsn,
        transport=HTTPTransport,
        raise_send_errors=True,
        release="1.2.3",
        environment="test",
        name="web-1",
        tags={"region": "eu"},
        install_sys_hook=False,
        install_logging_hook=False,
        enable_breadcrumbs=False,
    )


RAVEN_COMMON = {
    "kind": "error",
    "source": "sentry",
    "host": "web-1",
    "server_name": "web-1",
    "release": "1.2.3",
    "environment": "test",
    "platform": "python",
    "sdk": "raven-python",
    "tags": {"region": "eu"},
    "project_id": PROJECT,
}


class TestRaven:
    @pytest.mark.parametrize("secret", [True, False], ids=["dsn-with-secret", "dsn-without"])
    def test_capture_exception(self, obsd: Obsd, secret: bool, monkeypatch: pytest.MonkeyPatch) -> None:
        """captureException with a real traceback is one error event; the DSN secret is scrubbed."""
        monkeypatch.setattr(sys, "argv", ["worker.py", "--dsn", obsd.dsn(secret=True)])
        client = raven_client(obsd.dsn(secret))

        def outer() -> float:
            return inner(3)

        def inner(count: int) -> float:
            return 100 / (count - count)

        try:
            outer()
        except ZeroDivisionError:
            event_id = client.captureException()
        (event,) = obsd.new_events(1)
        assert event["id"] == event_id
        assert stable(event) == {
            **RAVEN_COMMON,
            "event": "ZeroDivisionError: division by zero",
            "level": "error",
            "exception_type": "ZeroDivisionError",
            "exception_value": "division by zero",
        }
        assert [frame.split(":")[1] for frame in event["frames"]][-2:] == ["outer", "inner"]
        assert SECRET not in json.dumps(event)
        assert f"{KEY}:[Filtered]@127.0.0.1" in json.dumps(event["extra"]["sys.argv"])

    def test_capture_message(self, obsd: Obsd) -> None:
        """captureMessage with params and a level is one error event with the formatted text."""
        client = raven_client(obsd.dsn())
        event_id = client.captureMessage("cache warmed in %s s", params=("1.5",), level="info")
        (event,) = obsd.new_events(1)
        assert event["id"] == event_id
        assert stable(event) == {**RAVEN_COMMON, "event": "cache warmed in '1.5' s", "level": "info"}

    def test_logging_handler(self, obsd: Obsd) -> None:
        """raven's logging SentryHandler: logger.error and logger.exception become error events."""
        from raven.handlers.logging import SentryHandler  # type: ignore[import-untyped]

        logger = logging.getLogger("billing.jobs")
        logger.propagate = False
        handler = SentryHandler(raven_client(obsd.dsn()), level=logging.WARNING)
        logger.addHandler(handler)
        try:
            logger.error("invoice %s failed for %s", "INV-9", "acme")
            orders: dict[str, int] = {}
            try:
                orders["missing"]
            except KeyError:
                logger.exception("lookup failed")
        finally:
            logger.removeHandler(handler)
        plain, with_exc = obsd.new_events(2)
        assert stable(plain) == {
            **RAVEN_COMMON,
            "event": "invoice INV-9 failed for acme",
            "level": "error",
            "logger": "billing.jobs",
        }
        assert stable(with_exc) == {
            **RAVEN_COMMON,
            "event": "lookup failed",
            "level": "error",
            "logger": "billing.jobs",
            "exception_type": "KeyError",
            "exception_value": "'missing'",
        }


# --- sentry-sdk -------------------------------------------------------------

SDK_SCRIPT = r'''
import json, sys
if sys.argv[2] == "no-brotli":
    sys.modules["brotli"] = None  # import brotli now raises ImportError
import sentry_sdk
from sentry_sdk import transport

dsn, mode, case = sys.argv[1:4]
sentry_sdk.init(
    dsn=dsn, release="2.0.0", environment="prod", server_name="api-3",
    default_integrations=False, auto_session_tracking=False,
    send_client_reports=False, traces_sample_rate=1.0,
)
out = {"brotli": transport.brotli is not None,
       "algo": sentry_sdk.get_client().transport._compression_algo}

def parse_order(raw):
    return int(raw)

if case == "exception":
    sentry_sdk.set_tag("region", "us")
    sentry_sdk.set_user({"id": "user-42"})
    try:
        parse_order("forty-two")
    except ValueError:
        out["id"] = sentry_sdk.capture_exception()
elif case == "message":
    out["id"] = sentry_sdk.capture_message("queue is backing up", level="warning")
elif case == "transaction":
    with sentry_sdk.start_transaction(name="GET /orders", op="http.server") as tx:
        with sentry_sdk.start_span(op="db", name="SELECT * FROM orders"):
            pass
        with sentry_sdk.start_span(op="http.client", name="GET https://pay.example.invalid/"):
            pass
elif case == "attachment":
    with sentry_sdk.new_scope() as scope:
        scope.add_attachment(bytes=b"order=17\nstate=stuck\n", filename="state.txt",
                             content_type="text/plain")
        out["id"] = sentry_sdk.capture_message("order stuck", level="error")
elif case == "session":
    scope = sentry_sdk.get_isolation_scope()
    scope.start_session()
    scope.end_session()
sentry_sdk.flush(timeout=10)
print(json.dumps(out))
'''

SDK_COMMON = {"source": "sentry", "project_id": PROJECT}


def run_sdk(obsd: Obsd, mode: str, case: str) -> dict[str, Any]:
    need("sentry_sdk")
    result = subprocess.run(
        [sys.executable, "-c", SDK_SCRIPT, obsd.dsn(), mode, case],
        capture_output=True, text=True, timeout=60, env=obsd_env(),
    )
    assert result.returncode == 0, result.stderr
    out: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["algo"] == ("br" if mode == "brotli" else "gzip")
    return out


@pytest.fixture(name="mode", params=["brotli", "no-brotli"])
def _mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class TestSentrySdk:
    def test_capture_exception(self, obsd: Obsd, mode: str) -> None:
        """capture_exception is one error event with type, value and the frames."""
        out = run_sdk(obsd, mode, "exception")
        (event,) = obsd.new_events(1)
        assert event["id"] == out["id"]
        assert stable(event) == {
            **SDK_COMMON,
            "kind": "error",
            "event": "ValueError: invalid literal for int() with base 10: 'forty-two'",
            "level": "error",
            "exception_type": "ValueError",
            "exception_value": "invalid literal for int() with base 10: 'forty-two'",
            "host": "api-3",
            "server_name": "api-3",
            "release": "2.0.0",
            "environment": "prod",
            "platform": "python",
            "sdk": "sentry.python",
            "tags": {"region": "us"},
            "user_id": "user-42",
        }
        assert event["frames"][-1].startswith("__main__:parse_order:")

    def test_capture_message(self, obsd: Obsd, mode: str) -> None:
        """capture_message is one error event with its text and level."""
        out = run_sdk(obsd, mode, "message")
        (event,) = obsd.new_events(1)
        assert event["id"] == out["id"]
        assert (event["kind"], event["event"], event["level"], event["sdk"]) == (
            "error", "queue is backing up", "warning", "sentry.python",
        )

    def test_transaction(self, obsd: Obsd, mode: str) -> None:
        """A transaction with two spans is one sentry event named after it."""
        run_sdk(obsd, mode, "transaction")
        (event,) = obsd.new_events(1)
        assert stable(event) == {
            **SDK_COMMON,
            "kind": "sentry",
            "event": "GET /orders",
            "level": "info",
            "host": event["host"],  # not in the payload: obsd's own host name
            "item_type": "transaction",
            "transaction": "GET /orders",
            "op": "http.server",
            "span_count": 2,
            "release": "2.0.0",
            "environment": "prod",
            "platform": "python",
            "server_name": "api-3",
        }
        assert event["duration_ms"] >= 0

    def test_attachment(self, obsd: Obsd, mode: str) -> None:
        """A message with an attachment is an error event and an attachment event, same id."""
        out = run_sdk(obsd, mode, "attachment")
        error, attachment = obsd.new_events(2)
        assert (error["kind"], error["event"], error["id"]) == ("error", "order stuck", out["id"])
        assert stable(attachment) == {
            **SDK_COMMON,
            "kind": "sentry",
            "event": "sentry.attachment",
            "level": "info",
            "host": attachment["host"],
            "item_type": "attachment",
            "filename": "state.txt",
            "content_type": "text/plain",
        }
        assert (attachment["id"], attachment["size"]) == (out["id"], 21)

    def test_session(self, obsd: Obsd, mode: str) -> None:
        """A session start and end is one sentry session event."""
        run_sdk(obsd, mode, "session")
        (event,) = obsd.new_events(1)
        assert stable(event) == {
            **SDK_COMMON,
            "kind": "sentry",
            "event": "sentry.session",
            "level": "info",
            "host": event["host"],
            "item_type": "session",
            "status": "exited",
            "init": True,
            "release": "2.0.0",
            "environment": "prod",
        }


# --- bad requests over the socket -------------------------------------------

AUTH = f"Sentry sentry_key={KEY}, sentry_version=7"


def _bomb() -> bytes:
    return gzip.compress(b"{" + b" " * (8 * 1024 * 1024) + b"}")


BAD: list[tuple[str, str, bytes, dict[str, str], int]] = [
    ("no-auth", "/api/42/store/", b'{"message":"x"}', {}, 401),
    ("unknown-key", "/api/42/store/", b'{"message":"x"}',
     {"X-Sentry-Auth": f"Sentry sentry_key={UNKNOWN_KEY}"}, 403),
    ("bad-key", "/api/42/store/", b'{"message":"x"}', {"X-Sentry-Auth": "Sentry sentry_key=x"}, 400),
    ("bomb", "/api/42/store/", _bomb(), {"X-Sentry-Auth": AUTH, "Content-Encoding": "gzip"}, 413),
    ("truncated-gzip", "/api/42/store/", gzip.compress(b'{"message":"x"}')[:-10],
     {"X-Sentry-Auth": AUTH, "Content-Encoding": "gzip"}, 400),
    ("garbage-envelope", "/api/42/envelope/", b"nonsense\n\x00\x01\n", {"X-Sentry-Auth": AUTH}, 400),
    ("too-large", "/api/42/store/", b"{" + b" " * (1024 * 1024 + 1) + b"}", {"X-Sentry-Auth": AUTH}, 413),
]


class TestBadRequests:
    @pytest.mark.parametrize(("path", "body", "headers", "status"),
                             [b[1:] for b in BAD], ids=[b[0] for b in BAD])
    def test_refused_and_still_serving(
        self, obsd: Obsd, path: str, body: bytes, headers: dict[str, str], status: int
    ) -> None:
        """Each bad request gets its status and a detail; a good one right after gets 200."""
        got, answer = obsd.post(path, body, headers)
        assert got == status
        assert answer["detail"]
        ok, _ = obsd.post("/api/42/store/", b'{"message":"after"}', {"X-Sentry-Auth": AUTH})
        assert ok == 200
        (event,) = obsd.new_events(1)
        assert event["event"] == "after"


class TestCounted:
    def test_counters_in_stop_line(self, obsd: Obsd, request: pytest.FixtureRequest) -> None:
        """On stop, the telemetry line shows requests, accepted and rejected by status."""
        proc = obsd.proc
        assert proc.stop() == 0
        (stopped,) = [e for e in proc.log_events() if e.get("event") == "stopped"]
        counters = {k: v for k, v in stopped.items() if k.startswith("obsd.input.sentry.")}
        assert counters["obsd.input.sentry.requests"] >= 1
        assert counters["obsd.input.sentry.accepted"] >= 1
        ran_bad = any("TestBadRequests" in item.nodeid for item in request.session.items)
        if ran_bad:
            for status in (400, 401, 403, 413):
                assert counters[f"obsd.input.sentry.rejected.{status}"] >= 1

