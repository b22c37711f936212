"""StatsD's ``repeat_to``: raw data sent on to other StatsD servers over UDP, never blocking."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol

#: Repeated TCP data is cut into datagrams of at most this many bytes, on line ends.
REPEAT_DATAGRAM_BYTES = 8192


def parse_host_port(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` as (host, port); ValueError when it is not."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected host:port, got {text!r}")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in {text!r}")
    return host.strip("[]"), port


class Repeater(DatagramProtocol):
    """Sends raw StatsD data on to other servers over UDP, never blocking.

    A datagram the kernel will not take now (``EAGAIN``, no route) is counted
    and dropped, as a UDP sender would lose it anyway.
    """

    def __init__(
        self, targets: list[tuple[str, int]], reactor: Any, on_error: Callable[[str], None]
    ) -> None:
        self.targets = targets
        self.reactor = reactor
        self.on_error = on_error
        self.addresses: list[tuple[str, int]] = []
        self.port: Any = None
        self.sent = 0
        self.errors = 0

    def start(self) -> defer.Deferred[None]:
        """Bind an ephemeral UDP port and resolve the targets (without blocking)."""
        v6 = False
        resolved: list[defer.Deferred[Any]] = []
        for host, port in self.targets:
            try:
                ip = ipaddress.ip_address(host)
                v6 = v6 or ip.version == 6
                resolved.append(defer.succeed((str(ip), port)))
            except ValueError:
                d = self.reactor.resolve(host)
                d.addCallback(lambda addr, port=port: (addr, port))
                resolved.append(d)
        self.port = self.reactor.listenUDP(0, self, interface="::" if v6 else "0.0.0.0")
        d = defer.gatherResults(resolved, consumeErrors=True)

        def done(addresses: list[tuple[str, int]]) -> None:
            self.addresses = addresses
            return None

        def failed(failure: Any) -> None:
            self.on_error(f"cannot resolve a repeat_to host: {failure.getErrorMessage()}")

        return d.addCallbacks(done, failed)

    def stop(self) -> Any:
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None

    def repeat(self, data: bytes) -> None:
        if self.transport is None:
            return
        chunks = [data] if len(data) <= REPEAT_DATAGRAM_BYTES else _split_lines(data)
        for address in self.addresses:
            for chunk in chunks:
                try:
                    self.transport.write(chunk, address)
                    self.sent += 1
                except OSError as exc:  # EAGAIN, ENETUNREACH...: a lost datagram
                    self.errors += 1
                    self.on_error(f"repeat to {address[0]}:{address[1]} failed: {exc}")


def _split_lines(data: bytes, size: int = REPEAT_DATAGRAM_BYTES) -> list[bytes]:
    """Cut ``data`` into pieces of about ``size`` bytes at line ends."""
    chunks: list[bytes] = []
    start = 0
    while start < len(data):
        end = data.rfind(b"\n", start, start + size)
        end = start + size if end <= start else end + 1
        chunks.append(data[start:end])
        start = end
    return chunks
