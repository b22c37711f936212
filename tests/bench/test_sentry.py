"""The Sentry ingest benchmark runs in its --quick form (as CI does)."""

from __future__ import annotations

import pytest

from tests.bench.conftest import RunQuick

pytestmark = pytest.mark.integration


class TestBenchSentryQuick:
    def test_quick_run(self, run_quick: RunQuick) -> None:
        """`python -m bench.sentry --quick` exits 0 and prints a row per body and server."""
        stdout = run_quick("bench.sentry")
        rows = [line for line in stdout.splitlines() if line.startswith(("raven", "sdk"))]
        assert len(rows) == 4
        assert {row.split()[-8] for row in rows} == {"obsd", "twisted.web"}
        assert all(float(row.split()[-2]) > 0 for row in rows)  # CPU-us per request
        assert "events written by obsd: 700 for 700 requests answered 200" in stdout
