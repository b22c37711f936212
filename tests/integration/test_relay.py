"""Agents relay to a central obsd: exactly once in effect across a central outage, tokens, TLS.

Real processes on 127.0.0.1: two agent obsd and one central obsd.  The load
goes into each agent's own relay input (so its ids are known to the test) and
out through the agent's relay output; central writes what it takes to its
file output.  Central is stopped in the middle of the load for ``OUTAGE``
seconds (env ``OBSD_RELAY_OUTAGE``, default 3) and started again on the same
port and data_dir.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from obsd.codecs.jsonline import rfc3339
from tests.integration.fixtures.obsd import ObsdProcess, twistd_args
from tests.integration.relay_helpers import (
    agent_config,
    central_config,
    file_events,
    free_port,
    post_events,
)

pytestmark = pytest.mark.integration

OUTAGE = float(os.environ.get("OBSD_RELAY_OUTAGE", "3"))
TOKENS = {"agent1": "tok-agent1", "agent2": "tok-agent2"}


def load_events(agent: str, start: int, count: int) -> list[dict[str, Any]]:
    """Events of every kind with ids the test knows, as an agent's inputs would make them."""
    kinds = ["log", "error", "metric", "sentry"]
    made = []
    for i in range(start, start + count):
        kind = kinds[i % 4]
        event: dict[str, Any] = {
            "id": f"{agent}-{i:06d}", "kind": kind, "event": f"{agent} event {i}",
            "timestamp": 1_700_000_000.0 + i / 1000, "host": f"{agent}.example",
            "source": ["syslog", "sentry", "statsd", "sentry"][i % 4], "level": "info",
        }
        if kind == "metric":
            event.update(event=f"stats.{agent}.relay_test", value=float(i))
        if kind in ("error", "sentry"):
            event["_sentry_raw"] = b"\x00\xff" + str(i).encode()
        made.append(event)
    return made


def restart(proc: ObsdProcess) -> ObsdProcess:
    """Start the same config again (same port, same data_dir) as a new process."""
    workdir = proc.workdir.parent / (proc.workdir.name + "-again")
    workdir.mkdir(exist_ok=True)
    again = ObsdProcess(workdir, twistd_args(proc.workdir / "obsd.toml"))
    again.data_dir = proc.data_dir  # type: ignore[attr-defined]
    return again.start()


class TestTwoTier:
    @pytest.mark.parametrize("outage", [OUTAGE])
    def test_central_outage_loses_and_doubles_nothing(
        self, obsd_process: Callable[..., ObsdProcess], outage: float
    ) -> None:
        """Stop central mid-load, start it again: every event arrives exactly once, as sent."""
        port = free_port()
        central = obsd_process(central_config(f"tcp:{port}:interface=127.0.0.1", TOKENS))
        url = f"http://127.0.0.1:{port}"
        agents = {name: obsd_process(agent_config([url], token)) for name, token in TOKENS.items()}
        per_batch, batches = 25, 24
        sent: dict[str, dict[str, Any]] = {}
        errors: list[str] = []

        def load(name: str, proc: ObsdProcess) -> None:
            agent_url = f"http://127.0.0.1:{proc.port('http')}"
            pace = (outage + 3.0) / batches
            for b in range(batches):
                batch = load_events(name, b * per_batch, per_batch)
                status, answer = post_events(agent_url, batch)
                if status != 200:
                    errors.append(f"{name} batch {b}: {status} {answer}")
                    return
                for event in batch:
                    sent[event["id"]] = event
                time.sleep(pace)

        threads = [threading.Thread(target=load, args=item) for item in agents.items()]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        assert central.stop() == 0
        before = {e["id"] for e in file_events(central.data_dir)}  # type: ignore[attr-defined]
        time.sleep(outage)
        central = restart(central)
        for thread in threads:
            thread.join(60)
        assert errors == []
        assert 0 < len(before) < len(sent), "the outage did not fall in the middle of the load"

        def arrived() -> bool:
            got = {e.get("id") for e in file_events(central.data_dir)}  # type: ignore[attr-defined]
            return set(sent) <= got

        try:
            central.wait_for(arrived, timeout=30, what="every relayed event at central")
        except AssertionError:
            for proc in agents.values():
                print(proc.output()[-6000:])
            raise
        for proc in agents.values():
            assert proc.stop() == 0
        assert central.stop() == 0
        got = [e for e in file_events(central.data_dir) if e.get("source") != "obsd"]  # type: ignore[attr-defined]
        counts = collections.Counter(e["id"] for e in got)
        doubled = {i: n for i, n in counts.items() if n > 1}
        assert doubled == {}
        assert set(counts) == set(sent)
        for event in got:
            want = sent[event["id"]]
            assert event["kind"] == want["kind"]
            assert event["host"] == want["host"]
            assert event["source"] == want["source"]
            assert event["timestamp"] == rfc3339(want["timestamp"])
            assert event["event"] == want["event"]
            if want["kind"] == "metric":
                assert event["value"] == want["value"]


