"""The GELF UDP benchmark runs in its --quick form (as CI does)."""

from __future__ import annotations

import pytest

from tests.bench.conftest import RunQuick

pytestmark = pytest.mark.integration


class TestBenchGelfQuick:
    def test_quick_run(self, run_quick: RunQuick) -> None:
        """`python -m bench.gelf --quick` exits 0 and prints messages per CPU-second."""
        stdout = run_quick("bench.gelf")
        rows = [line for line in stdout.splitlines() if line.startswith(("obsd ", "bare"))]
        assert len(rows) == 2
        assert "messages per CPU-second: obsd" in stdout
