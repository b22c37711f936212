"""The StatsD and Graphite benchmarks still run: ``--quick`` exits 0 and prints every row."""

from __future__ import annotations

import os

import pytest

from tests.bench.conftest import run_quick

# it starts a real benchmark: processes, sockets, seconds of load
pytestmark = pytest.mark.integration



class TestQuickBenchmarks:
    def test_statsd(self) -> None:
        """bench.statsd --quick prints obsd, Etsy (or a skip note) and bare rows, ratios and RSS."""
        out = run_quick("bench.statsd")
        for shape in ("1", "20"):
            for receiver in ("obsd", "bare"):
                assert any(line.split()[:2] == [shape, receiver] for line in out.splitlines())
        if "Etsy statsd skipped" not in out:
            assert "obsd/etsy" in out
        elif os.environ.get("CI"):
            pytest.fail("CI is set but Etsy statsd was skipped")
        assert "obsd/bare" in out
        assert "distinct names" in out

    def test_graphite(self) -> None:
        """bench.graphite --quick relays through obsd with no loss, beside the peers."""
        out = run_quick("bench.graphite")
        rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()}
        assert rows["obsd"][3] == "0"
        for peer in ("carbon-relay", "carbon-c-relay"):
            assert peer in rows or f"{peer} skipped" in out
