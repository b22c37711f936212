"""The ``obsd`` command against real processes: top on a loaded obsd, run with a stale pid file."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.fixtures.obsd import ObsdProcess, obsd_env
from tests.integration.ops_support import get_json, send_syslog

pytestmark = pytest.mark.integration

#: the console script pip installed next to this interpreter (what users type)
OBSD = str(Path(sys.executable).parent / "obsd")

CONFIG = """
[daemon]
data_dir = '{data_dir}'
metrics_interval = 0
[http]
listen = ["tcp:0:interface=127.0.0.1"]
[inputs.syslog]
listen = ["tcp:0:interface=127.0.0.1"]
timezone = "UTC"
[outputs.file]
batch_timeout = 0.05
"""


class TestTop:
    def test_once_shows_the_loaded_obsd(self, obsd_process: Callable[..., ObsdProcess]) -> None:
        """`obsd top --once` prints the input's total and rate and the output's, as /status has them."""
        proc = obsd_process(CONFIG)
        base = f"http://127.0.0.1:{proc.port('http')}"
        send_syslog(proc.port("syslog"), [f"user.login {i}" for i in range(80)])
        proc.wait_for(
            lambda: get_json(f"{base}/status")["flow"]["inputs"][0]["rate"] > 0,
            timeout=20, what="a sample after the traffic",
        )
        for _attempt in range(5):
            before = get_json(f"{base}/status")
            done = subprocess.run([OBSD, "top", "--once", "--url", base], capture_output=True,
                                  text=True, timeout=30, env=obsd_env(), check=False)
            after = get_json(f"{base}/status")
            if before["flow"]["at"] == after["flow"]["at"]:
                break
        else:
            raise AssertionError("top never ran between two samples")
        assert done.returncode == 0, done.stderr
        assert "\x1b" not in done.stdout
        rows = {line.split()[0]: line.split() for line in done.stdout.splitlines() if line.strip()}
        syslog = before["flow"]["inputs"][0]
        assert rows["syslog"] == ["syslog", "syslog", "80", f"{syslog['rate']:.2f}/s", "0"]
        out = before["flow"]["outputs"][0]
        assert rows["file"] == ["file", "file", "ok", "80", f"{out['rate']:.2f}/s", "0", "0"]
        assert proc.stop() == 0

    def test_once_without_obsd_exits_1(self) -> None:
        """Nothing listening: one clear line and exit status 1."""
        done = subprocess.run([OBSD, "top", "--once", "--url", "http://127.0.0.1:9"],
                              capture_output=True, text=True, timeout=30, env=obsd_env(),
                              check=False)
        assert done.returncode == 1
        assert done.stderr.startswith("obsd top: cannot read http://127.0.0.1:9/status:")


class TestRun:
    def test_stale_pid_file_and_no_inputs(self, tmp_path: Path) -> None:
        """`obsd run` starts beside a stale twistd.pid, warns that no input is configured,
        writes no pid file, and exits 0 on SIGTERM."""
        (tmp_path / "twistd.pid").write_text(f"{os.getpid()}\n")  # a live PID: twistd would refuse
        config = tmp_path / "obsd.toml"
        config.write_text(f"[daemon]\ndata_dir = '{tmp_path / 'data'}'\n"
                          "[http]\nlisten = ['tcp:0:interface=127.0.0.1']\n[outputs.file]\n")
        proc = ObsdProcess(tmp_path, [OBSD, "run", "--config", str(config)]).start()
        warnings = [e for e in proc.log_events() if e.get("level") == "warning"]
        assert [e["event"] for e in warnings] == ["no inputs configured: obsd will receive nothing"]
        assert proc.stop() == 0
        assert (tmp_path / "twistd.pid").read_text() == f"{os.getpid()}\n"
