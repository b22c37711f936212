"""Fair shares of a stream input's connections (``FairFactory``), on StringTransports."""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from obsd.net.slots import ConnectionSlots, FairFactory
from obsd.ops.telemetry import Telemetry


class Recorder(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.made = self.lost = 0

    def connectionMade(self) -> None:
        self.made += 1

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost += 1


class Throttle:
    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def warning(self, key: str, event: str, **fields: Any) -> None:
        self.lines.append({"event": event, **fields})


@attrs.frozen
class Limits:
    max_connections: int = 10
    max_connections_per_peer: int = 2
    idle_timeout: float = 600.0


class Listener:
    def __init__(self, **limits: Any) -> None:
        self.clock = Clock()
        self.telemetry = Telemetry()
        self.throttle = Throttle()
        self.inner: list[Recorder] = []
        self.factory = FairFactory(
            Factory.forProtocol(self._make), owner="statsd", config=Limits(**limits),
            reactor=self.clock, telemetry=self.telemetry, throttle=self.throttle,
        )

    def _make(self) -> Recorder:
        self.inner.append(Recorder())
        return self.inner[-1]

    def connect(self, host: str, port: int) -> tuple[Any, StringTransport]:
        address = IPv4Address("TCP", host, port)
        protocol = self.factory.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        return protocol, transport

    def counter(self, name: str) -> int:
        return self.telemetry.counters()[f"obsd.input.statsd.{name}"]


def test_one_address_is_held_to_its_share_and_others_still_get_in() -> None:
    """The attacker on 127.0.0.2 gets two slots; its third connect is reset at once."""
    listener = Listener()
    held = [listener.connect("127.0.0.2", port) for port in (1, 2)]
    protocol, refused = listener.connect("127.0.0.2", 3)
    assert refused.disconnected  # abortConnection: a reset the sender sees
    assert listener.counter("refused") == 1
    assert listener.throttle.lines[0]["peer"] == "127.0.0.2:3"
    assert "max_connections_per_peer" in listener.throttle.lines[0]["event"]
    protocol.connectionLost(None)
    assert listener.inner[2].made == listener.inner[2].lost == 0  # the input never saw it
    _, honest = listener.connect("127.0.0.1", 4)
    assert not honest.disconnecting
    held[0][0].connectionLost(None)
    _, again = listener.connect("127.0.0.2", 5)
    assert not again.disconnecting
    assert listener.factory.slots.per_peer == {"127.0.0.2": 2, "127.0.0.1": 1}


def test_max_connections_in_all() -> None:
    listener = Listener(max_connections=2, max_connections_per_peer=5)
    listener.connect("127.0.0.1", 1)
    listener.connect("127.0.0.3", 2)
    _, third = listener.connect("127.0.0.4", 3)
    assert third.disconnected
    assert "max_connections reached" in listener.throttle.lines[0]["event"]


def test_a_silent_connection_is_closed_after_idle_timeout() -> None:
    listener = Listener(idle_timeout=60.0)
    protocol, transport = listener.connect("127.0.0.1", 1)
    listener.clock.advance(59)
    protocol.dataReceived(b"a:1|c\n")  # data restarts the clock
    listener.clock.advance(59)
    assert not transport.disconnecting
    listener.clock.advance(1)
    assert transport.disconnecting and not transport.disconnected  # a close, not a reset
    assert listener.counter("idle_timeouts") == 1
    assert listener.inner[0].data == b"a:1|c\n"
    protocol.connectionLost(None)
    assert listener.factory.slots.open == 0 and listener.clock.getDelayedCalls() == []


def test_idle_timeout_zero_keeps_connections() -> None:
    listener = Listener(idle_timeout=0)
    _, transport = listener.connect("127.0.0.1", 1)
    assert listener.clock.getDelayedCalls() == []
    assert not transport.disconnecting


def test_slots_bookkeeping() -> None:
    slots = ConnectionSlots(max_connections=3, max_per_peer=1)
    slots.take("a")
    assert slots.refusal("a") == "max_connections_per_peer reached for this sender"
    assert slots.refusal("b") is None
    slots.give_back("a")
    assert (slots.open, slots.per_peer) == (0, {})
