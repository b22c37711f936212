"""The Kafka drain benchmark runs in its --quick form (as CI does)."""

from __future__ import annotations

import pytest

from tests.bench.conftest import RunQuick

pytestmark = pytest.mark.integration


class TestBenchKafkaQuick:
    def test_quick_run(self, run_quick: RunQuick) -> None:
        """`python -m bench.kafka --quick` drains the topic with one and two centrals, no loss."""
        stdout = run_quick("bench.kafka")
        rows = [line.split() for line in stdout.splitlines() if line[:1] in ("1", "2")]
        assert [row[0] for row in rows] == ["1", "2"], stdout
        assert "two centrals / one:" in stdout and "LOST" not in stdout
