"""Relay throughput: events/s from an agent obsd to a central obsd, with and without TLS and gzip.

Run ``python -m bench.relay [--quick] [--profile]``.  Each scenario starts a
real central obsd (``[inputs.relay]`` on ``[http]``, events to the file
output) and, except for the reference row, a real agent obsd whose relay
output sends to it.  A separate load process POSTs pre-built batches of
syslog-sized events (gzip NDJSON, 500 a request, keep-alive) into the
agent's own relay input; the clock runs from the first POST until the last
event is in central's ``events.jsonl``; beside it, the CPU time the obsd
processes used per event (agent and central together, from ``/proc``), which
other load on a shared machine disturbs far less.  Scenarios alternate
round by round; the table shows medians.  The reference row sends the same
load straight to central (one hop), the ceiling for the two-hop rows, which
show their ratio to it.  Bounded in count and time; loopback only.

``--profile`` runs the agent under twistd's cProfile in the plain-gzip
scenario and prints its top entries.
"""

from __future__ import annotations

import argparse
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.fixtures.obsd import ObsdProcess, twistd_args  # noqa: E402
from tests.integration.relay_helpers import (  # noqa: E402
    LOAD_TOKEN,
    agent_config,
    central_config,
    free_port,
)

TOKEN = "bench-agent-token"

#: (name, via agent, tls, gzip)
SCENARIOS = [
    ("direct to central (1 hop)", False, False, True),
    ("agent->central http gzip", True, False, True),
    ("agent->central http plain", True, False, False),
    ("agent->central https gzip", True, True, True),
    ("agent->central https plain", True, True, False),
]

LOADER = r"""
import gzip, http.client, json, sys, time
port, token, total, per = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sys.path.insert(0, sys.argv[5])
from obsd.codecs.relaywire import encode_event
bodies = []
for start in range(0, total, per):
    lines = []
    for i in range(start, min(total, start + per)):
        lines.append(encode_event({
            "id": "%032x" % i, "kind": "log", "level": "info", "source": "syslog",
            "host": "web1.example", "timestamp": 1700000000.0 + i / 1000.0,
            "event": "GET /api/v1/orders/%d 200 12ms user=alice agent=Mozilla/5.0" % i,
            "appname": "nginx", "procid": "4242", "facility": "local7", "severity": "info",
        }))
    bodies.append(gzip.compress(b"".join(lines), 1))
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
headers = {"Authorization": "Bearer " + token, "Content-Encoding": "gzip",
           "Content-Type": "application/x-ndjson"}
print("ready", flush=True)
sys.stdin.readline()
for body in bodies:
    while True:
        conn.request("POST", "/api/obsd/v1/events", body, headers)
        response = conn.getresponse()
        response.read()
        if response.status == 200:
            break
        if response.status != 503:
            sys.exit("HTTP %d" % response.status)
        time.sleep(0.05)
print("sent", flush=True)
"""


def count_lines(path: Path, state: dict[str, int]) -> int:
    """Lines in a growing file, reading only what is new since the last call."""
    if not path.exists():
        return 0
    with path.open("rb") as handle:
        handle.seek(state.get("offset", 0))
        chunk = handle.read()
    state["offset"] = state.get("offset", 0) + len(chunk)
    state["lines"] = state.get("lines", 0) + chunk.count(b"\n")
    return state["lines"]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_certs(directory: Path) -> tuple[Path, Path, Path]:
    from tests.tls_certs import make_certificates

    certs = make_certificates()
    ca, key, cert = directory / "ca.pem", directory / "key.pem", directory / "cert.pem"
    ca.write_bytes(certs.ca_cert)
    key.write_bytes(certs.server_key)
    cert.write_bytes(certs.server_cert)
    return ca, key, cert


def start(workdir: Path, config: str, profile: Path | None = None) -> ObsdProcess:
    workdir.mkdir(parents=True)
    data_dir = workdir / "data"
    path = workdir / "obsd.toml"
    path.write_text(config.replace("{data_dir}", str(data_dir)))
    args = twistd_args(path)
    if profile is not None:
        args = [*args[:-4], "--profile", str(profile), "--profiler", "cprofile", "--savestats",
                *args[-4:]]
    proc = ObsdProcess(workdir, args)
    proc.data_dir = data_dir  # type: ignore[attr-defined]
    return proc.start()


