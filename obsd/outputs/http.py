"""What every HTTP output shares: its client from the one factory, closed once drained.

Elasticsearch, relay, Sentry, InfluxDB and remote write each took a client
from ``make_http_client`` with the same arguments and closed its pool after
the drain; ``HttpOutput`` does both once.  Tests hand in a ``StubTreq``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import defer
from twisted.web.client import HTTPConnectionPool

from obsd.config.model import HttpOutputConfig
from obsd.config.schema import Problems
from obsd.net.httpclient import make_http_client
from obsd.ops.telemetry import Counter
from obsd.outputs.base import Output, OutputContext, SendResult
from obsd.outputs.bisect import send_bisecting


class HttpOutput(Output):
    """An ``Output`` that talks HTTP through ``self._http``."""

    _pool: HTTPConnectionPool | None = None
    _http: Any = None
    _bisects: Counter | None = None

    def use_http(
        self, context: OutputContext, config: HttpOutputConfig, http_client: Any
    ) -> None:
        """Take ``http_client``, or make one with the config's ``connect_timeout``, TLS files
        (``ca_file``, ``cert_file``, ``key_file`` where it has them) and a keep-alive pool
        sized to ``max_in_flight``."""
        if http_client is None:
            http_client, self._pool = make_http_client(
                context.reactor,
                connect_timeout=config.connect_timeout,
                max_persistent=max(2, config.max_in_flight),
                ca_file=getattr(config, "ca_file", ""),
                cert_file=getattr(config, "cert_file", ""),
                key_file=getattr(config, "key_file", ""),
            )
        self._http = http_client

    def send_halving(
        self, batch: Sequence[bytes], post: Callable[[Sequence[bytes]], defer.Deferred[Any]]
    ) -> defer.Deferred[SendResult | None]:
        """``post`` the batch; a record the server refuses is found by halving the batch
        (``outputs/bisect.py``), each halving counted in ``.bisects``."""
        if self._bisects is None:
            self._bisects = self.context.telemetry.counter(f"obsd.output.{self.name}.bisects")
        result: defer.Deferred[SendResult | None] = send_bisecting(
            batch, post, self._bisects.inc
        )
        return result

    def after_drain(self) -> Any:
        """Close the pool's kept-alive connections once the queues are drained."""
        if self._pool is not None:
            return self._pool.closeCachedConnections()
        return None


def check_url(problems: Problems, key: str, url: str, shape: str = "http(s)://host[:port]") -> None:
    """Report ``url`` at ``key`` unless it is an http or https url with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problems.add(key, f"expected {shape}, got {url!r}")
