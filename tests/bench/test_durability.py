"""``python -m bench.durability --quick`` runs and prints a row per output and buffer type."""

from __future__ import annotations

import pytest

from tests.bench.conftest import RunQuick

# it starts a real benchmark: processes, sockets, seconds of load
pytestmark = pytest.mark.integration



class TestQuickBench:
    def test_quick_run(self, run_quick: RunQuick) -> None:
        """The quick benchmark exits 0 with every event delivered, memory and disk side by side."""
        stdout = run_quick("bench.durability")
        rows = [line.split()[:2] for line in stdout.splitlines()
                if line.startswith(("elasticsearch ", "graphite "))]
        assert rows == [["elasticsearch", "memory"], ["elasticsearch", "disk"],
                        ["graphite", "memory"], ["graphite", "disk"]]
        assert "INCOMPLETE" not in stdout
