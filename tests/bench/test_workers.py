"""One worker against two runs in its --quick form (as CI does)."""

from __future__ import annotations

import pytest

from tests.bench.conftest import RunQuick

pytestmark = pytest.mark.integration


class TestBenchWorkersQuick:
    def test_quick_run(self, run_quick: RunQuick) -> None:
        """`python -m bench.workers --quick`: both settings handle every line, once."""
        stdout = run_quick("bench.workers", timeout=300.0)
        rows = [line.split() for line in stdout.splitlines() if line.split()[:1] in (["1"], ["2"])]
        assert [row[0] for row in rows] == ["1", "2"], stdout
        assert len(rows[1]) == 9, stdout  # two workers: a CPU share for each process
        assert "every line once in both" in stdout, stdout
        assert "aim: two workers >= 1.7x" in stdout, stdout
