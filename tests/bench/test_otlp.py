"""The OTLP ingest benchmark runs in its --quick form (as CI does)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


class TestBenchOtlpQuick:
    def test_quick_run(self) -> None:
        """`python -m bench.otlp --quick` exits 0 with a row per request kind and server."""
        result = subprocess.run(
            [sys.executable, "-m", "bench.otlp", "--quick"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        rows = [line for line in result.stdout.splitlines() if line.startswith(("logs", "metrics"))]
        assert len(rows) == 4
        assert sum("obsd" in row for row in rows) == 2
        assert "log events written by obsd: 12500 for 250 log requests" in result.stdout
