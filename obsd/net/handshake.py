"""A deadline for TLS handshakes on every ``ssl:`` listener.

A client that opens a TLS connection and never finishes the handshake holds
a slot (and, for syslog, its ``idle_timeout`` of minutes) while sending
nothing an input could judge.  Wrapping the listener's factory starts a clock
at connect; the TLS layer calls ``handshakeCompleted`` when the handshake is
done, and a connection still shaking hands at the deadline is aborted and
counted.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall, IHandshakeListener, IProtocolFactory
from twisted.internet.protocol import connectionDone
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from obsd.net.peers import describe_peer


@implementer(IHandshakeListener)
class HandshakeDeadline(ProtocolWrapper):
    """Aborts the connection unless TLS says the handshake finished in time."""

    factory: HandshakeDeadlineFactory
    _timer: IDelayedCall | None = None

    def makeConnection(self, transport: Any) -> None:
        factory = self.factory
        self._timer = factory.reactor.callLater(factory.timeout, self._expired)
        super().makeConnection(transport)  # type: ignore[no-untyped-call]

    def handshakeCompleted(self) -> None:
        self._cancel()
        if IHandshakeListener.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.handshakeCompleted()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel()
        super().connectionLost(reason)  # type: ignore[no-untyped-call]

    def _cancel(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _expired(self) -> None:
        self._timer = None
        factory = self.factory
        factory.timeouts.inc()
        factory.throttle.warning(
            f"tls:{factory.owner}:handshake_timeout",
            "TLS handshake did not finish in time; connection aborted",
            input=factory.owner,
            peer=describe_peer(self.getPeer()),  # type: ignore[no-untyped-call]
            tls_handshake_timeout=factory.timeout,
        )
        self.transport.abortConnection()  # type: ignore[union-attr]


class HandshakeDeadlineFactory(WrappingFactory):
    """Wraps a listener's factory so each of its TLS connections gets a handshake deadline."""

    protocol = HandshakeDeadline

    def __init__(
        self,
        wrapped: IProtocolFactory,
        *,
        owner: str,
        timeout: float,
        reactor: Any,
        telemetry: Any,
        throttle: Any,
    ) -> None:
        super().__init__(wrapped)  # type: ignore[no-untyped-call]
        self.owner = owner
        self.timeout = timeout
        self.reactor = reactor
        self.throttle = throttle
        self.timeouts = telemetry.counter("obsd.tls.handshake_timeouts")
        self.noisy = False
