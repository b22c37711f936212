"""The RSS ceiling pauses inputs near max_memory and resumes them well below it."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from obsd.delivery.flowcontrol import FlowControl
from obsd.delivery.memoryguard import MemoryGuard, read_rss
from obsd.ops.telemetry import Telemetry


class TestMemoryGuard:
    def test_pauses_at_90_and_resumes_at_80_percent(self) -> None:
        """Stream producers pause past 90 % of the ceiling and resume under 80 %."""
        clock, flow, tel = Clock(), FlowControl(), Telemetry()
        rss = [100]
        guard = MemoryGuard(1000, flow, tel, clock, rss=lambda: rss[0])
        transport = StringTransport()
        flow.register(transport)
        guard.startService()
        rss[0] = 900
        clock.advance(0.5)
        assert transport.producerState == "paused"
        rss[0] = 850
        clock.advance(0.5)
        assert transport.producerState == "paused"
        rss[0] = 800
        clock.advance(0.5)
        assert transport.producerState == "producing"
        assert tel.value("obsd.daemon.memory_pressure") == 1
        assert tel.value("obsd.daemon.rss_bytes") == 800
        guard.stopService()
        assert clock.getDelayedCalls() == []

    def test_reads_this_process_rss(self) -> None:
        """On Linux the RSS is read from /proc and is plausible."""
        assert 1_000_000 < read_rss() < 10_000_000_000
