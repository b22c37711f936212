"""``python -m bench.durability --quick`` runs and prints a row per output and buffer type."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class TestQuickBench:
    def test_quick_run(self) -> None:
        """The quick benchmark exits 0 with every event delivered, memory and disk side by side."""
        result = subprocess.run(
            [sys.executable, "-m", "bench.durability", "--quick"],
            cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        rows = [line.split()[:2] for line in result.stdout.splitlines()
                if line.startswith(("elasticsearch ", "graphite "))]
        assert rows == [["elasticsearch", "memory"], ["elasticsearch", "disk"],
                        ["graphite", "memory"], ["graphite", "disk"]]
        assert "INCOMPLETE" not in result.stdout
