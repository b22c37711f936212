"""The whole two-tier deployment with real programs: agents -> central -> Elasticsearch and carbon.

Two agent obsd take StatsD (UDP), Sentry (HTTP store) and, once the syslog
input is on main, syslog (TCP) load; they aggregate the StatsD samples and
relay everything to one central obsd, which routes logs and errors to the
real Elasticsearch node and metric points to the real carbon-cache.  Central
is stopped in the middle of the load for ``OBSD_RELAY_OUTAGE`` seconds
(default 3) and started again.  Afterwards every Sentry event is in
Elasticsearch exactly once (by its id), central's outputs received each
event once (its own counters, summed over both runs), every syslog line is
there once, and carbon's totals equal the counts sent.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from obsd import registry
from tests.integration.fixtures.carbon import CarbonCache
from tests.integration.fixtures.es import EsNode
from tests.integration.fixtures.obsd import ObsdProcess
from tests.integration.relay_helpers import LOAD_TOKEN, free_port, post_events
from tests.integration.test_relay import OUTAGE, TOKENS, restart

pytestmark = pytest.mark.integration

SENTRY_KEY = "0123456789abcdef0123456789abcdef"
GRAPHITE_PREFIX = "relayed"


def need_types(inputs: tuple[str, ...], outputs: tuple[str, ...]) -> None:
    """Fail in CI, skip elsewhere, when a type this test drives is not in the registry yet."""
    missing = [f"input {t}" for t in inputs if t not in registry.INPUT_MODULES]
    missing += [f"output {t}" for t in outputs if t not in registry.OUTPUT_MODULES]
    if missing:
        reason = f"waits for {', '.join(missing)} (not merged yet)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def central_stack_config(port: int, es_url: str, index: str, carbon: CarbonCache) -> str:
    tokens = ", ".join(f'{{name = "{n}", token = "{t}"}}' for n, t in TOKENS.items())
    return f"""
[daemon]
data_dir = '{{data_dir}}'
metrics_interval = 0
shutdown_timeout = 15

[http]
listen = ['tcp:{port}:interface=127.0.0.1']

[inputs.relay]
tokens = [{tokens}]

[outputs.elasticsearch]
urls = ['{es_url}']
index = '{index}-%Y.%m.%d'
template = false
batch_timeout = 0.1
retry_initial = 0.1
retry_max = 1.0

[outputs.graphite]
destinations = ['127.0.0.1:{carbon.line_port}']
prefix = '{GRAPHITE_PREFIX}'
batch_timeout = 0.05

[[routes]]
match = {{ kind = ['log', 'error', 'sentry'] }}
outputs = ['elasticsearch']

[[routes]]
match = {{ kind = ['metric'] }}
outputs = ['graphite']
"""


def agent_stack_config(central_url: str, token: str, syslog: bool) -> str:
    syslog_section = (
        "[inputs.syslog]\nlisten = ['tcp:0:interface=127.0.0.1']\n" if syslog else ""
    )
    return f"""
[daemon]
data_dir = '{{data_dir}}'
metrics_interval = 0
shutdown_timeout = 15

[http]
listen = ['tcp:0:interface=127.0.0.1']

[inputs.sentry]

[inputs.relay]
tokens = [{{name = "load", token = "{LOAD_TOKEN}"}}]

[inputs.statsd]
listen = ['udp:0:interface=127.0.0.1']
flush_interval = 1.0

