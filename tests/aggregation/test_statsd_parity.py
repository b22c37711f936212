"""Replay the Etsy statsd 0.9.0 parity corpus through obsd's parser and aggregator.

tests/data/statsd_parity/cases.json was recorded by running Etsy statsd itself
(tests/data/statsd_parity/record.py).  Each interval's Graphite lines are
compared by series name; values must agree within a relative tolerance of
1e-9 (absolute 1e-9 near zero), timestamps are left aside, and
``processing_time`` and ``timestamp_lag`` (which depend on timing) only have
to be present.  Etsy's ``graphiteStats.*`` lines describe its graphite
backend's own connection and are not part of aggregation, so they are
ignored.  Tags are compared in sorted order, the form carbon stores.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from obsd.aggregation.statsd import AggregatorSettings, StatsdAggregator
from obsd.codecs.graphite import encode_plaintext

CORPUS = Path(__file__).parents[1] / "data" / "statsd_parity" / "cases.json"
DOCUMENT = json.loads(CORPUS.read_text())
CASES = DOCUMENT["cases"]
TOLERANCE = 1e-9
TIMING_DEPENDENT = ("processing_time", "timestamp_lag")


def settings_for(config: dict[str, Any]) -> AggregatorSettings:
    """A case's config (obsd names) as AggregatorSettings."""
    values: dict[str, Any] = {"flush_interval": float(DOCUMENT["flush_interval"])}
    for key, value in config.items():
        if key == "histogram":
            value = tuple((entry["metric"], tuple(entry["bins"])) for entry in value)
        elif isinstance(value, list):
            value = tuple(value)
        values[key] = value
    return AggregatorSettings(**values)


def canonical(name: str) -> str:
    """A series name with its ``;k=v`` tags sorted, as carbon stores it."""
    path, *tags = name.split(";")
    return ";".join([path, *sorted(tags)])


def parse_lines(lines: list[str]) -> dict[str, str]:
    """``name value`` lines as a dict, failing on a series sent twice."""
    out: dict[str, str] = {}
    for line in lines:
        name, value = line.rsplit(" ", 1)
        if ".graphiteStats." in name:
            continue
        name = canonical(name)
        assert name not in out, f"{name} sent twice"
        out[name] = value
    return out


def replay(case: dict[str, Any]) -> list[list[str]]:
    """obsd's Graphite lines, without timestamps, for each interval of a case."""
    settings = settings_for(case["config"])
    now = [1_700_000_000.0]
    aggregator = StatsdAggregator(settings, lambda: now[0])
    aggregator.flush()  # the empty first flush the recorder also waited for
    out = []
    for packets in case["flushes"]:
        now[0] += settings.flush_interval
        for packet in packets:
            aggregator.ingest(packet.encode())
        text = encode_plaintext(
            aggregator.flush(), tags_as_series=settings.graphite_tags
        )
        out.append([line.rsplit(" ", 1)[0] for line in text.decode().splitlines()])
    return out


def same_value(expected: str, actual: str) -> bool:
    """Numeric equality within the stated tolerance (NaN equals NaN)."""
    want, got = float(expected), float(actual)
    if math.isnan(want) or math.isnan(got):
        return math.isnan(want) and math.isnan(got)
    return math.isclose(want, got, rel_tol=TOLERANCE, abs_tol=TOLERANCE)


class TestCorpus:
    def test_corpus_is_large_enough(self) -> None:
        """The corpus holds at least 40 cases, each recorded from Etsy statsd or marked as a crash."""
        assert len(CASES) >= 40
        for case in CASES:
            assert case["etsy"] is not None or case.get("etsy_crashed")
            if case["etsy"] is None:
                assert "obsd_differs" in case

    def test_differences_are_documented(self) -> None:
        """Every case where obsd differs on purpose is listed in docs/statsd-differences.rst."""
        doc = (
            Path(__file__).parents[2] / "docs" / "statsd-differences.rst"
        ).read_text()
        missing = [
            case["name"]
            for case in CASES
            if "obsd_differs" in case and case["name"] not in doc
        ]
        assert missing == []


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
class TestParity:
    def test_graphite_lines_match(self, case: dict[str, Any]) -> None:
        """obsd sends the series Etsy statsd sends, with the same values (or obsd's documented ones)."""
        expected_intervals = case["obsd"] if "obsd_differs" in case else case["etsy"]
        actual_intervals = replay(case)
        assert len(actual_intervals) == len(expected_intervals)
        for interval, (expected_lines, actual_lines) in enumerate(
            zip(expected_intervals, actual_intervals, strict=True)
        ):
            expected = parse_lines(expected_lines)
            actual = parse_lines(actual_lines)
            assert sorted(actual) == sorted(expected), f"interval {interval}"
            wrong = {
                name: (expected[name], actual[name])
                for name in expected
                if not any(part in name for part in TIMING_DEPENDENT)
                and not same_value(expected[name], actual[name])
            }
            assert wrong == {}, f"interval {interval}: (etsy, obsd)"
