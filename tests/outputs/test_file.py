"""The file output: JSON lines as documented, and rotation by size."""

from __future__ import annotations

import json
from pathlib import Path

from twisted.internet.task import Clock

from obsd.outputs.file import Config, FileOutput
from obsd.testing import make_output_context
from tests.helpers import success_result_of


def make(tmp_path: Path, clock: Clock, **kw: object) -> FileOutput:
    config = Config(type="file", path=str(tmp_path / "events.jsonl"), **kw)  # type: ignore[arg-type]
    out = FileOutput("file", config, make_output_context(clock, tmp_path))
    out.startService()
    return out


class TestEncoding:
    def test_line_format(self, tmp_path: Path) -> None:
        """Compact, sorted keys, RFC 3339 UTC timestamp with microseconds, no NaN, no private keys."""
        clock = Clock()
        out = make(tmp_path, clock, batch_size=1)
        out.accept({"timestamp": 1.5, "event": "caf\udcc3", "value": float("nan"),
                    "_sentry_raw": b"x", "b": 1, "a": 2})
        success_result_of(out.stopService())
        line = (tmp_path / "events.jsonl").read_text()
        assert line == (
            '{"a":2,"b":1,"event":"caf?","timestamp":"1970-01-01T00:00:01.500000Z",'
            '"value":null}\n'
        )

    def test_fast_path_matches_the_standard_encoder(self, tmp_path: Path) -> None:
        """orjson's line and the standard encoder's (integers past 64 bits) are alike."""
        from obsd.codecs.jsonline import encode_json_line

        event = {"timestamp": 1.5, "event": "é", "value": 1.25, "n": [1, {"z": None}]}
        fast = encode_json_line(event)
        slow = encode_json_line({**event, "big": 2**70})
        assert slow == b'{"big":1180591620717411303424,' + fast[1:]
        assert b'"n":[1,{"z":null}]' in fast


class TestRotation:
    def test_rotates_and_keeps_n(self, tmp_path: Path) -> None:
        """Past max_bytes the file moves to .1 (older ones shift) and only keep files stay."""
        clock = Clock()
        out = make(tmp_path, clock, batch_size=1, max_bytes=1024, keep=2)
        for i in range(40):
            out.accept({"event": f"event number {i:03d}", "timestamp": 0.0, "pad": "x" * 40})
        success_result_of(out.stopService())
        names = sorted(p.name for p in tmp_path.glob("events.jsonl*"))
        assert names == ["events.jsonl", "events.jsonl.1", "events.jsonl.2"]
        lines = [
            json.loads(line)["event"]
            for name in ("events.jsonl.2", "events.jsonl.1", "events.jsonl")
            for line in (tmp_path / name).read_text().splitlines()
        ]
        assert lines == [f"event number {i:03d}" for i in range(40 - len(lines), 40)]
        assert all((tmp_path / n).stat().st_size <= 1024 for n in names)
