"""obsd's own numbers as ``obsd.*`` metric events, and as Prometheus text.

Every ``[daemon] metrics_interval`` seconds the registry's counters and gauges
become ``kind = "metric"`` events (``event`` = the dotted name, ``source`` =
``obsd``) that go through the chain to the router, so they reach Graphite like
any point; they never enter an input, so they cannot loop (carbon's
"generated metrics" rule).  Counters are cumulative: graph them with Graphite's
``nonNegativeDerivative``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from twisted.internet.task import LoopingCall

from obsd import events
from obsd.ops.telemetry import Telemetry
from obsd.twistedtypes import Service

_NOT_PROMETHEUS = re.compile(r"[^a-zA-Z0-9_]")
#: a host name as one Graphite node: dots and unsafe characters become "_"
_NOT_NODE = re.compile(r"[^A-Za-z0-9_-]")


class SelfMetricsService(Service):
    """Flush the telemetry registry into the router on a clock."""

    def __init__(self, telemetry: Telemetry, ingest: Any, clock: Any, interval: float) -> None:
        self.telemetry = telemetry
        self.ingest = ingest
        self.clock = clock
        self.interval = interval
        self._loop: LoopingCall | None = None
        #: ``[daemon] workers``: fires with every worker's numbers added up (worker 0
        #: flushes them for all, so the workers' numbers do not overwrite each other)
        self.numbers: Any = None

    def startService(self) -> None:
        super().startService()
        if self.interval > 0:
            self._loop = LoopingCall(self.flush)
            self._loop.clock = self.clock
            self._loop.start(self.interval, now=False)

    def flush(self) -> None:
        """Emit one metric event per counter and gauge (of every worker, with workers)."""
        if self.numbers is None:
            self.emit(self.telemetry)
            return
        d = self.numbers()
        d.addCallback(self.emit)

    def emit(self, numbers: Any) -> None:
        """One metric event per counter and gauge of ``numbers`` (a ``Telemetry``)."""
        now = self.clock.seconds()
        counters = numbers.counters()
        for name, value in numbers.snapshot().items():
            self.ingest.metric(
                {
                    events.EVENT: name,
                    events.VALUE: float(value),
                    events.TIMESTAMP: now,
                    events.TAGS: {},
                    events.METRIC_NAME: name,
                    events.METRIC_TYPE: events.COUNTER if name in counters else events.GAUGE,
                    events.STAT: events.STAT_VALUE,
                }
            )

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
            self.emit(self.telemetry)  # the last numbers, before the outputs drain
        self._loop = None


def name_by_host(event: dict[str, Any]) -> None:
    """Put the sending host into a relayed ``obsd.*`` number: ``obsd.<host>.<rest>``.

    Every agent names its own numbers alike (``obsd.input.statsd.packets_received``);
    where many agents' events meet (central's relay or Kafka input) they would
    overwrite each other in Graphite, so each is named by its host there.
    """
    name = event.get(events.EVENT)
    host = event.get(events.HOST)
    if not isinstance(name, str) or not name.startswith("obsd.") or not host:
        return
    node = _NOT_NODE.sub("_", str(host)) or "unknown"
    if name.startswith(f"obsd.{node}."):
        return
    renamed = f"obsd.{node}.{name[5:]}"
    event[events.EVENT] = renamed
    if event.get(events.METRIC_NAME) == name:
        event[events.METRIC_NAME] = renamed


def prometheus_name(dotted: str) -> str:
    """``obsd.output.file.dropped.full`` -> ``obsd_output_file_dropped_full``."""
    return _NOT_PROMETHEUS.sub("_", dotted)


class TelemetryCollector:
    """A prometheus_client collector over one obsd registry (never the global one)."""

    def __init__(self, telemetry: Any) -> None:
        self.telemetry = telemetry

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        for name, count in self.telemetry.counters().items():
            yield CounterMetricFamily(prometheus_name(name), f"obsd counter {name}", value=count)
        for name, level in self.telemetry.gauges().items():
            yield GaugeMetricFamily(prometheus_name(name), f"obsd gauge {name}", value=level)


def prometheus_text(telemetry: Any) -> bytes:
    """The registry in Prometheus' text exposition format."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(TelemetryCollector(telemetry))
    return generate_latest(registry)


def as_tree(values: dict[str, float]) -> dict[str, Any]:
    """Dotted names as a nested tree, scales-style: ``{"obsd": {"output": {...}}}``."""
    tree: dict[str, Any] = {}
    for name, value in values.items():
        node = tree
        parts = name.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {} if child is None else {"_value": child}
            node = child
        leaf = parts[-1]
        if isinstance(node.get(leaf), dict):
            node[leaf]["_value"] = value
        else:
            node[leaf] = value
    return tree
