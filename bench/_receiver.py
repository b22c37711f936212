"""A StatsD receiver under test, run as its own process by ``bench.statsd``.

``python -m bench._receiver obsd|bare`` listens on a free UDP port of
127.0.0.1, prints ``@@{"port": N}``, then answers commands on stdin, one
``@@``-marked JSON line each (other lines are obsd's own log): ``count``
(metrics received so far), ``flush`` (obsd only: the seconds one flush
takes), ``rss`` (resident bytes).

``obsd`` is obsd's statsd input as the daemon builds it (listener, aggregator,
the same 8 MiB receive buffer) with a flush interval long enough that no flush
happens while measuring; flushed points are discarded.  ``bare`` is a Twisted
DatagramProtocol that only counts lines: the ceiling of this design.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet import stdio
from twisted.internet.protocol import DatagramProtocol
from twisted.protocols.basic import LineReceiver

from obsd.config.model import ObsdConfig
from obsd.daemon.topology import InputContext
from obsd.delivery.flowcontrol import FlowControl
from obsd.inputs.statsd import Config, StatsdInput
from obsd.net.rcvbuf import set_receive_buffer
from obsd.ops.telemetry import Telemetry
from obsd.ops.throttle import ThrottledLogger
from obsd.testing import ListLog

BUFFER = 8 * 1024 * 1024


class NullIngest:
    def __init__(self) -> None:
        self.points = 0

    def metric(self, fields: dict[str, Any]) -> None:
        self.points += 1


class BareCounter(DatagramProtocol):
    """Counts lines and does nothing else."""

    def __init__(self) -> None:
        self.lines = 0

    def startProtocol(self) -> None:
        set_receive_buffer(self.transport.getHandle(), BUFFER)  # type: ignore[union-attr]

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.lines += data.count(b"\n") + 1


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Commands(LineReceiver):
    delimiter = b"\n"

    def __init__(self, count: Any, flush: Any) -> None:
        self.count = count
        self.flush = flush

    def lineReceived(self, line: bytes) -> None:
        command = line.decode().strip()
        if command == "count":
            answer: dict[str, Any] = {"metrics": self.count()}
        elif command == "flush":
            answer = {"seconds": self.flush()}
        elif command == "rss":
            answer = {"rss": rss_bytes()}
        else:
            answer = {"error": command}
        self.sendLine(b"@@" + json.dumps(answer).encode())

    def connectionLost(self, reason: Any = None) -> None:
        """The driver closed stdin: stop."""
        if global_reactor.running:  # type: ignore[attr-defined]
            global_reactor.stop()  # type: ignore[attr-defined]


def main(kind: str) -> None:
    reactor: Any = global_reactor
    if kind == "bare":
        bare = BareCounter()
        port = reactor.listenUDP(0, bare, interface="127.0.0.1", maxPacketSize=65536)

        def count() -> int:
            return bare.lines

        def flush() -> float:
            return 0.0

    else:
        import time

        context = InputContext(
            name="statsd",
            reactor=reactor,
            telemetry=Telemetry(),
            flow_control=FlowControl(),
            throttle=ThrottledLogger(ListLog(), reactor, 10.0),
            ingest=NullIngest(),  # type: ignore[arg-type]
            http=None,  # type: ignore[arg-type]
            config=ObsdConfig(),
        )
        statsd = StatsdInput(
            "statsd",
            Config(listen=["udp:0:interface=127.0.0.1"], flush_interval=86400.0, max_metrics=10**6),
            context,
        )
        statsd.startService()
        port = next(iter(statsd)).port  # type: ignore[attr-defined]
        received = [0]

        def count() -> int:
            return received[0] + statsd.aggregator.metrics_received

        def flush() -> float:
            received[0] += statsd.aggregator.metrics_received
            started = time.perf_counter()
            statsd.flush()
            return time.perf_counter() - started

    stdio.StandardIO(Commands(count, flush))
    print("@@" + json.dumps({"port": port.getHost().port}), flush=True)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "obsd")