class TestTokens:
    def test_bad_token_gets_401_and_nothing_is_accepted(
        self, obsd_process: Callable[..., ObsdProcess]
    ) -> None:
        """A wrong token is refused with 401; an agent holding one dead-letters, central keeps none."""
        port = free_port()
        central = obsd_process(central_config(f"tcp:{port}:interface=127.0.0.1", TOKENS))
        url = f"http://127.0.0.1:{port}"
        status, answer = post_events(url, load_events("intruder", 0, 5), token="wrong")
        assert status == 401
        assert "token" in answer["error"]
        agent = obsd_process(agent_config([url], "also-wrong"))
        agent_url = f"http://127.0.0.1:{agent.port('http')}"
        assert post_events(agent_url, load_events("badagent", 0, 5))[0] == 200
        dead = Path(agent.data_dir) / "dead-letter.jsonl"  # type: ignore[attr-defined]
        agent.wait_for(lambda: dead.exists() and dead.read_text().count("\n") == 5,
                       what="the refused batch in the agent's dead-letter file")
        assert "HTTP 401" in dead.read_text()
        good = obsd_process(agent_config([url], TOKENS["agent1"]))
        post_events(f"http://127.0.0.1:{good.port('http')}", load_events("agent1", 0, 3))
        central.wait_for(
            lambda: len(file_events(central.data_dir)) >= 3,  # type: ignore[attr-defined]
            what="the good agent's events",
        )
        assert central.stop() == 0
        ids = {e["id"] for e in file_events(central.data_dir)}  # type: ignore[attr-defined]
        assert ids == {f"agent1-{i:06d}" for i in range(3)}


