"""bench.metric_outputs still runs: ``--quick`` exits 0 with every output's row and no loss."""

from __future__ import annotations

import re

import pytest

from tests.bench.conftest import run_quick

pytestmark = pytest.mark.integration


def test_quick_run() -> None:
    """InfluxDB and remote write beside Graphite, each with a points-per-CPU-second ratio."""
    out = run_quick("bench.metric_outputs")
    for kind in ("graphite", "influxdb", "remote_write"):
        row = re.search(rf"^\s*{kind}\s+[\d,]+\s+[\d,]+\s+0\s", out, re.MULTILINE)
        assert row, f"no loss-free {kind} row in:\n{out}"
    assert re.search(r"^influxdb/graphite: \d+\.\d\d", out, re.MULTILINE), out
    assert re.search(r"^remote_write/graphite: \d+\.\d\d", out, re.MULTILINE), out
