"""``python -m bench.syslog --quick`` runs in seconds and prints every row."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


class TestBenchSyslogQuick:
    def test_quick_run_prints_every_row(self) -> None:
        """The quick bench exits 0 with a row per receiver, payload and framing, and ratios."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        done = subprocess.run(
            [sys.executable, "-m", "bench.syslog", "--quick"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        rows = {tuple(line.split()[:3]) for line in done.stdout.splitlines() if line.strip()}
        receivers = ["obsd", "bare"]
        has_rsyslog = shutil.which("rsyslogd") or Path("/usr/sbin/rsyslogd").exists()
        if has_rsyslog:
            receivers.append("rsyslog")
        elif os.environ.get("CI"):
            pytest.fail("rsyslogd is not installed (apt-get install rsyslog)")
        for receiver in receivers:
            for payload in ("rfc5424", "json"):
                for framing in ("lf", "octet"):
                    assert (receiver, payload, framing) in rows, done.stdout
        for peer in receivers[1:]:
            assert ("obsd/" + peer, "rfc5424", "lf") in rows, done.stdout
        assert "aim:" in done.stdout
