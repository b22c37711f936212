"""The relay benchmark runs in its --quick form (as CI does)."""

from __future__ import annotations

import pytest

from tests.bench.conftest import RunQuick

pytestmark = pytest.mark.integration


class TestBenchRelayQuick:
    def test_quick_run(self, run_quick: RunQuick) -> None:
        """`python -m bench.relay --quick` exits 0 and prints one row per scenario."""
        stdout = run_quick("bench.relay")
        rows = [line for line in stdout.splitlines()
                if line.startswith(("direct", "agent->central"))]
        assert len(rows) == 5
        for row in rows:  # events/s, ratio, CPU us per event, ratio
            rate, _, cost, _ = (float(v) for v in row.split()[-4:])
            assert rate > 0
            assert cost > 0
        assert rows[0].split()[-3] == "1.00"
        assert rows[0].split()[-1] == "1.00"
