"""The interpreter comparison runs in its --quick form (as CI does)."""

from __future__ import annotations

import pytest

from tests.bench.conftest import RunQuick

pytestmark = pytest.mark.integration


class TestBenchInterpretersQuick:
    def test_quick_run(self, run_quick: RunQuick) -> None:
        """`python -m bench.interpreters --quick`: obsd's syslog rate with each CPython 3.11."""
        stdout = run_quick("bench.interpreters", timeout=900.0)
        rows = [line.split() for line in stdout.splitlines()
                if line.split()[:1] in (["rfc5424"], ["json"])]
        assert len(rows) == 4, stdout
        assert all(float(value) > 0 for row in rows for value in row[2:]), stdout
        assert "/usr/bin/python3" in stdout, stdout  # the distribution's, beside CI's
