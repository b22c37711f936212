"""The Kafka drain benchmark runs in its --quick form (as CI does)."""

from __future__ import annotations

import pytest

from tests.bench.conftest import RunQuick

pytestmark = pytest.mark.integration


class TestBenchKafkaQuick:
    def test_quick_run(self, run_quick: RunQuick) -> None:
        """`python -m bench.kafka --quick`: agent -> Kafka beside the HTTP relay, then one and two
        centrals draining a pre-filled topic, with no loss."""
        stdout = run_quick("bench.kafka")
        rows = [line.split() for line in stdout.splitlines()
                if line[:1] in ("1", "2") and "CPUs" not in line]
        assert [row[0] for row in rows] == ["1", "2"], stdout
        paths = {line[:26].strip(): line[26:].split()
                 for line in stdout.splitlines() if line.startswith("agent -> ")}
        assert list(paths) == ["agent -> Kafka", "agent -> central (HTTP)"], stdout
        assert all(float(numbers[0]) > 0 for numbers in paths.values()), stdout  # events/s
        assert "two centrals / one:" in stdout and "LOST" not in stdout
