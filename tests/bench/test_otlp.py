"""The OTLP ingest benchmark runs in its --quick form (as CI does)."""

from __future__ import annotations

import pytest

from tests.bench.conftest import RunQuick

pytestmark = pytest.mark.integration


class TestBenchOtlpQuick:
    def test_quick_run(self, run_quick: RunQuick) -> None:
        """`python -m bench.otlp --quick` exits 0 with a row per request kind and server."""
        stdout = run_quick("bench.otlp")
        rows = [line for line in stdout.splitlines() if line.startswith(("logs", "metrics"))]
        assert len(rows) == 4
        assert sum("obsd" in row for row in rows) == 2
        assert "log events written by obsd: 12500 for 250 log requests" in stdout
