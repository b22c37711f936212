"""Fleet-wide StatsD with real processes: three agents, one or two centrals, carbon, Etsy statsd.

Three ``twistd obsd`` agents in ``mode = "partials"`` relay over HTTP to one
central obsd with ``merge_partials = true`` (or to two, each partial going to
the central its name hashes to), which writes to carbon-cache.  The
same raw lines (over TCP, so a busy machine drops none) also go to one Etsy
statsd 0.9.0 (from npm)
whose graphite backend writes to the same carbon-cache under another prefix.
Every series Etsy flushed must be in whisper from obsd with the same value:
counters sum exactly across hosts, timer percentiles are Etsy's over the
union of samples.

Timing: obsd's intervals are the even epoch seconds (``flush_interval = 2``);
Etsy flushes every 10 s from its start second.  The traffic is sent just
after an obsd boundary chosen at least 3 s from Etsy's flushes, so both put
it in one interval; it takes well under a second to send.  Central waits 4 s
for partials (two of its intervals), so a loaded machine does not make them
late.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.fixtures.carbon import CarbonCache
from tests.integration.fleet_helpers import (
    assert_obsd_flushed_what_etsy_did,
    send_in_one_interval,
    statsd_settings,
    traffic,
)
from tests.integration.relay_helpers import free_port as free_tcp_port

pytestmark = pytest.mark.integration


def central_config(
    http_port: int, carbon: CarbonCache, prefix: str, agents: list[str], host: str = "central"
) -> str:
    tokens = ", ".join(f'{{name = "{a}", token = "t-{a}"}}' for a in agents)
    return (
        f"[daemon]\ndata_dir = '{{data_dir}}'\nhostname = '{host}'\nmetrics_interval = 0\n"
        "shutdown_timeout = 5\n"
        f"[http]\nlisten = ['tcp:{http_port}:interface=127.0.0.1']\n"
        f"[inputs.relay]\ntokens = [{tokens}]\n"
        "[inputs.statsd]\nlisten = ['udp:0:interface=127.0.0.1']\nmerge_partials = true\n"
        f"late_partials_grace = 4.0\n{statsd_settings(prefix)}"
        f"[outputs.graphite]\ndestinations = ['127.0.0.1:{carbon.line_port}']\n"
        "batch_timeout = 0.05\n"
    )


def agent_config(host: str, http_ports: list[int], prefix: str) -> str:
    urls = ", ".join(f"'http://127.0.0.1:{port}'" for port in http_ports)
    return (
        f"[daemon]\ndata_dir = '{{data_dir}}'\nhostname = '{host}'\nmetrics_interval = 1\n"
        "shutdown_timeout = 5\n"
        "[inputs.statsd]\nlisten = ['tcp:0:interface=127.0.0.1']\nmode = 'partials'\n"
        f"{statsd_settings(prefix)}"
        f"[outputs.relay]\nurls = [{urls}]\ntoken = 't-{host}'\n"
        "batch_timeout = 0.05\nretry_initial = 0.1\nretry_max = 0.5\nrequest_timeout = 5\n"
    )


class TestFleetStatsd:
    @pytest.mark.parametrize("centrals", [1, 2], ids=["one central", "two centrals by name"])
    def test_three_agents_merge_to_what_etsy_flushes(
        self,
        carbon_cache: CarbonCache,
        obsd_process: Callable[..., Any],
        etsy: Any,
        centrals: int,
    ) -> None:
        """Counters sum exactly and timer percentiles equal Etsy's over all hosts' samples.

        With two centrals the agents list both urls: each name's partials go to
        the central it hashes to, so each name is still added up in one place.
        """
        run = uuid.uuid4().hex[:8]
        obsd_prefix, etsy_prefix = f"obsd_{run}", f"etsy_{run}"
        hosts = [f"agent{i}{run}" for i in range(3)]
        http_ports = [free_tcp_port() for _ in range(centrals)]
        tiers = [
            obsd_process(central_config(port, carbon_cache, obsd_prefix, hosts, f"central{i}"))
            for i, port in enumerate(http_ports)
        ]
        agents = [obsd_process(agent_config(h, http_ports, obsd_prefix)) for h in hosts]
        ports = [agent.port("statsd", "tcp") for agent in agents]
        statsd = etsy(etsy_prefix)

        lines = traffic(seed=int(run, 16))
        sent_to = send_in_one_interval(ports, statsd, lines, run)
        assert_obsd_flushed_what_etsy_did(carbon_cache, obsd_prefix, etsy_prefix, lines)

        # each agent's own numbers stay its own, named by host
        for host, count in zip(hosts, sent_to, strict=True):
            name = f"{obsd_prefix}.counters.statsd.{host}.metrics_received.count"
            carbon_cache.wait_for(
                lambda name=name, count=count: sum(v for _, v in carbon_cache.values(name))
                == count,
                what=name,
            )
            carbon_cache.wait_for(
                lambda host=host: bool(
                    carbon_cache.values(f"obsd.{host}.input.statsd.packets_received")
                ),
                what=f"obsd.{host}.* numbers",
            )
        for proc in [*agents, *tiers]:
            assert proc.stop() == 0
        merged = [
            next(e for e in reversed(t.log_events()) if e.get("event") == "stopped")
            .get("obsd.input.statsd.partials_merged", 0)
            for t in tiers
        ]
        assert all(merged), f"every central merged some names: {merged}"
