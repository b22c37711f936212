"""GELF over UDP: obsd's real twistd process against a bare Twisted receiver, per CPU-second.

``python -m bench.gelf [--quick]``

obsd runs as ``twistd -n obsd`` with ``[inputs.gelf]`` on UDP and the file
output; the bare receiver is a Twisted ``DatagramProtocol`` that only counts
datagrams (the ceiling of this design).  Each gets the same bounded, paced UDP
load from another process: graypy-shaped messages, 70% plain JSON, 20%
zlib-compressed and 10% gzip-compressed and cut into two chunks.  The offered
rate is stepped up; the table shows each step's loss and, over all steps,
messages per receiver CPU-second (from ``/proc/PID/stat``: robust on a shared
machine) and the ratio obsd/bare.  Loopback only, bounded in count and time.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any
from urllib.request import urlopen

from bench._child import ROOT, Proc, cpu_seconds, env, start_obsd

OBSD_CONFIG = """
[daemon]
data_dir = '{data_dir}'
[http]
listen = ['tcp:0:interface=127.0.0.1']
[inputs.gelf]
listen = ['udp:0:interface=127.0.0.1']
http_path = ''
[outputs.file]
max_bytes = 1099511627776  # never rotate: every line stays countable
"""

BARE = r"""
import json, sys
from twisted.internet import reactor, stdio
from twisted.internet.protocol import DatagramProtocol
from twisted.protocols.basic import LineReceiver

class Count(DatagramProtocol):
    datagrams = 0
    def datagramReceived(self, data, addr):
        self.datagrams += 1

class Commands(LineReceiver):
    delimiter = b"\n"
    def lineReceived(self, line):
        print("@@" + json.dumps({"datagrams": counter.datagrams}), flush=True)

counter = Count()
port = reactor.listenUDP(0, counter, interface="127.0.0.1", maxPacketSize=65536)
port.socket.setsockopt(__import__("socket").SOL_SOCKET, __import__("socket").SO_RCVBUF, 8 << 20)
print("@@" + json.dumps({"port": port.getHost().port}), flush=True)
stdio.StandardIO(Commands())
reactor.run()
"""


def message(i: int) -> bytes:
    """A GELF message as graypy writes one for a logging call with two extra fields."""
    return json.dumps({
        "version": "1.0", "host": "web1", "short_message": f"order {i} paid",
        "timestamp": 1764750000.0 + i / 1000, "level": 6, "facility": "shop.orders",
        "_order": i, "_customer": f"c-{i % 97}", "_path": "/srv/shop/pay.py", "_line": 42,
    }).encode()


def datagrams(count: int) -> list[list[bytes]]:
    """Per message, its datagrams: plain, zlib, or gzip in two chunks (7:2:1)."""
    out = []
    for i in range(count):
        data = message(i)
        kind = i % 10
        if kind < 7:
            out.append([data])
        elif kind < 9:
            out.append([zlib.compress(data)])
        else:
            packed = gzip.compress(data)
            half = len(packed) // 2
            ident = i.to_bytes(8, "big")
            out.append([b"\x1e\x0f" + ident + bytes([n, 2]) + part
                        for n, part in enumerate((packed[:half], packed[half:]))])
    return out


def send(port: int, rate: float, count: int) -> dict[str, float]:
    """Send ``count`` messages at ``rate`` per second, paced in 1 ms steps."""
    messages = datagrams(count)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    address = ("127.0.0.1", port)
    sent = errors = 0
    start = time.perf_counter()
    while sent < count:
        due = min(count, int((time.perf_counter() - start) * rate) + 1)
        if sent >= due:
            time.sleep(0.0005)
            continue
        while sent < due:
            for datagram in messages[sent]:
                try:
                    sock.sendto(datagram, address)
                except OSError:
                    errors += 1
            sent += 1
    seconds = time.perf_counter() - start
    sock.close()
    return {"messages": count, "seconds": seconds, "send_errors": errors}


def datagram_count(count: int) -> int:
    return sum(len(d) for d in datagrams(count))


class ObsdReceiver:
    """A real ``twistd -n obsd`` with the GELF input; counts come from its /metrics."""

    name = "obsd"

    def __init__(self, workdir: Path) -> None:
        config = OBSD_CONFIG.format(data_dir=workdir / "data")
        self.proc, self.log, ports = start_obsd(workdir, config, {"gelf", "http"})
        self.port, self.http = ports["gelf"], ports["http"]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def count(self) -> int:
        with urlopen(f"http://127.0.0.1:{self.http}/metrics", timeout=10) as answer:
            for line in answer.read().decode().splitlines():
                if line.startswith("obsd_input_gelf_messages_total "):
                    return int(float(line.split()[1]))
        return 0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


class BareReceiver:
    """The ceiling: a DatagramProtocol that counts datagrams."""

    name = "bare Twisted UDP"

    def __init__(self) -> None:
        self.child = Proc([sys.executable, "-c", BARE], stdin=True)
        self.port = int(self.child.read()["port"])
        self.per_message = 1.0

    @property
    def pid(self) -> int:
        return self.child.pid

    def count(self) -> int:
        return int(self.child.ask("count")["datagrams"] / self.per_message)

    def stop(self) -> None:
        self.child.stop()


def settle(receiver: Any, expected: int, timeout: float = 3.0) -> int:
    """The receiver's count once it stops growing (or reaches ``expected``)."""
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        now = receiver.count()
        if now >= expected or now == last:
            return int(now)
        last = now
        time.sleep(0.2)
    return int(receiver.count())


