"""The GELF UDP benchmark runs in its --quick form (as CI does)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


class TestBenchGelfQuick:
    def test_quick_run(self) -> None:
        """`python -m bench.gelf --quick` exits 0 and prints messages per CPU-second."""
        result = subprocess.run(
            [sys.executable, "-m", "bench.gelf", "--quick"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        rows = [line for line in result.stdout.splitlines() if line.startswith(("obsd ", "bare"))]
        assert len(rows) == 2
        assert "messages per CPU-second: obsd" in result.stdout
