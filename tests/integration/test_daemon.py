"""The real daemon: start with no config, log per listener and output, stop cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.fixtures.obsd import ROOT, TWISTD, ObsdProcess, obsd_env, twistd_args

pytestmark = pytest.mark.integration


class TestStartStop:
    def test_no_config_runs_the_embedded_default(self, tmp_path: Path) -> None:
        """`twistd -n obsd` logs one line per listener and output and exits 0 on SIGTERM."""
        proc = ObsdProcess(tmp_path, twistd_args(None)).start()
        events = proc.log_events()
        listening = [e for e in events if e.get("event") == "listening"]
        outputs = [e for e in events if e.get("event") == "output started"]
        assert {e["output"] for e in outputs} == {"console", "file"}
        assert all(e["address"] == "127.0.0.1" for e in listening)
        assert ("http", "tcp:9000:interface=127.0.0.1") in {(e["input"], e["endpoint"]) for e in listening}
        assert proc.stop() == 0
        assert "Traceback" not in proc.output()
        assert any(e.get("event") == "stopped" for e in proc.log_events())

    def test_tac_runs_the_same(self, tmp_path: Path) -> None:
        """`twistd -ny tac/obsd.tac` reads OBSD_CONFIG and runs the same service."""
        config = tmp_path / "obsd.toml"
        config.write_text(
            f"[daemon]\ndata_dir = '{tmp_path / 'data'}'\n"
            "[http]\nlisten = ['tcp:0:interface=127.0.0.1']\n[outputs.file]\n"
        )
        args = [*TWISTD, "--pidfile", "", "-ny", str(ROOT / "tac" / "obsd.tac")]
        proc = ObsdProcess(tmp_path, args, {"OBSD_CONFIG": str(config)}).start()
        assert proc.port("http") > 0
        assert [e["output"] for e in proc.log_events() if e.get("event") == "output started"] == ["file"]
        assert proc.stop() == 0


class TestRefusals:
    def test_bad_config_exits_nonzero_without_traceback(self, tmp_path: Path) -> None:
        """twistd with a bad config prints every problem and exits 1, no traceback."""
        config = tmp_path / "bad.toml"
        config.write_text("bogus = 1\n[http]\nlisten = ['tcp:nope']\n")
        result = subprocess.run(twistd_args(config), cwd=tmp_path, env=obsd_env(),
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 1
        assert "bogus: unknown key" in result.stderr
        assert "http.listen[0]: bad endpoint 'tcp:nope'" in result.stderr
        assert "Traceback" not in result.stderr + result.stdout

    def test_second_obsd_on_same_data_dir_refuses(
        self, obsd_process: Callable[..., ObsdProcess], tmp_path: Path
    ) -> None:
        """A second obsd on the same data_dir exits non-zero, naming the lock."""
        first = obsd_process("[daemon]\ndata_dir = '{data_dir}'\n[outputs.file]\n")
        config = tmp_path / "second.toml"
        config.write_text(f"[daemon]\ndata_dir = '{first.data_dir}'\n[outputs.file]\n")  # type: ignore[attr-defined]
        result = subprocess.run(twistd_args(config), cwd=tmp_path, env=obsd_env(),
                                capture_output=True, text=True, timeout=60)
        assert result.returncode != 0
        assert "another obsd is running" in result.stderr + result.stdout
        assert first.proc is not None and first.proc.poll() is None
        os.kill(first.pid, signal.SIGTERM)
        assert first.proc.wait(30) == 0