{syslog_section}
[outputs.relay]
urls = ['{central_url}']
token = '{token}'
batch_timeout = 0.05
retry_initial = 0.1
retry_max = 0.5
request_timeout = 5
"""


def store(port: int, event_id: str, message: str) -> int:
    """POST one Sentry store event, as raven does; the HTTP status."""
    body = json.dumps({
        "event_id": event_id, "message": message, "level": "error", "platform": "python",
        "timestamp": time.time(), "logger": "relay-test",
    }).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/1/store/", data=body,
        headers={
            "Content-Type": "application/json",
            "X-Sentry-Auth": f"Sentry sentry_version=7, sentry_key={SENTRY_KEY}, "
                             "sentry_client=relay-test/1.0",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def stopped_counters(proc: ObsdProcess) -> dict[str, float]:
    """The counters obsd logged in its last "stopped" line."""
    lines = [e for e in proc.log_events() if e.get("event") == "stopped"]
    assert lines, proc.output()[-2000:]
    return {k: v for k, v in lines[-1].items() if k.startswith("obsd.")}


class TestStack:
    @pytest.mark.parametrize(
        "with_syslog", [False, True], ids=["statsd+sentry", "syslog+statsd+sentry"]
    )
    def test_everything_once_through_a_central_outage(
        self,
        obsd_process: Callable[..., ObsdProcess],
        es_node: EsNode,
        carbon_cache: CarbonCache,
        with_syslog: bool,
    ) -> None:
        """Sentry events once in Elasticsearch, syslog lines once, StatsD totals right in carbon."""
        need_types(
            ("relay", "sentry", "statsd") + (("syslog",) if with_syslog else ()),
            ("relay", "elasticsearch", "graphite"),
        )
        uid = uuid.uuid4().hex[:8]
        index = f"relay-{uid}"
        port = free_port()
        central = obsd_process(central_stack_config(port, es_node.url, index, carbon_cache))
        runs = [central]
        url = f"http://127.0.0.1:{port}"
        agents = {n: obsd_process(agent_stack_config(url, t, with_syslog)) for n, t in TOKENS.items()}
        steps = 20
        pace = (OUTAGE + 4.0) / steps
        sentry_ids: list[str] = []
        syslog_lines: list[str] = []
        counts: dict[str, int] = {}
        errors: list[str] = []

        def load(name: str, proc: ObsdProcess) -> None:
            try:
                udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                statsd_port = proc.port("statsd", "udp")
                http_port = proc.port("http")
                stream = None
                if with_syslog:
                    stream = socket.create_connection(("127.0.0.1", proc.port("syslog")))
                metric = f"rt_{uid}_{name}.hits"
                sent = 0
                for step in range(steps):
                    udp.sendto(f"{metric}:3|c\n{metric}:2|c".encode(), ("127.0.0.1", statsd_port))
                    sent += 5
                    event_id = uuid.uuid4().hex
                    assert store(http_port, event_id, f"relay test {uid} {name} {step}") == 200
                    sentry_ids.append(event_id)
                    if stream is not None:
                        text = f"syslog {uid} {name} {step}"
                        line = f"<14>1 - {name}.example app - - - {text}\n".encode()
                        stream.sendall(line)
                        syslog_lines.append(text)
                    time.sleep(pace)
                counts[metric] = sent
                if stream is not None:
                    stream.close()
                udp.close()
            except Exception as exc:  # noqa: BLE001 - reported by the test thread
                errors.append(f"{name}: {exc!r}")

        # a metric point named with central's prefix already: not prefixed again
        direct = f"{GRAPHITE_PREFIX}.direct_{uid}"
        post_events(
            f"http://127.0.0.1:{agents['agent1'].port('http')}",
            [{"id": uuid.uuid4().hex, "kind": "metric", "event": direct, "value": 7.0,
              "timestamp": float(int(time.time())), "host": "agent1.example", "source": "statsd"}],
        )
        threads = [threading.Thread(target=load, args=item) for item in agents.items()]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        assert central.stop() == 0
        time.sleep(OUTAGE)
        central = restart(central)
        runs.append(central)
        for thread in threads:
            thread.join(60)
        assert errors == []
        client = es_node.client
        pattern = f"{index}-*"

        def in_es(query: dict[str, Any]) -> int:
            try:
                return client.count(pattern, query)
            except Exception:  # noqa: BLE001 - the index may not exist yet
                return 0

        central.wait_for(
            lambda: in_es({"term": {"kind": "error"}}) >= len(sentry_ids),
            timeout=60, what="every Sentry event in Elasticsearch",
        )
        hits = client.search(pattern, {"term": {"kind": "error"}}, size=1000)
        assert sorted(h["_id"] for h in hits) == sorted(sentry_ids)
        if with_syslog:
            central.wait_for(
                lambda: in_es({"term": {"kind": "log"}}) >= len(syslog_lines),
                timeout=60, what="every syslog line in Elasticsearch",
            )
            logs = client.search(pattern, {"term": {"kind": "log"}}, size=1000)
            assert sorted(h["event"] for h in logs) == sorted(syslog_lines)
            assert {h["host"] for h in logs} == {"agent1.example", "agent2.example"}
        for metric, sent in counts.items():
            name = f"{GRAPHITE_PREFIX}.stats_counts.{metric}"
            try:
                carbon_cache.wait_for(
                    lambda name=name, sent=sent: sum(v for _, v in carbon_cache.values(name))
                    == sent,
                    timeout=30, what=f"{name} totalling {sent}",
                )
            except AssertionError as exc:
                # which flushes are missing or doubled: the points carbon holds
                raise AssertionError(f"{carbon_cache.values(name)}\n{exc}") from None
        carbon_cache.wait_for(
            lambda: carbon_cache.values(direct) != [], timeout=30, what=f"{direct} in carbon"
        )
        assert not [n for n in carbon_cache.names() if n.startswith(f"{GRAPHITE_PREFIX}.{GRAPHITE_PREFIX}.")]
        for proc in agents.values():
            assert proc.stop() == 0
        assert central.stop() == 0
        received = sum(
            stopped_counters(p).get("obsd.output.elasticsearch.received", 0) for p in runs
        )
        expected = len(sentry_ids) + len(syslog_lines)
        assert received == expected, "central's outputs got some event twice or not at all"
        client.delete_index(pattern)
