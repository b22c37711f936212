"""StatsD in, InfluxDB and Graphite out, with the real servers: the numbers agree.

InfluxDB is Debian's ``influxd`` (1.x), queried back over its HTTP API;
Graphite is the session's carbon-cache.  One obsd writes to both, so each
flushed statistic can be compared point by point.
"""

from __future__ import annotations

import os
import time
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.fixtures.carbon import CarbonCache
from tests.integration.fixtures.influxdb import InfluxServer

pytestmark = pytest.mark.integration

try:
    import statsd
except ImportError:  # pragma: no cover - depends on the environment
    if os.environ.get("CI"):
        raise
    pytest.skip("the PyPI statsd client is not installed", allow_module_level=True)


def config(influx: InfluxServer, database: str, carbon: CarbonCache | None = None) -> str:
    graphite = (
        f"""
[outputs.graphite]
destinations = ["127.0.0.1:{carbon.line_port}"]
batch_timeout = 0.05
"""
        if carbon
        else ""
    )
    return f"""
[daemon]
data_dir = "{{data_dir}}"
shutdown_timeout = 10.0

[inputs.statsd]
listen = ["udp:0:interface=127.0.0.1"]
flush_interval = 1.0

[outputs.influxdb]
url = "{influx.url}"
database = "{database}"
batch_timeout = 0.05
retry_initial = 0.1
retry_max = 0.5
{graphite}
"""


def graphite_points(carbon: CarbonCache, name: str) -> dict[int, float]:
    return dict(carbon.values(name))


class TestInfluxAndGraphiteAgree:
    def test_counter_gauge_timer(
        self,
        influxdb: InfluxServer,
        carbon_cache: CarbonCache,
        obsd_process: Callable[..., Any],
    ) -> None:
        """Counts sum to the same total; gauges and timer statistics equal point by point."""
        db = f"it_{uuid.uuid4().hex[:8]}"
        influxdb.create_database(db)
        proc = obsd_process(config(influxdb, db, carbon_cache))
        base = f"ix_{uuid.uuid4().hex[:8]}"
        client = statsd.StatsClient("127.0.0.1", proc.port("statsd", "udp"))
        sent = 0
        for round_ in range(3):
            for _ in range(5 + round_):
                client.incr(f"{base}.hits", 2)
                sent += 2
            for ms in (10, 20, 30, 40 + round_):
                client.timing(f"{base}.latency", ms)
            client.gauge(f"{base}.temp", 40 + round_)
            time.sleep(1.1)

        def influx_total() -> float:
            rows = influxdb.values(f'SELECT sum("count") FROM "{base}.hits"', db)
            return float(rows[0][1]) if rows else 0.0

        influxdb.wait_for(lambda: influx_total() == sent, what=f"{base}.hits summing to {sent}")
        carbon_cache.wait_for(
            lambda: sum(graphite_points(carbon_cache, f"stats_counts.{base}.hits").values())
            == sent,
            what=f"stats_counts.{base}.hits summing to {sent}",
        )
        assert proc.stop() == 0

        for measurement, field, path in [
            (f"{base}.temp", "value", f"stats.gauges.{base}.temp"),
            (f"{base}.latency", "count", f"stats.timers.{base}.latency.count"),
            (f"{base}.latency", "mean", f"stats.timers.{base}.latency.mean"),
            (f"{base}.latency", "upper_90", f"stats.timers.{base}.latency.upper_90"),
        ]:
            rows = influxdb.query(
                f'SELECT "{field}" FROM "{measurement}"', db
            )
            assert rows, f"no {measurement}.{field} in InfluxDB"
            in_influx = sorted(v for _, v in rows[0]["values"] if v is not None)
            # carbon-cache writes whisper files a little after it receives points
            carbon_cache.wait_for(
                lambda path=path, in_influx=in_influx: sorted(
                    graphite_points(carbon_cache, path).values()
                ) == in_influx,
                what=f"{path} equal to InfluxDB's {measurement} {field} {in_influx}",
            )
        gauge_rows = influxdb.values(f'SELECT last("value") FROM "{base}.temp"', db)
        assert gauge_rows[0][1] == 42.0


class TestServerAnswers:
    def test_missing_database_keeps_points_until_created(
        self, influxdb: InfluxServer, obsd_process: Callable[..., Any]
    ) -> None:
        """404 "database not found": points wait in the queue, then all arrive once it exists."""
        db = f"late_{uuid.uuid4().hex[:8]}"
        proc = obsd_process(config(influxdb, db))
        base = f"late_{uuid.uuid4().hex[:8]}"
        client = statsd.StatsClient("127.0.0.1", proc.port("statsd", "udp"))
        for _ in range(9):
            client.incr(f"{base}.hits")
        proc.wait_for(
            lambda: "database not found" in proc.output(),
            timeout=20.0,
            what="obsd to log InfluxDB's 404",
        )
        influxdb.create_database(db)

        def total() -> float:
            rows = influxdb.values(f'SELECT sum("count") FROM "{base}.hits"', db)
            return float(rows[0][1]) if rows else 0.0

        influxdb.wait_for(lambda: total() == 9, what=f"{base}.hits = 9 after CREATE DATABASE")
        assert proc.stop() == 0

    def test_type_conflict_dead_lettered_with_influx_reason(
        self, influxdb: InfluxServer, obsd_process: Callable[..., Any]
    ) -> None:
        """A field InfluxDB stores as a string refuses obsd's float: that line alone is dead."""
        db = f"conflict_{uuid.uuid4().hex[:8]}"
        influxdb.create_database(db)
        base = f"cf_{uuid.uuid4().hex[:8]}"
        # stamped now: InfluxDB checks field types per shard (a shard is a week of time)
        request = urllib.request.Request(
            f"{influxdb.url}/write?db={db}",
            data=f'{base}.bad count="text"\n'.encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 204
        proc = obsd_process(config(influxdb, db))
        client = statsd.StatsClient("127.0.0.1", proc.port("statsd", "udp"))
        client.incr(f"{base}.bad", 3)
        client.incr(f"{base}.good", 4)

        def good() -> float:
            rows = influxdb.values(f'SELECT sum("count") FROM "{base}.good"', db)
            return float(rows[0][1]) if rows else 0.0

        influxdb.wait_for(lambda: good() == 4, what=f"{base}.good = 4")
        dead = proc.data_dir / "dead-letter.jsonl"
        proc.wait_for(lambda: dead.exists() and base in dead.read_text(), what="a dead letter")
        text = dead.read_text()
        assert f"{base}.bad" in text
        assert "field type conflict" in text
        assert proc.stop() == 0
