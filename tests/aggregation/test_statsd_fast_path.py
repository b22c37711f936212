"""The direct fold of ``StatsdAggregator.ingest`` for known series agrees with the full parser."""

from __future__ import annotations

import pytest

from obsd.aggregation.statsd import AggregatorSettings, StatsdAggregator

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
        bad_full = [parsed(full, line) for _ in range(2)]
        assert bad_fast == bad_full
        assert flushed(fast) == flushed(full)

    @pytest.mark.parametrize(
        "packet",
        [
            b"a:1|c\nnew:1|c\na:2|c",
            b"g:1|g|@0.5\ng:+1|g",
            b"g:+1|g\ng:7|g\ng:-2|g",
            b"a:1|c\n\nbad\nt:3|ms\nx:1|s",
            b"t:1|ms\nt:2|ms|#k:v\nt:3|ms",
            b"a:1|c\r\na:2|c\n",
        ],
    )
    def test_packets_in_order(self, packet: bytes) -> None:
        """Mixed datagrams end as the parser alone would leave them, gauges in order."""
        seed = b"a:1|c\nt:1|ms\ng:1|g"
        fast = StatsdAggregator(AggregatorSettings(), lambda: 100.0)
        full = StatsdAggregator(AggregatorSettings(), lambda: 100.0)
        fast.ingest(seed)
        full.ingest(seed)
        assert fast.ingest(packet) == parsed(full, packet)
        assert flushed(fast) == flushed(full)


def parsed(aggregator: StatsdAggregator, data: bytes) -> list[tuple[bytes, str]]:
    """What ingest did before the direct fold: count the packet, then the full parser."""
    aggregator.packets_received += 1
    return aggregator._ingest_parsed(data, count_lines=True)
