"""A bounded, paced StatsD UDP load, run as its own process by ``bench.statsd``.

``python -m bench._udpload PORT RATE COUNT PER_DATAGRAM [NAMES]`` sends COUNT
metrics at RATE metrics per second, PER_DATAGRAM lines per datagram, to
127.0.0.1:PORT, then prints one JSON line: metrics sent and seconds taken.
Lines cycle over NAMES distinct names (counters and timers, 3:1).
"""

from __future__ import annotations

import json
import socket
import sys
import time


def lines(names: int, distinct_from: int = 0) -> list[bytes]:
    """One line per name: three counters for every timer."""
    out = []
    for i in range(names):
        n = distinct_from + i
        if i % 4 == 3:
            out.append(b"bench.t%d:%d.5|ms" % (n, i % 250))
        else:
            out.append(b"bench.c%d:1|c" % n)
    return out


def datagrams(count: int, per_datagram: int, names: int) -> list[bytes]:
    """The datagrams to send, in order (at most ``count`` lines)."""
    pool = lines(min(names, count) or 1)
    out = []
    for start in range(0, count, per_datagram):
        chunk = [pool[(start + j) % len(pool)] for j in range(min(per_datagram, count - start))]
        out.append(b"\n".join(chunk))
    return out


def send(port: int, rate: float, count: int, per_datagram: int, names: int) -> dict[str, float]:
    """Send, paced in 1 ms steps; never more than ``count`` metrics."""
    packets = datagrams(count, per_datagram, names)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    address = ("127.0.0.1", port)
    sendto = sock.sendto
    packet_rate = rate / per_datagram
    total = len(packets)
    sent = errors = 0
    clock = time.perf_counter
    start = clock()
    while sent < total:
        due = min(total, int((clock() - start) * packet_rate) + 1)
        if sent >= due:
            time.sleep(0.0005)
            continue
        while sent < due:
            try:
                sendto(packets[sent], address)
            except OSError:
                errors += 1
            sent += 1
    seconds = clock() - start
    sock.close()
    return {"metrics": count, "seconds": seconds, "send_errors": errors}


def main(argv: list[str]) -> int:
    port, rate, count, per_datagram = int(argv[0]), float(argv[1]), int(argv[2]), int(argv[3])
    names = int(argv[4]) if len(argv) > 4 else 64
    print(json.dumps(send(port, rate, count, per_datagram, names)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
