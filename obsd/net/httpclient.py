"""The one HTTP client factory every HTTP output uses.

Each output gets its own persistent connection pool (never treq's global one),
a connect timeout separate from its request timeout, trust and a client
certificate from ``obsd.net.tls``, and bodies written in one go.  A POST is
never retried behind the delivery queue's back: the queue decides retries.
"""

from __future__ import annotations

from typing import Any

from treq.client import HTTPClient
from twisted.internet import defer
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IBodyProducer, IResponse
from zope.interface import implementer

from obsd.net.tls import https_policy


def make_http_client(
    reactor: Any,
    *,
    connect_timeout: float,
    max_persistent: int = 2,
    ca_file: str = "",
    cert_file: str = "",
    key_file: str = "",
) -> tuple[HTTPClient, HTTPConnectionPool]:
    """A treq client over a new pool, and the pool (close it with ``closeCachedConnections``)."""
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = max(1, max_persistent)
    pool.retryAutomatically = False
    agent = Agent(
        reactor,
        contextFactory=https_policy(ca_file, cert_file, key_file),
        connectTimeout=connect_timeout,
        pool=pool,
    )
    return HTTPClient(agent, data_to_body_producer=BytesProducer), pool


def retry_after(response: IResponse) -> float | None:
    """A response's ``Retry-After`` in seconds, when it gives a number."""
    values = response.headers.getRawHeaders(b"retry-after") or []
    try:
        return float(values[0]) if values else None
    except ValueError:
        return None


@implementer(IBodyProducer)
class BytesProducer:
    """A body already in memory, written in one go (the client's ``data_to_body_producer``).

    treq would otherwise wrap bytes in a ``FileBodyProducer``, which writes 64 KiB per
    cooperator tick (10 ms apart): a 1 MiB body would then take 160 ms to leave,
    whatever the network.
    """

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: Any) -> defer.Deferred[None]:
        consumer.write(self._body)
        return defer.succeed(None)

    def pauseProducing(self) -> None:
        """Nothing to pause: the body is already written."""

    def resumeProducing(self) -> None:
        """Nothing to resume."""

    def stopProducing(self) -> None:
        """Nothing to stop."""
