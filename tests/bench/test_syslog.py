"""``python -m bench.syslog --quick`` runs in seconds and prints every row."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.bench.conftest import run_quick

pytestmark = pytest.mark.integration


class TestBenchSyslogQuick:
    def test_quick_run_prints_every_row(self) -> None:
        """The quick bench exits 0 with a row per receiver, payload and framing, and ratios."""
        stdout = run_quick("bench.syslog")
        rows = {tuple(line.split()[:3]) for line in stdout.splitlines() if line.strip()}
        receivers = ["obsd", "bare"]
        has_rsyslog = shutil.which("rsyslogd") or Path("/usr/sbin/rsyslogd").exists()
        if has_rsyslog:
            receivers.append("rsyslog")
        elif os.environ.get("CI"):
            pytest.fail("rsyslogd is not installed (apt-get install rsyslog)")
        for receiver in receivers:
            for payload in ("rfc5424", "json"):
                for framing in ("lf", "octet"):
                    assert (receiver, payload, framing) in rows, stdout
        for peer in receivers[1:]:
            assert ("obsd/" + peer, "rfc5424", "lf") in rows, stdout
        assert "aim:" in stdout
