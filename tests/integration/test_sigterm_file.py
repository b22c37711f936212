"""A SIGTERM stop loses nothing: the file output holds exactly what was routed."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from tests.integration.fixtures.obsd import ObsdProcess
from tests.integration.syslog_support import file_events

pytestmark = pytest.mark.integration

CONFIG = """
[daemon]
data_dir = '{data_dir}'
[inputs.syslog]
listen = ["tcp:0:interface=127.0.0.1"]
timezone = "UTC"
[outputs.file]
batch_timeout = 5.0
"""


class TestSigtermStop:
    @pytest.mark.parametrize("count", [1, 2000])
    def test_file_holds_exactly_what_was_sent(
        self, obsd_process: Callable[..., ObsdProcess], count: int
    ) -> None:
        """N lines over TCP, then SIGTERM at once: exit 0 and exactly those N events in the file."""
        proc = obsd_process(CONFIG)
        port = proc.port("syslog", "tcp")
        lines = [
            f"<14>1 2024-01-02T03:04:05Z web01 app 1 - - message {i}".encode() for i in range(count)
        ]
        half = count // 2
        with socket.create_connection(("127.0.0.1", port), timeout=5) as lf:
            lf.sendall(b"".join(line + b"\n" for line in lines[:half]))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as octet:
            octet.sendall(b"".join(b"%d %s" % (len(line), line) for line in lines[half:]))
        assert proc.stop() == 0
        written = file_events(proc.data_dir)  # type: ignore[attr-defined]
        events = [e for e in written if e["kind"] == "log"]
        assert {e["source"] for e in written if e["kind"] != "log"} <= {"obsd"}  # own metrics
        # two connections: each one's lines in order, the two may interleave
        texts = [e["event"] for e in events]
        assert sorted(texts, key=lambda t: int(t.split()[1])) == [
            f"message {i}" for i in range(count)
        ]
        assert [t for t in texts if int(t.split()[1]) < half] == [
            f"message {i}" for i in range(half)
        ]
        assert {(e["host"], e["appname"], e["timestamp"]) for e in events} == {
            ("web01", "app", "2024-01-02T03:04:05.000000Z")
        }
        assert "Traceback" not in proc.output()
