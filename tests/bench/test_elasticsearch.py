"""``python -m bench.elasticsearch --quick`` runs (the counting endpoint only) and prints its rows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class TestQuickBench:
    def test_quick_run(self) -> None:
        """The quick benchmark exits 0 and prints one row per gzip setting and the aim."""
        result = subprocess.run(
            [sys.executable, "-m", "bench.elasticsearch", "--quick"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        rows = [line.split() for line in result.stdout.splitlines() if line.startswith("counting")]
        assert [(row[1], row[2]) for row in rows] == [("1000", "no"), ("1000", "yes")]
        assert all(row[3] == "5000" for row in rows)
        assert "aim: 50,000 docs per obsd CPU-second" in result.stdout
