"""The single-line fast path of ``StatsdAggregator.ingest`` agrees with the full parser."""

from __future__ import annotations

import pytest

from obsd.aggregator import AggregatorSettings, StatsdAggregator

LINES = [
    b"a:1|c", b"a:-1|c", b"a:2.5|c", b"a:1e3|c", b"t:5|ms", b"t:-5|ms", b"h:-5|h",
    b"d:7|d", b"g:5|g", b"g:+3|g", b"g:-2|g", b"a:inf|c", b"a:nan|c", b"a:1_0|c",
    b"a:0x10|c", b"a:1|c\r", "a:\u0661|c".encode(), b"a:|c", b"a:1|zz", b"a:1|c|@0.5",
    b"a:1|c:2|c", b"t:1|c", b"g:1|ms", b"\xff:1|c", b"", b"a:1|c|#k:v",
]  # fmt: skip


def flushed(aggregator: StatsdAggregator) -> list[tuple[str, float]]:
    return [(p.name, p.value) for p in aggregator.flush() if "processing_time" not in p.name]


class TestFastPath:
    @pytest.mark.parametrize("line", LINES)
    def test_same_as_full_parser(self, line: bytes) -> None:
        """A known series fed one line per datagram ends as if parsed by the full parser."""
        seed = b"a:1|c\nt:1|ms\nh:1|h\nd:1|d\ng:1|g"
        fast = StatsdAggregator(AggregatorSettings(), lambda: 100.0)
        full = StatsdAggregator(AggregatorSettings(), lambda: 100.0)
        fast.ingest(seed)
        full.ingest(seed)
        bad_fast = [fast.ingest(line) for _ in range(2)]
        bad_full = [full.ingest(line + b"\n") for _ in range(2)]
        assert bad_fast == bad_full
        assert flushed(fast) == flushed(full)