def measure(receiver: Any, rates: list[float], seconds: float) -> dict[str, Any]:
    steps = []
    total_cpu = 0.0
    total = 0
    for rate in rates:
        count = int(rate * seconds)
        before = settle(receiver, 0, 0.5)
        cpu_before = cpu_seconds(receiver.pid)
        result = subprocess.run(
            [sys.executable, "-m", "bench.gelf", "--load", str(receiver.port), str(rate),
             str(count)],
            cwd=ROOT, env=env(), capture_output=True, text=True, timeout=seconds * 4 + 60,
            check=True,
        )
        sent = json.loads(result.stdout.strip().splitlines()[-1])
        got = settle(receiver, before + count) - before
        cpu = cpu_seconds(receiver.pid) - cpu_before
        total_cpu += cpu
        total += got
        steps.append({"offered": rate, "achieved": count / sent["seconds"],
                      "loss": 1 - got / count, "cpu": cpu})
    return {"steps": steps, "per_cpu": total / total_cpu if total_cpu else float("nan")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gelf",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short step (CI)")
    args = parser.parse_args(argv)
    rates, seconds = ([2_000.0], 1.5) if args.quick else ([5_000.0, 10_000.0, 20_000.0], 4.0)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-gelf-") as tmp:
        obsd = ObsdReceiver(Path(tmp))
        try:
            results["obsd"] = measure(obsd, rates, seconds)
        finally:
            obsd.stop()
        bare = BareReceiver()
        bare.per_message = datagram_count(100) / 100  # chunked messages are two datagrams
        try:
            results["bare"] = measure(bare, rates, seconds)
        finally:
            bare.stop()
    print(f"GELF UDP receivers, {os.cpu_count()} CPUs; 70% plain, 20% zlib, 10% gzip in 2 chunks")
    print(f"{'receiver':<20}{'offered/s':>11}{'achieved/s':>12}{'loss':>8}{'CPU s':>8}")
    for name, label in (("obsd", "obsd"), ("bare", "bare Twisted UDP")):
        for step in results[name]["steps"]:
            print(f"{label:<20}{step['offered']:>11.0f}{step['achieved']:>12.0f}"
                  f"{step['loss']:>8.1%}{step['cpu']:>8.2f}")
    print(f"messages per CPU-second: obsd {results['obsd']['per_cpu']:,.0f}, "
          f"bare {results['bare']['per_cpu']:,.0f}, "
          f"ratio obsd/bare {results['obsd']['per_cpu'] / results['bare']['per_cpu']:.2f}")
    lost = [s for s in results["obsd"]["steps"] if s["loss"] > 0.01]
    if args.quick and lost:
        print(f"obsd lost more than 1% at {lost[0]['offered']:.0f}/s in the quick run")
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        port, rate, count = int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
        print(json.dumps(send(port, rate, count)), flush=True)
    else:
        sys.exit(main())
