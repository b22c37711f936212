"""The hostile-clients run works in its --quick form (as CI runs it)."""

from __future__ import annotations

import pytest

from tests.bench.conftest import RunQuick

pytestmark = pytest.mark.integration


class TestBenchHostileQuick:
    def test_quick_run(self, run_quick: RunQuick) -> None:
        """`python -m bench.hostile --quick` exits 0: obsd survived every attack, each was
        counted, the honest sender's traffic all arrived and RSS stayed under the bound."""
        stdout = run_quick("bench.hostile")
        rows = [line for line in stdout.splitlines() if line.split("  ")[0] and " yes " in line]
        assert len(rows) == 9, stdout
        assert "FAILED" not in stdout
