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


class TestWorkers:
    """``[daemon] workers``: one file for all; worker 0 rotates, the others follow."""

    def test_workers_append_to_one_file_and_follow_worker_0s_rotation(
        self, tmp_path: Path
    ) -> None:
        clock = Clock()
        outs = []
        for index in (0, 1):
            config = Config(type="file", batch_size=1, max_bytes=1024, keep=3)
            context = make_output_context(
                clock, tmp_path / f"worker-{index}", worker=index, shared_dir=tmp_path
            )
            out = FileOutput("file", config, context)
            out.startService()
            outs.append(out)
        assert outs[0].path == outs[1].path == tmp_path / "events.jsonl"
        assert (outs[0].rotates, outs[1].rotates) == (True, False)
        sent = []
        for i in range(60):
            sent.append(f"event {i:03d}")
            outs[i % 2].accept({"event": sent[-1], "timestamp": 0.0, "pad": "x" * 40})
        for out in outs:
            success_result_of(out.stopService())
        files = sorted(tmp_path.glob("events.jsonl*"))
        assert [p.name for p in files] == [
            "events.jsonl", "events.jsonl.1", "events.jsonl.2", "events.jsonl.3"
        ]
        written = [
            json.loads(line)["event"] for p in files for line in p.read_text().splitlines()
        ]
        assert len(written) == len(set(written))  # each line once, none torn
        assert set(sent[-30:]) <= set(written)  # older ones went past keep = 3
        # worker 0 rotates by the file's real size, worker 1's lines counted: a file is
        # over max_bytes by at most what worker 1 wrote since worker 0's last write
        line = len(outs[0].encode({"event": sent[0], "timestamp": 0.0, "pad": "x" * 40}))
        assert all(p.stat().st_size <= 1024 + line for p in files)
