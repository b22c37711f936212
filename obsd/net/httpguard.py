"""HTTP limits like a production server's, for every site obsd serves.

Twisted's ``Site`` holds any number of connections, waits for ever on headers
and bodies, and buffers a whole body before a resource can refuse it.  A
``GuardedSite`` instead caps connections (in all and per sender), times out
slow headers and stalled bodies, and refuses a body past the endpoint's size
limit from its ``Content-Length`` (or, chunked, at the byte that crosses it)
before buffering it.  Each refusal is an HTTP status the client understands,
written at once, counted, and logged (throttled).

The size limit comes from the resource tree: a mounted resource that has a
``max_body_bytes(path, headers)`` method says what its endpoints take.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

import attrs
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.http_headers import Headers
from twisted.web.server import Request, Site

from obsd.net.peers import describe_peer, peer_key
from obsd.net.slots import ConnectionSlots

#: what a request to an endpoint that names no limit may carry (status pages, health)
DEFAULT_MAX_BODY = 64 * 1024

#: how long a refused connection is read (and discarded) after its answer, so the
#: client reads the answer instead of a reset; then it is aborted
LINGER_SECONDS = 2.0


class BodyLimited(Protocol):
    """A resource that says how large a request body its endpoints take."""

    def max_body_bytes(self, path: bytes, headers: Headers) -> int: ...


@attrs.frozen(kw_only=True)
class HttpLimits:
    """The ``[http]`` limits, for the shared site and the inputs' own sites."""

    max_connections: int = 1024
    max_connections_per_peer: int = 64
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    idle_timeout: float = 60.0

    @classmethod
    def of(cls, http: Any) -> HttpLimits:
        """The limits of an ``HttpConfig``."""
        return cls(
            max_connections=http.max_connections,
            max_connections_per_peer=http.max_connections_per_peer,
            header_timeout=http.header_timeout,
            body_timeout=http.body_timeout,
            idle_timeout=http.idle_timeout,
        )


class HttpGuard:
    """Open connections by sender, and the counters of every refusal."""

    def __init__(self, limits: HttpLimits, telemetry: Any, throttle: Any, prefix: str) -> None:
        self.limits = limits
        self.throttle = throttle
        self.prefix = prefix
        self.slots = ConnectionSlots(limits.max_connections, limits.max_connections_per_peer)
        names = ("connections", "peer", "too_large", "header_timeout", "body_timeout")
        self.refused = {
            name: telemetry.counter(f"{prefix}refused.{name}") for name in names
        } if telemetry is not None else {}

    def admit(self, key: str) -> tuple[int, str, str] | None:
        """Take a connection from ``key``; or why not, as (status, reason, counter)."""
        why = self.slots.refusal(key)
        if why is None:
            self.slots.take(key)
            return None
        if why.startswith("max_connections reached"):
            return 503, "Service Unavailable", "connections"
        return 429, "Too Many Requests", "peer"

    def release(self, key: str) -> None:
        """A connection that ``admit`` took has closed."""
        self.slots.give_back(key)

    def count(self, what: str, peer: str, detail: str) -> None:
        """Count one refusal and log it (throttled per kind)."""
        counter = self.refused.get(what)
        if counter is not None:
            counter.inc()
        if self.throttle is not None:
            self.throttle.warning(
                f"{self.prefix}refused.{what}", "HTTP request refused",
                reason=what, peer=peer, detail=detail,
            )


class GuardedRequest(Request):
    """A request whose body bytes are counted against its endpoint's limit as they arrive."""

    channel: GuardedChannel

    def handleContentChunk(self, data: bytes) -> None:
        if self.channel.body_arrived(len(data)):
            super().handleContentChunk(data)  # type: ignore[no-untyped-call]


