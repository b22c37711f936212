"""StatsD in, InfluxDB and Graphite out, with the real servers: the numbers agree.

InfluxDB is Debian's ``influxd`` (1.x), queried back over its HTTP API;
Graphite is the session's carbon-cache.  One obsd writes to both, so each
flushed statistic can be compared point by point.
"""

from __future__ import annotations

import os
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from obsd.codecs.influx_line import encode_line
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


class TestEscaping:
    def test_awkward_names_read_back_exactly(self, influxdb: InfluxServer) -> None:
        """obsd's line-protocol escaping, written to the real influxd and read back.

        StatsD names and tags reach the output already cleaned (Etsy's key
        rule), but derived metrics, OTLP attributes and relayed events do not.
        """
        db = f"esc_{uuid.uuid4().hex[:8]}"
        influxdb.create_database(db)
        measurement = f"esc {uuid.uuid4().hex[:6]},m=1"
        route = "GET /a b=c,d"
        line = encode_line(measurement, [("route key", route)], {"the value": 2.5}, 1700000000)
        request = urllib.request.Request(
            f"{influxdb.url}/write?db={db}&precision=s", data=line.encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 204
        escaped = measurement.replace('"', '\\"')
        rows = influxdb.query(f'SELECT * FROM "{escaped}"', db)
        assert rows[0]["name"] == measurement
        assert rows[0]["columns"] == ["time", "route key", "the value"]
        assert rows[0]["values"][0][1:] == [route, 2.5]
