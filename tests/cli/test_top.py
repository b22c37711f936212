"""``obsd top``: one frame from a canned /status document, plain text."""

from __future__ import annotations

import io
from typing import Any

import pytest

from obsd.cli import top
from obsd.cli.top import render_frame, run_top

DOC: dict[str, Any] = {
    "uptime": 125.4,
    "ready": False,
    "flow": {
        "at": 120.0,
        "window": 60.0,
        "inputs": [
            {"name": "syslog", "type": "syslog", "counter": "received", "total": 1200,
             "rate": 20.0, "errors": 0},
        ],
        "edges": [{"route": "0", "output": "es", "label": "kind=log", "rate": 19.5}],
        "outputs": [
            {"name": "es", "type": "elasticsearch", "state": "failing", "sent": 800,
             "rate": 12.25, "queued": 400, "errors": 3},
        ],
    },
    "errors": {"output.es": {"message": "bulk request failed: 503", "at": 119.0, "count": 3}},
}


class TestRenderFrame:
    def test_frame_shows_inputs_routes_outputs_and_problems(self) -> None:
        """Every component with its rate and queue, then the last problems."""
        frame = render_frame(DOC, "http://127.0.0.1:9000")
        lines = frame.splitlines()
        assert lines[0] == ("obsd top  http://127.0.0.1:9000  up 125 s  NOT READY  "
                            "(rates over the last 60 s)")
        assert lines[2].split() == ["INPUT", "TYPE", "ACCEPTED", "RATE", "ERRORS"]
        assert lines[3].split() == ["syslog", "syslog", "1200", "20.00/s", "0"]
        assert lines[6].split() == ["0", "kind=log", "es", "19.50/s"]
        assert lines[9].split() == ["es", "elasticsearch", "failing", "800", "12.25/s", "400", "3"]
        assert "  output.es: bulk request failed: 503 (3 so far)" in lines
        assert "\x1b" not in frame

    def test_no_inputs_says_so(self) -> None:
        """A config without inputs shows why nothing arrives."""
        doc = {**DOC, "flow": {**DOC["flow"], "inputs": []}, "errors": {}}
        assert "INPUT  (none: obsd receives nothing)" in render_frame(doc, "u")


class TestRunTop:
    def test_once_prints_one_plain_frame(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """--once: one frame, no escape codes, exit 0."""
        monkeypatch.setattr(top, "fetch_status", lambda url: DOC)
        out = io.StringIO()
        assert run_top("http://x", once=True, out=out) == 0
        assert out.getvalue() == render_frame(DOC, "http://x")

    def test_once_unreachable_exits_1(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """--once against nothing: a clear line on stderr and exit 1."""

        def refuse(url: str) -> dict[str, Any]:
            raise OSError("connection refused")

        monkeypatch.setattr(top, "fetch_status", refuse)
        err = io.StringIO()
        assert run_top("http://x", once=True, out=io.StringIO(), err=err) == 1
        assert err.getvalue() == "obsd top: cannot read http://x/status: connection refused\n"

    def test_live_view_redraws_until_interrupted(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Live: each frame starts with home+clear; Ctrl-C ends it with 0."""
        frames = iter([DOC, DOC])
        monkeypatch.setattr(top, "fetch_status", lambda url: next(frames))
        sleeps: list[float] = []

        def sleep(seconds: float) -> None:
            sleeps.append(seconds)
            if len(sleeps) == 2:
                raise KeyboardInterrupt

        monkeypatch.setattr(top.time, "sleep", sleep)
        out = io.StringIO()
        assert run_top("http://x", interval=1.5, out=out) == 0
        assert out.getvalue().count("\x1b[H\x1b[J") == 2
        assert sleeps == [1.5, 1.5]
