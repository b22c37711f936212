"""One StatsD load, three metric stores: Graphite, InfluxDB and Prometheus read back the same.

The real servers: the session's carbon-cache, Debian's influxd (1.x) and
Debian's prometheus (2.x) scraping obsd's ``/metrics/data`` every second.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.fixtures.carbon import CarbonCache
from tests.integration.fixtures.influxdb import InfluxServer
from tests.integration.fixtures.prometheus import PrometheusServer

pytestmark = pytest.mark.integration

try:
    import statsd
except ImportError:  # pragma: no cover - depends on the environment
    if os.environ.get("CI"):
        raise
    pytest.skip("the PyPI statsd client is not installed", allow_module_level=True)


def config(influx: InfluxServer, database: str, carbon: CarbonCache) -> str:
    return f"""
[daemon]
data_dir = "{{data_dir}}"
shutdown_timeout = 10.0

[http]
listen = ["tcp:0:interface=127.0.0.1"]

[inputs.statsd]
listen = ["udp:0:interface=127.0.0.1"]
flush_interval = 1.0

[outputs.influxdb]
url = "{influx.url}"
database = "{database}"
batch_timeout = 0.05

[outputs.graphite]
destinations = ["127.0.0.1:{carbon.line_port}"]
batch_timeout = 0.05

[outputs.prometheus]
"""


def graphite(carbon: CarbonCache, path: str) -> list[float]:
    return [v for _, v in sorted(carbon.values(path))]


def influx_rows(influx: InfluxServer, db: str, measurement: str, field: str) -> list[float]:
    rows = influx.values(f'SELECT "{field}" FROM "{measurement}"', db)
    return [float(v) for _, v in rows if v is not None]


class TestThreeStoresAgree:
    def test_counter_gauge_timer(
        self,
        influxdb: InfluxServer,
        carbon_cache: CarbonCache,
        prometheus: PrometheusServer,
        obsd_process: Callable[..., Any],
    ) -> None:
        """Counts, the gauge's last value, the timer's count, mean and 90th percentile agree."""
        uid = uuid.uuid4().hex[:8]
        db = f"three_{uid}"
        influxdb.create_database(db)
        proc = obsd_process(config(influxdb, db, carbon_cache))
        prometheus.scrape(f"127.0.0.1:{proc.port('http')}", uid)
        base = f"m3_{uid}"
        client = statsd.StatsClient("127.0.0.1", proc.port("statsd", "udp"))
        sent = samples = 0
        for round_ in range(3):
            for _ in range(5 + round_):
                client.incr(f"{base}.hits", 2)
                sent += 2
            for ms in (10, 20, 30, 40 + 10 * round_):
                client.timing(f"{base}.latency", ms)
                samples += 1
            client.gauge(f"{base}.temp", 40 + round_)
            time.sleep(1.1)
        sel = f'{{test="{uid}"}}'
        # Prometheus reads while obsd runs (a stopped target's series go stale)
        prometheus.wait_for(
            lambda: prometheus.value(f"{base}_hits_total{sel}") == sent
            and prometheus.value(f"{base}_latency_count{sel}") == samples,
            what=f"{base}_hits_total = {sent} and {samples} timer samples",
        )
        prom_gauge = prometheus.value(f"{base}_temp{sel}")
        prom_p90 = prometheus.value(f'{base}_latency{{test="{uid}",quantile="0.9"}}')
        prom_sum = prometheus.value(f"{base}_latency_sum{sel}")
        assert proc.stop() == 0

        influxdb.wait_for(
            lambda: sum(influx_rows(influxdb, db, f"{base}.hits", "count")) == sent,
            what=f"{base}.hits summing to {sent}",
        )
        carbon_cache.wait_for(
            lambda: sum(graphite(carbon_cache, f"stats_counts.{base}.hits")) == sent
            and sum(graphite(carbon_cache, f"stats.timers.{base}.latency.count")) == samples,
            what=f"stats_counts.{base}.hits summing to {sent}",
        )
        # the gauge's last value
        assert prom_gauge == 42.0
        assert influx_rows(influxdb, db, f"{base}.temp", "value")[-1] == 42.0
        assert graphite(carbon_cache, f"stats.gauges.{base}.temp")[-1] == 42.0
        # the timer: count, mean over the run, the last flush's 90th percentile
        assert sum(influx_rows(influxdb, db, f"{base}.latency", "count")) == samples
        influx_mean = sum(influx_rows(influxdb, db, f"{base}.latency", "sum")) / samples
        graphite_mean = sum(graphite(carbon_cache, f"stats.timers.{base}.latency.sum")) / samples
        assert prom_sum is not None
        assert prom_sum * 1000 / samples == pytest.approx(influx_mean) == graphite_mean
        influx_p90 = [v for v in influx_rows(influxdb, db, f"{base}.latency", "upper_90") if v]
        graphite_p90 = [
            v for v in graphite(carbon_cache, f"stats.timers.{base}.latency.upper_90") if v
        ]
        assert prom_p90 is not None
        assert prom_p90 * 1000 == pytest.approx(influx_p90[-1]) == graphite_p90[-1]


class TestRemoteWrite:
    def test_prometheus_receives_the_scrape_semantics(
        self, prometheus: PrometheusServer, obsd_process: Callable[..., Any]
    ) -> None:
        """Pushed into Prometheus's receiver: cumulative counters, summaries in seconds."""
        uid = uuid.uuid4().hex[:8]
        proc = obsd_process(f"""
[daemon]
data_dir = "{{data_dir}}"

[inputs.statsd]
listen = ["udp:0:interface=127.0.0.1"]
flush_interval = 1.0

[outputs.remote_write]
url = "{prometheus.url}/api/v1/write"
batch_timeout = 0.05

[[outputs.remote_write.mappings]]
match = "rw_{uid}.*.hits"
name = "rw_{uid}_hits"
labels = {{ shard = "$1" }}
""")
        client = statsd.StatsClient("127.0.0.1", proc.port("statsd", "udp"))
        sent = 0
        for round_ in range(2):
            for _ in range(4):
                client.incr(f"rw_{uid}.a.hits", 3)
                sent += 3
            for ms in (100, 200, 300 + round_):
                client.timing(f"rw_{uid}.latency", ms)
            time.sleep(1.1)
        prometheus.wait_for(
            lambda: prometheus.value(f'rw_{uid}_hits_total{{shard="a"}}') == sent
            and prometheus.value(f"rw_{uid}_latency_count") == 6,
            what=f"rw_{uid}_hits_total = {sent} and 6 timer samples",
        )
        assert prometheus.value(f"rw_{uid}_latency_sum") == pytest.approx(1.201)
        assert prometheus.value(f'rw_{uid}_latency{{quantile="0.5"}}') == pytest.approx(0.2)
        assert proc.stop() == 0
