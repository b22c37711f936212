"""``python -m bench.elasticsearch --quick`` runs (the counting endpoint only) and prints its rows."""

from __future__ import annotations

import pytest

from tests.bench.conftest import RunQuick

# it starts a real benchmark: processes, sockets, seconds of load
pytestmark = pytest.mark.integration



class TestQuickBench:
    def test_quick_run(self, run_quick: RunQuick) -> None:
        """The quick benchmark exits 0 and prints one row per gzip setting and the aim."""
        stdout = run_quick("bench.elasticsearch")
        rows = [line.split() for line in stdout.splitlines() if line.startswith("counting")]
        assert [(row[1], row[2]) for row in rows] == [("1000", "no"), ("1000", "yes")]
        assert all(row[3] == "5000" for row in rows)
        assert "aim: 200,000 docs per obsd CPU-second" in stdout
        assert "at every batch size of 1,000 or more" in stdout