class GuardedChannel(HTTPChannel):
    """An ``HTTPChannel`` with a connection cap, header and body timeouts and early 413s."""

    site: GuardedSite
    _key = ""
    _peer = ""
    _admitted = False
    _refused = False
    _heard = False  # any byte on this connection yet
    _phase = "idle"  # idle, headers, body, handling
    _timer: IDelayedCall | None = None
    _linger: IDelayedCall | None = None
    _limit = 0
    _seen = 0

    def connectionMade(self) -> None:
        guard = self.site.guard
        transport: Any = self.transport
        address = transport.getPeer()
        self._key = peer_key(address, transport)
        self._peer = describe_peer(address)
        why = guard.admit(self._key)
        if why is not None:
            status, reason, counter = why
            limit = "max_connections" if counter == "connections" else "max_connections_per_peer"
            guard.count(counter, self._peer, f"[http] {limit} reached")
            # no lingering here: a flood of refused connects must not hold descriptors
            self._answer(status, reason, f"{limit} reached", retry_after=1, linger=False)
            return
        self._admitted = True
        super().connectionMade()  # type: ignore[no-untyped-call]
        self._start("headers")

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        self._heard = True
        if self._phase == "idle":
            self._start("headers")
        super().dataReceived(data)  # type: ignore[no-untyped-call]

    def lineReceived(self, line: bytes) -> None:
        if self._refused:
            return
        if self._phase == "idle":  # a pipelined request replayed after the last answer
            self._start("headers")
        super().lineReceived(line)  # type: ignore[no-untyped-call]

    def allHeadersReceived(self) -> None:
        self._stop_timer()
        limit = self.site.max_body_bytes(self._path, self.requests[-1].requestHeaders)
        if self.length is not None and self.length > limit:
            self._too_large(limit)
            return
        self._limit, self._seen = limit, 0
        super().allHeadersReceived()  # type: ignore[no-untyped-call]
        if self.length != 0:
            self._start("body")

    def body_arrived(self, size: int) -> bool:
        """Count ``size`` body bytes; False once the request is refused."""
        if self._refused:
            return False
        self._seen += size
        if self._seen > self._limit:
            self._too_large(self._limit)
            return False
        if self._timer is not None:
            self._timer.reset(self.site.guard.limits.body_timeout)
        return True

    def rawDataReceived(self, data: bytes) -> None:
        if not self._refused:
            super().rawDataReceived(data)

    def allContentReceived(self) -> None:
        if self._refused:
            return
        self._stop_timer()
        self._phase = "handling"
        super().allContentReceived()  # type: ignore[no-untyped-call]

    def requestDone(self, request: Request) -> None:
        self._phase = "idle"
        super().requestDone(request)  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stop_timer()
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        if self._admitted:
            self._admitted = False
            self.site.guard.release(self._key)
        super().connectionLost(reason)  # type: ignore[no-untyped-call]

    # -- refusals -------------------------------------------------------------

    def _start(self, phase: str) -> None:
        self._phase = phase
        self._stop_timer()
        limits = self.site.guard.limits
        seconds = limits.header_timeout if phase == "headers" else limits.body_timeout
        self._timer = self.callLater(seconds, lambda: self._expired(phase))  # type: ignore[no-untyped-call]

    def _stop_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _expired(self, phase: str) -> None:
        self._timer = None
        key = "header_timeout" if phase == "headers" else "body_timeout"
        seconds = getattr(self.site.guard.limits, key)
        self.site.guard.count(key, self._peer, f"[http] {key} of {seconds} s")
        if not self._heard:  # a silent connection (a browser's preconnect): just close it
            self._refused = True
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        what = "headers" if phase == "headers" else "body"
        self._answer(408, "Request Timeout", f"request {what} did not arrive within {seconds} s")

    def _too_large(self, limit: int) -> None:
        self.site.guard.count("too_large", self._peer, f"body over {limit} bytes")
        self._answer(
            413, "Payload Too Large",
            f"request body exceeded the size limit: limit is {limit} bytes",
        )

    def _answer(
        self, status: int, reason: str, detail: str, retry_after: int = 0, linger: bool = True
    ) -> None:
        """Write a final answer now, then close: read and drop what follows for a moment."""
        self._refused = True
        self._stop_timer()
        body = json.dumps({"detail": detail}).encode() + b"\n"
        head = [
            f"HTTP/1.1 {status} {reason}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "Connection: close",
        ]
        if retry_after:
            head.append(f"Retry-After: {retry_after}")
        transport: Any = self.transport
        transport.write("\r\n".join(head).encode() + b"\r\n\r\n" + body)
        half_close = getattr(transport, "loseWriteConnection", None)
        if half_close is None or not linger:
            transport.loseConnection()
            return
        # The client may still be sending the body: closing with unread bytes would
        # reset the connection and lose the answer, so read (and drop) a little longer.
        half_close()
        self._linger = self.callLater(LINGER_SECONDS, transport.abortConnection)  # type: ignore[no-untyped-call]


class GuardedSite(Site):
    """A ``Site`` whose connections are ``GuardedChannel``s, sharing one ``HttpGuard``."""

    protocol = GuardedChannel  # type: ignore[assignment]
    requestFactory = GuardedRequest

    def __init__(
        self,
        resource: Any,
        guard: HttpGuard,
        reactor: Any,
        max_body_bytes: Callable[[bytes, Headers], int] | None = None,
    ) -> None:
        # parsePOSTFormSubmission: no obsd endpoint takes HTML form posts, and looking for
        # one parses every POST's Content-Type through email.message: about 27 us, a
        # tenth of a Sentry store request's CPU
        super().__init__(  # type: ignore[no-untyped-call]
            resource, reactor=reactor, timeout=guard.limits.idle_timeout,
            parsePOSTFormSubmission=False,
        )
        self.guard = guard
        self._max_body = max_body_bytes

    def max_body_bytes(self, path: bytes, headers: Headers) -> int:
        """The largest body the endpoint at ``path`` (query included) takes."""
        path = path.split(b"?", 1)[0]
        if self._max_body is not None:
            return self._max_body(path, headers)
        find = getattr(self.resource, "max_body_bytes", None)
        return int(find(path, headers)) if find is not None else DEFAULT_MAX_BODY
