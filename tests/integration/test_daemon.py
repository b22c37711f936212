"""The real daemon: start with no config, log per listener and output, stop cleanly."""

from __future__ import annotations

import os
import signal
import socket
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

    def test_data_dir_under_a_file_is_a_key_path_not_a_traceback(self, tmp_path: Path) -> None:
        """An unusable data_dir names its key and the reason; twistd printed a raw traceback."""
        (tmp_path / "plain").write_text("")
        config = tmp_path / "obsd.toml"
        config.write_text(f"[daemon]\ndata_dir = '{tmp_path / 'plain' / 'data'}'\n[outputs.console]\n")
        result = subprocess.run(twistd_args(config), cwd=tmp_path, env=obsd_env(),
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 1
        assert (f"obsd: daemon.data_dir: cannot create '{tmp_path / 'plain' / 'data'}': "
                "Not a directory") in result.stderr + result.stdout
        assert "Traceback" not in result.stderr + result.stdout

    def test_second_sigterm_while_draining_is_quiet(
        self, obsd_process: Callable[..., ObsdProcess]
    ) -> None:
        """A second SIGTERM during the drain is a warning, not a ReactorNotRunning traceback."""
        proc = obsd_process(
            "[daemon]\ndata_dir = '{data_dir}'\nshutdown_timeout = 3.0\n"
            "[inputs.statsd]\nlisten = ['udp:0:interface=127.0.0.1']\nflush_interval = 0.2\n"
            "[outputs.graphite]\ndestinations = ['127.0.0.1:1']\n"
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(b"queued:1|c", ("127.0.0.1", proc.port("statsd", "udp")))
        proc.wait_for(lambda: "connection" in proc.output() or "carbon" in proc.output(),
                      what="the graphite output failing to connect")
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait_for(lambda: "stopping: closing inputs" in proc.output(), what="the drain")
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.stop() == 0
        out = proc.output()
        assert "already stopping" in out
        assert "ReactorNotRunning" not in out
        assert "Traceback" not in out

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
