"""A real obsd: the tail CLI follows it, and SIGHUP switches routes without losing an event."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.fixtures.obsd import ObsdProcess, obsd_env
from tests.integration.ops_support import (
    EVENT_KIND,
    INPUT_CONFIG,
    file_events,
    pick_input,
    send_events,
)

pytestmark = pytest.mark.integration

TAIL_CONFIG = """
[daemon]
data_dir = '{data_dir}'
metrics_interval = 0
[http]
listen = ["tcp:0:interface=127.0.0.1"]
[outputs.file]
batch_timeout = 0.05
"""


class TestTailCli:
    def test_follows_matching_events(self, obsd_process: Callable[..., ObsdProcess]) -> None:
        """`python -m obsd tail --match event=user.*` prints exactly the matching events, rendered."""
        kind = pick_input()
        proc = obsd_process(TAIL_CONFIG + INPUT_CONFIG[kind])
        url = f"http://127.0.0.1:{proc.port('http')}"
        tail = subprocess.Popen(
            [sys.executable, "-m", "obsd", "tail", "--url", url, "--match", "event=user.*"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=obsd_env(),
            text=True,
        )
        try:
            assert tail.stderr is not None and tail.stdout is not None
            assert "following (match: event=user.*)" in tail.stderr.readline()
            texts = ["user.login ann", "order.paid 1", "user.logout ann", "order.paid 2", "user.login bob"]
            send_events(kind, proc, texts)
            lines = [tail.stdout.readline() for _ in range(3)]
        finally:
            tail.terminate()
            tail.wait(10)
        assert [line.split("] ", 1)[1].split("  ")[0].strip() for line in lines] == [
            "user.login ann",
            "user.logout ann",
            "user.login bob",
        ]
        assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[", line) for line in lines)
        assert all(f"source={kind}" in line and f"kind={EVENT_KIND[kind]}" in line for line in lines)
        assert proc.stop() == 0

    def test_bad_match_exits_1(self, obsd_process: Callable[..., ObsdProcess]) -> None:
        """A filter the server refuses ends the CLI with status 1 and the reason."""
        proc = obsd_process(TAIL_CONFIG)
        url = f"http://127.0.0.1:{proc.port('http')}"
        result = subprocess.run(
            [sys.executable, "-m", "obsd", "tail", "--url", url, "--match", "colour=red"],
            capture_output=True, text=True, env=obsd_env(), timeout=30, check=False,
        )
        assert result.returncode == 1
        assert "HTTP 400: bad match 'colour=red'" in result.stderr
        assert proc.stop() == 0


RELOAD_CONFIG = """
[daemon]
data_dir = '{data_dir}'
metrics_interval = 0
[http]
listen = ["tcp:0:interface=127.0.0.1"]
[outputs.a]
type = "file"
path = '{data_dir}/a.jsonl'
batch_timeout = 0.05
[outputs.b]
type = "file"
path = '{data_dir}/b.jsonl'
batch_timeout = 0.05
[[routes]]
match = {{ kind = ["{kind}"] }}
outputs = ["{target}"]
"""


def reload_config(kind: str) -> str:
    text = RELOAD_CONFIG.replace("{target}", "a").replace("{kind}", EVENT_KIND[kind])
    return text.replace("{{", "{").replace("}}", "}") + INPUT_CONFIG[kind]


class TestSighup:
    def test_route_change_loses_nothing(self, obsd_process: Callable[..., ObsdProcess]) -> None:
        """N lines to a, SIGHUP after the config routes to b, M lines to b: exactly N in a, M in b."""
        kind = pick_input()
        proc = obsd_process(reload_config(kind))
        data_dir: Path = proc.data_dir  # type: ignore[attr-defined]
        send_events(kind, proc, [f"before {i}" for i in range(300)])
        proc.wait_for(lambda: len(file_events(data_dir / "a.jsonl")) == 300, what="300 events in a")
        config = proc.workdir / "obsd.toml"
        config.write_text(config.read_text().replace('outputs = ["a"]', 'outputs = ["b"]'))
        os.kill(proc.pid, signal.SIGHUP)
        proc.wait_for(
            lambda: any(e.get("event") == "config reloaded" for e in proc.log_events()),
            what="the reload",
        )
        send_events(kind, proc, [f"after {i}" for i in range(200)])
        proc.wait_for(lambda: len(file_events(data_dir / "b.jsonl")) == 200, what="200 events in b")
        assert proc.stop() == 0
        assert [e["event"] for e in file_events(data_dir / "a.jsonl")] == [f"before {i}" for i in range(300)]
        assert [e["event"] for e in file_events(data_dir / "b.jsonl")] == [f"after {i}" for i in range(200)]

    def test_listener_change_is_refused_and_obsd_keeps_running(
        self, obsd_process: Callable[..., ObsdProcess]
    ) -> None:
        """A changed listener needs a restart: logged, and the old config keeps serving."""
        kind = pick_input()
        proc = obsd_process(reload_config(kind))
        data_dir: Path = proc.data_dir  # type: ignore[attr-defined]
        config = proc.workdir / "obsd.toml"
        config.write_text(
            config.read_text()
            .replace("tcp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.2", 1)
            .replace('outputs = ["a"]', 'outputs = ["b"]')
        )
        os.kill(proc.pid, signal.SIGHUP)
        proc.wait_for(
            lambda: any("need a restart" in str(e.get("event")) for e in proc.log_events()),
            what="the refusal",
        )
        refusal = next(e for e in proc.log_events() if "need a restart" in str(e.get("event")))
        assert refusal["needs_restart"] == ["http"]
        send_events(kind, proc, ["still a"])
        proc.wait_for(lambda: len(file_events(data_dir / "a.jsonl")) == 1, what="the event in a")
        assert file_events(data_dir / "b.jsonl") == []
        assert proc.stop() == 0


DISK_CONFIG = """
[daemon]
data_dir = '{data_dir}'
metrics_interval = 0
[http]
listen = ["tcp:0:interface=127.0.0.1"]
[outputs.a]
type = "file"
path = '{data_dir}/a.jsonl'
batch_timeout = 0.05
[outputs.a.buffer]
type = "disk"
max_events = 100000
"""


class TestSighupDiskBuffer:
    def test_changed_disk_buffered_output_loses_nothing(
        self, obsd_process: Callable[..., ObsdProcess]
    ) -> None:
        """SIGHUP while a disk-buffered output is busy: its successor replays the spool, each event once."""
        kind = pick_input()
        proc = obsd_process(DISK_CONFIG + INPUT_CONFIG[kind])
        data_dir: Path = proc.data_dir  # type: ignore[attr-defined]
        count = 2000 if kind == "syslog" else 300  # Sentry: one request per event
        send_events(kind, proc, [f"before {i}" for i in range(count)])
        config = proc.workdir / "obsd.toml"
        config.write_text(config.read_text().replace("max_events = 100000", "max_events = 200000"))
        os.kill(proc.pid, signal.SIGHUP)
        proc.wait_for(
            lambda: any(e.get("event") == "config reloaded" for e in proc.log_events()),
            what="the reload",
        )
        reloaded = next(e for e in proc.log_events() if e.get("event") == "config reloaded")
        assert reloaded["handed_over"] == ["a"]
        send_events(kind, proc, [f"after {i}" for i in range(500)])
        total = count + 500
        proc.wait_for(lambda: len(file_events(data_dir / "a.jsonl")) >= total, what=f"{total} in a")
        assert proc.stop() == 0
        texts = [e["event"] for e in file_events(data_dir / "a.jsonl")]
        before = [f"before {i}" for i in range(count)]
        assert sorted(texts) == sorted(before + [f"after {i}" for i in range(500)])
        assert [t for t in texts if t.startswith("before")] == before
