"""``[daemon] max_memory``: an RSS ceiling enforced by backpressure, not by dropping.

Every half second the resident set size is read; past 90 % of the ceiling the
guard reports congestion to ``FlowControl`` (stream inputs stop reading, HTTP
inputs answer 503), and below 80 % it lifts it.  Queues and disk spools absorb
what was already accepted, so memory stays flat while senders wait.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.internet.task import LoopingCall

from obsd.delivery.flowcontrol import FlowControl
from obsd.ops.telemetry import Telemetry
from obsd.twistedtypes import Service

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def read_rss() -> int:
    """This process's resident set size in bytes (Linux /proc; 0 where unknown)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


class MemoryGuard(Service):
    """Watch RSS on a clock and pause the inputs near the ceiling."""

    def __init__(
        self,
        ceiling: int,
        flow_control: FlowControl,
        telemetry: Telemetry,
        clock: Any,
        rss: Callable[[], int] = read_rss,
        interval: float = 0.5,
    ) -> None:
        self.ceiling = ceiling
        self.flow_control = flow_control
        self.clock = clock
        self.rss = rss
        self.interval = interval
        self.pressed = False
        self.last_rss = 0
        self._pressures = telemetry.counter("obsd.daemon.memory_pressure")
        telemetry.gauge("obsd.daemon.rss_bytes", lambda: self.last_rss)
        self._loop: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self.check)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True)

    def check(self) -> None:
        self.last_rss = rss = self.rss()
        if not self.pressed and rss >= self.ceiling * 0.9:
            self.pressed = True
            self._pressures.inc()
            self.flow_control.report("memory", True)
        elif self.pressed and rss <= self.ceiling * 0.8:
            self.pressed = False
            self.flow_control.report("memory", False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self.pressed:
            self.flow_control.report("memory", False)
