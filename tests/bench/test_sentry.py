"""The Sentry ingest benchmark runs in its --quick form (as CI does)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


class TestBenchSentryQuick:
    def test_quick_run(self) -> None:
        """`python -m bench.sentry --quick` exits 0 and prints a row per body and server."""
        result = subprocess.run(
            [sys.executable, "-m", "bench.sentry", "--quick"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        rows = [line for line in result.stdout.splitlines() if line.startswith(("raven", "sdk"))]
        assert len(rows) == 4
        assert {row.split()[-6] for row in rows} == {"obsd", "twisted.web"}
        assert "events written by obsd: 700 for 700 requests answered 200" in result.stdout