def run_scenario(
    base: Path, via_agent: bool, tls: bool, gzipped: bool, events: int, limit: float,
    profile: Path | None = None,
) -> tuple[float, float]:
    """One round: events/s from the first POST until central has every event, and
    the CPU microseconds per event that the obsd processes (agent and central) used."""
    base.mkdir(parents=True)
    port = free_port()
    if tls:
        ca, key, cert = write_certs(base)
        listen = f"ssl:{port}:interface=127.0.0.1:privateKey={key}:certKey={cert}"
        url = f"https://localhost:{port}"
        extra = f"ca_file = '{ca}'\n"
    else:
        listen = f"tcp:{port}:interface=127.0.0.1"
        url = f"http://127.0.0.1:{port}"
        extra = ""
    tokens = {"bench": TOKEN, "load": LOAD_TOKEN}
    central = start(base / "central", central_config(listen, tokens))
    procs = [central]
    try:
        if via_agent:
            relay_extra = extra + ("" if gzipped else "gzip = false\n")
            agent = start(base / "agent", agent_config([url], TOKEN, relay_extra=relay_extra),
                          profile)
            procs.append(agent)
            load_port = agent.port("http")
        else:
            load_port = port
        loader = subprocess.Popen(
            [sys.executable, "-c", LOADER, str(load_port), LOAD_TOKEN, str(events), "500",
             str(ROOT)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert loader.stdout is not None and loader.stdin is not None
        assert loader.stdout.readline().strip() == "ready"
        out = Path(central.data_dir) / "events.jsonl"  # type: ignore[attr-defined]
        state: dict[str, int] = {}
        cpu_before = sum(cpu_seconds(p.pid) for p in procs)
        began = time.perf_counter()
        loader.stdin.write("go\n")
        loader.stdin.flush()
        deadline = time.monotonic() + limit
        while count_lines(out, state) < events:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {state.get('lines', 0)} of {events} events in {limit} s")
            time.sleep(0.01)
        elapsed = time.perf_counter() - began
        cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu_before
        loader.wait(30)
        if loader.returncode != 0:
            raise SystemExit(f"the load process failed: {loader.returncode}")
        return events / elapsed, cpu / events * 1e6
    finally:
        for proc in reversed(procs):
            proc.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small round (CI)")
    parser.add_argument("--profile", action="store_true", help="cProfile the agent")
    args = parser.parse_args(argv)
    events, rounds, limit = (4000, 1, 60.0) if args.quick else (40000, 3, 120.0)
    with tempfile.TemporaryDirectory(prefix="bench-relay-") as tmp:
        root = Path(tmp)
        rates: dict[str, list[float]] = {name: [] for name, *_ in SCENARIOS}
        costs: dict[str, list[float]] = {name: [] for name, *_ in SCENARIOS}
        for i in range(rounds):  # scenarios alternate, so other load on the machine hits all
            for name, via_agent, tls, gzipped in SCENARIOS:
                where = root / f"r{i}-{via_agent}-{tls}-{gzipped}"
                rate, cost = run_scenario(where, via_agent, tls, gzipped, events, limit)
                rates[name].append(rate)
                costs[name].append(cost)
        reference = statistics.median(rates[SCENARIOS[0][0]])
        reference_cost = statistics.median(costs[SCENARIOS[0][0]])
        print(f"relay: {events} events per round, {rounds} round(s), median; "
              f"machine: {os.cpu_count()} cores (shared with the load process)")
        print(f"{'scenario':<28} {'events/s':>9} {'vs 1 hop':>9} {'cpu us/ev':>10} {'vs 1 hop':>9}")
        for name, *_ in SCENARIOS:
            rate = statistics.median(rates[name])
            cost = statistics.median(costs[name])
            print(f"{name:<28} {rate:>9.0f} {rate / reference:>9.2f} "
                  f"{cost:>10.1f} {cost / reference_cost:>9.2f}")
        if args.profile:
            stats_path = root / "agent.prof"
            print("agent under cProfile (http gzip):")
            run_scenario(root / "profile", True, False, True, events, limit, stats_path)
            stats = pstats.Stats(str(stats_path))
            stats.sort_stats("tottime").print_stats(15)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
