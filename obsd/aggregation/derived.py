"""Derived metrics: counters extracted from the log events flowing through obsd.

With ``[derived_metrics] enabled = true``, every log, error and sentry event
the router sees adds one to ``PREFIX.<source>.<level>`` and, when its ``event``
is a dotted name such as ``user.login``, to ``PREFIX.name.user.login``.  The
counts go into their own ``StatsdAggregator`` (the statsd input's, with Etsy's
semantics), flushed every ``flush_interval`` seconds as metric events with
``source = "obsd.derived"``; so a Graphite output receives
``stats.events.syslog.warning`` (per second) and
``stats_counts.events.syslog.warning`` (count) as it would from StatsD.

Metric events are never counted, so the derived points cannot feed back.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet.task import LoopingCall

from obsd import events
from obsd.aggregation.statsd import StatsdAggregator, StatsdSettings
from obsd.codecs.graphite import sanitise_name
from obsd.codecs.statsd import Sample
from obsd.config.model import DerivedMetricsConfig
from obsd.ops.telemetry import Telemetry
from obsd.twistedtypes import Service

#: the aggregator's own counters (bad lines, packets) say nothing here: left out
_OWN_STATS = "obsd_derived"
_DOTTED = re.compile(r"[A-Za-z_][\w-]*(\.[\w-]+)+\Z")
_MAX_NAME = 200
_NO_TAGS: tuple[str, ...] = ()


class DerivedMetrics(Service):
    """A router tap that counts events, and the clock that flushes the counts."""

    def __init__(
        self,
        config: DerivedMetricsConfig,
        taps: Any,
        ingest: Any,
        clock: Any,
        telemetry: Telemetry,
    ) -> None:
        self.config = config
        self.taps = taps
        self.ingest = ingest
        self.clock = clock
        self.aggregator = StatsdAggregator(
            StatsdSettings(
                flush_interval=config.flush_interval,
                max_metrics=config.max_series,
                prefix_stats=_OWN_STATS,
            ),
            clock.seconds,
        )
        self._samples: dict[tuple[str, str], tuple[Sample, ...]] = {}
        self._names: dict[str, tuple[Sample, ...]] = {}
        self._prefix = config.prefix
        self._event_names = config.event_names
        self._counted = telemetry.counter("obsd.derived.counted")
        self._flushed = telemetry.counter("obsd.derived.points")
        telemetry.gauge("obsd.derived.dropped", lambda: self.aggregator.dropped_metrics)
        self._loop: LoopingCall | None = None

    def _sample(self, name: str) -> tuple[Sample, ...]:
        return (Sample(name, 1.0, "c", 1.0, False, _NO_TAGS),)

    def __call__(self, event: dict[str, Any]) -> None:
        """Count one event (the tap)."""
        if event.get(events.KIND) == events.METRIC:
            return
        key = (str(event.get(events.SOURCE) or "unknown"), str(event.get(events.LEVEL) or "info"))
        samples = self._samples.get(key)
        if samples is None:
            name = f"{self._prefix}.{sanitise_name(key[0])}.{sanitise_name(key[1])}"
            samples = self._sample(name)
            if len(self._samples) < 4 * self.config.max_series:
                self._samples[key] = samples
        add = self.aggregator.add
        add(samples)
        self._counted.inc()
        if self._event_names:
            text = event.get(events.EVENT)
            if isinstance(text, str) and "." in text and len(text) <= _MAX_NAME:
                samples = self._names.get(text)
                if samples is None:
                    if not _DOTTED.match(text):
                        return
                    samples = self._sample(f"{self._prefix}.name.{text}")
                    if len(self._names) < 4 * self.config.max_series:
                        self._names[text] = samples
                add(samples)

    def flush(self) -> None:
        """Send the interval's counts on as metric events."""
        for point in self.aggregator.flush():
            if _OWN_STATS in point.name.split("."):
                continue
            self._flushed.inc()
            self.ingest.metric(
                {
                    events.EVENT: point.name,
                    events.VALUE: point.value,
                    events.TIMESTAMP: float(point.timestamp),
                    events.TAGS: {},
                    events.METRIC_NAME: point.metric,
                    events.METRIC_TYPE: point.metric_type,
                    events.STAT: point.stat,
                }
            )

    def startService(self) -> None:
        super().startService()
        self.taps.add(self)
        self._loop = LoopingCall(self.flush)
        self._loop.clock = self.clock
        self._loop.start(self.config.flush_interval, now=False)

    def stopService(self) -> None:
        super().stopService()
        self.taps.remove(self)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
            self.flush()  # the last counts, before the outputs drain
        self._loop = None