class TestFailoverAndTls:
    def test_second_url_takes_over_over_tls(
        self, obsd_process: Callable[..., ObsdProcess], tmp_path: Path
    ) -> None:
        """With the first url down the agent sends to the second, over TLS checked against a CA."""
        from tests.tls_certs import make_certificates

        certs = make_certificates()
        (tmp_path / "ca.pem").write_bytes(certs.ca_cert)
        (tmp_path / "key.pem").write_bytes(certs.server_key)
        (tmp_path / "cert.pem").write_bytes(certs.server_cert)
        port = free_port()
        listen = (f"ssl:{port}:interface=127.0.0.1:privateKey={tmp_path / 'key.pem'}"
                  f":certKey={tmp_path / 'cert.pem'}")
        central = obsd_process(central_config(listen, TOKENS))
        dead_url = f"https://127.0.0.1:{free_port()}"
        agent = obsd_process(agent_config(
            [dead_url, f"https://localhost:{port}"], TOKENS["agent2"],
            relay_extra=f"ca_file = '{tmp_path / 'ca.pem'}'\n",
        ))
        post_events(f"http://127.0.0.1:{agent.port('http')}", load_events("agent2", 0, 8))
        central.wait_for(
            lambda: len(file_events(central.data_dir)) >= 8,  # type: ignore[attr-defined]
            what="events relayed over TLS",
        )
        assert agent.stop() == 0
        assert central.stop() == 0
        ids = sorted(e["id"] for e in file_events(central.data_dir))  # type: ignore[attr-defined]
        assert ids == [f"agent2-{i:06d}" for i in range(8)]

    def test_untrusted_certificate_is_not_sent_to(
        self, obsd_process: Callable[..., ObsdProcess], tmp_path: Path
    ) -> None:
        """A central whose certificate the CA did not sign gets nothing; the agent keeps retrying."""
        from tests.tls_certs import make_certificates

        served, other = make_certificates(), make_certificates()
        (tmp_path / "key.pem").write_bytes(served.server_key)
        (tmp_path / "cert.pem").write_bytes(served.server_cert)
        (tmp_path / "other-ca.pem").write_bytes(other.ca_cert)
        port = free_port()
        listen = (f"ssl:{port}:interface=127.0.0.1:privateKey={tmp_path / 'key.pem'}"
                  f":certKey={tmp_path / 'cert.pem'}")
        central = obsd_process(central_config(listen, TOKENS))
        agent = obsd_process(agent_config(
            [f"https://localhost:{port}"], TOKENS["agent1"],
            relay_extra=f"ca_file = '{tmp_path / 'other-ca.pem'}'\n",
        ))
        post_events(f"http://127.0.0.1:{agent.port('http')}", load_events("agent1", 0, 2))
        agent.wait_for(
            lambda: any(e.get("event") == "delivery failed; retrying with backoff"
                        for e in agent.log_events()),
            what="a TLS failure at the agent",
        )
        assert file_events(central.data_dir) == []  # type: ignore[attr-defined]


class TestClientCertificates:
    def test_central_requires_a_client_certificate_signed_by_its_ca(
        self, obsd_process: Callable[..., ObsdProcess], tmp_path: Path
    ) -> None:
        """With clientCA on central's ssl: listener, an agent with a certificate from that CA is
        served and an agent without one is refused at the handshake."""
        from tests.tls_certs import make_certificates

        certs = make_certificates()
        (tmp_path / "ca.pem").write_bytes(certs.ca_cert)
        (tmp_path / "key.pem").write_bytes(certs.server_key)
        (tmp_path / "cert.pem").write_bytes(certs.server_cert)
        port = free_port()
        listen = (f"ssl:{port}:interface=127.0.0.1:privateKey={tmp_path / 'key.pem'}"
                  f":certKey={tmp_path / 'cert.pem'}:clientCA={tmp_path / 'ca.pem'}")
        central = obsd_process(central_config(listen, TOKENS))
        # the CA signed one certificate: agent1 presents it as its client certificate
        with_cert = obsd_process(agent_config(
            [f"https://localhost:{port}"], TOKENS["agent1"],
            relay_extra=(f"ca_file = '{tmp_path / 'ca.pem'}'\n"
                         f"cert_file = '{tmp_path / 'cert.pem'}'\n"
                         f"key_file = '{tmp_path / 'key.pem'}'\n"),
        ))
        without = obsd_process(agent_config(
            [f"https://localhost:{port}"], TOKENS["agent2"],
            relay_extra=f"ca_file = '{tmp_path / 'ca.pem'}'\n",
        ))
        post_events(f"http://127.0.0.1:{with_cert.port('http')}", load_events("agent1", 0, 3))
        post_events(f"http://127.0.0.1:{without.port('http')}", load_events("agent2", 0, 3))
        central.wait_for(
            lambda: len(file_events(central.data_dir)) >= 3,  # type: ignore[attr-defined]
            what="the agent with a certificate relayed",
        )
        without.wait_for(
            lambda: any(e.get("event") == "delivery failed; retrying with backoff"
                        for e in without.log_events()),
            what="the agent without a certificate refused",
        )
        assert central.stop() == 0
        ids = sorted(e["id"] for e in file_events(central.data_dir))  # type: ignore[attr-defined]
        assert ids == [f"agent1-{i:06d}" for i in range(3)]
