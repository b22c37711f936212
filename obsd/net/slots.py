"""Fair shares of a listener's connections, and a wrapper that enforces them on stream inputs.

One local process, or one host of a fleet, must not be able to take every
connection slot of an input, nor hold slots with connections that say
nothing.  ``ConnectionSlots`` keeps the count in all and per sender (an IP,
or a unix peer's uid); ``FairFactory`` wraps a stream input's factory so a
connection past either cap is reset at once (the sender sees a refused
connection instead of writing into the void) and a silent one is closed
after ``idle_timeout``, each counted and logged.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall, IProtocolFactory
from twisted.internet.protocol import connectionDone
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure

from obsd.contracts import InputContext
from obsd.net.peers import describe_peer, peer_key


class ConnectionSlots:
    """Open connections, in all and per sender; who may take the next one."""

    def __init__(self, max_connections: int, max_per_peer: int) -> None:
        self.max_connections = max_connections
        self.max_per_peer = max_per_peer
        self.open = 0
        self.per_peer: dict[str, int] = {}

    def refusal(self, key: str) -> str | None:
        """Why a new connection from ``key`` is refused, or None when it may have a slot."""
        if self.open >= self.max_connections:
            return "max_connections reached"
        if self.per_peer.get(key, 0) >= self.max_per_peer:
            return "max_connections_per_peer reached for this sender"
        return None

    def take(self, key: str) -> None:
        self.open += 1
        self.per_peer[key] = self.per_peer.get(key, 0) + 1

    def give_back(self, key: str) -> None:
        self.open -= 1
        left = self.per_peer.get(key, 1) - 1
        if left > 0:
            self.per_peer[key] = left
        else:
            self.per_peer.pop(key, None)


class FairProtocol(ProtocolWrapper):
    """Takes a slot or resets the connection; closes it after ``idle_timeout`` of silence."""

    factory: FairFactory
    _key = ""
    _admitted = False
    _idle: IDelayedCall | None = None

    def makeConnection(self, transport: Any) -> None:
        factory = self.factory
        self._key = peer_key(transport.getPeer(), transport)
        why = factory.slots.refusal(self._key)
        if why is not None:
            factory.refused.inc()
            factory.throttle.warning(
                f"input:{factory.owner}:refused",
                f"connection refused: {why}",
                input=factory.owner,
                peer=describe_peer(transport.getPeer()),
                max_connections=factory.slots.max_connections,
                max_connections_per_peer=factory.slots.max_per_peer,
            )
            self.transport = transport
            transport.abortConnection()  # a reset: the sender's writes fail at once
            return
        factory.slots.take(self._key)
        self._admitted = True
        self._arm()
        super().makeConnection(transport)  # type: ignore[no-untyped-call]

    def dataReceived(self, data: bytes) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.factory.idle_timeout)
        super().dataReceived(data)  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self._admitted:
            return  # refused: the wrapped protocol never saw this connection
        self._admitted = False
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self.factory.slots.give_back(self._key)
        super().connectionLost(reason)  # type: ignore[no-untyped-call]

    def _arm(self) -> None:
        if self.factory.idle_timeout > 0:
            self._idle = self.factory.reactor.callLater(self.factory.idle_timeout, self._silent)

    def _silent(self) -> None:
        self._idle = None
        self.factory.idle_timeouts.inc()
        self.transport.loseConnection()  # type: ignore[union-attr]


class FairFactory(WrappingFactory):
    """A stream input's factory, held to ``max_connections``, per-sender caps and idleness."""

    protocol = FairProtocol
    noisy = False

    def __init__(
        self,
        wrapped: IProtocolFactory,
        *,
        owner: str,
        config: Any,
        reactor: Any,
        telemetry: Any,
        throttle: Any,
    ) -> None:
        """``config`` has ``max_connections``, ``max_connections_per_peer``, ``idle_timeout``."""
        super().__init__(wrapped)  # type: ignore[no-untyped-call]
        self.owner = owner
        self.slots = ConnectionSlots(config.max_connections, config.max_connections_per_peer)
        self.idle_timeout = config.idle_timeout
        self.reactor = reactor
        self.throttle = throttle
        self.refused = telemetry.counter(f"obsd.input.{owner}.refused")
        self.idle_timeouts = telemetry.counter(f"obsd.input.{owner}.idle_timeouts")


def fair_factory(
    factory: IProtocolFactory, name: str, config: Any, context: InputContext
) -> FairFactory:
    """``factory`` held to the input's caps: what a stream input hands its listeners."""
    return FairFactory(
        factory, owner=name, config=config, reactor=context.reactor,
        telemetry=context.telemetry, throttle=context.throttle,
    )
