"""The ``relay`` output: forward every event to a central obsd, at least once.

Batches go as gzip NDJSON (``obsd.codecs.relaywire``) in one
``POST <url>/api/obsd/v1/events`` with ``Authorization: Bearer <token>``.
Central answers 200 only once the batch is on its own queues, so a batch is
dropped here only after that 200; every other outcome keeps it.  The events
keep their ``id``, and central drops ids it has seen within its window, so
the retries that at-least-once implies never double anything.

Several ``urls`` are tried in turn (failover): a send starts at the url that
last answered, and on a network error, a timeout, 5xx, 429 or 503 moves on to
the next one at once; when all have failed the queue retries the batch with
backoff (honouring the largest ``Retry-After``).  401 and 403 (a bad token)
and other 4xx are permanent: the batch goes to the dead-letter file.

StatsD partials (``statsd_partial``, from ``mode = "partials"``) are the
exception: every partial of one name must reach the same central, which adds
them up.  With several ``urls`` each partial goes to the url its metric name
hashes to (``partial_url``: CRC-32 of the name, modulo the number of urls;
list the urls in the same order on every agent), through a queue of that
url's own, and never fails over: while that central is down its partials
wait here and arrive late, rather than split a name's interval between two
centrals.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Sequence
from typing import Any

import attrs
from twisted.internet import defer
from twisted.python.failure import Failure

from obsd import events
from obsd.codecs.relaywire import decode_event, encode_event
from obsd.config.model import HttpOutputConfig
from obsd.config.schema import Problems, at_least, setting
from obsd.net.tls import check_tls_files
from obsd.outputs.base import OutputContext, PermanentError, SendResult
from obsd.outputs.http import HttpOutput

ACCEPTS = frozenset(events.KINDS)
DEFAULT_KINDS = frozenset(events.KINDS)

#: where the relay input is mounted on central's ``[http]``
EVENTS_PATH = "/api/obsd/v1/events"
USER_AGENT = b"obsd-relay/1"


@attrs.frozen(kw_only=True)
class Config(HttpOutputConfig):
    """``[outputs.relay]``."""

    urls: list[str] = setting(
        factory=list,
        help="central obsd base urls (http:// or https://), tried in order for failover; "
             "StatsD partials go to the url their name hashes to, without failover",
    )
    token: str = setting("", secret=True, help="this agent's bearer token (inputs.relay.tokens)")
    gzip: bool = setting(True, help="gzip each request body")
    ca_file: str = setting("", help="PEM CA certificates that sign central's certificate (https)")
    cert_file: str = setting("", help="PEM client certificate, when central asks for one")
    key_file: str = setting("", help="PEM key of cert_file (may be cert_file itself)")
    connect_timeout: float = setting(
        5.0, check=at_least(0.1), help="seconds to connect to one url",
        client_sees="a url that does not accept a connection within it is given up for the "
                    "next url; the batch stays queued",
    )
    request_timeout: float = setting(
        30.0, check=at_least(0.1), help="seconds one request may take before the next url",
        client_sees="a request taking longer is cancelled and the next url tried; if central had "
                    "taken it, its deduplication drops the retry",
    )
    batch_size: int = setting(1000, check=at_least(1), help="events per request at most")


def check_config(name: str, cfg: Config, whole: Any, problems: Problems) -> None:
    """urls are needed and must be http(s); client cert and key go together."""
    path = f"outputs.{name}"
    if not cfg.urls:
        problems.add(f"{path}.urls", "a relay needs at least one url")
    for i, url in enumerate(cfg.urls):
        if not url.startswith(("http://", "https://")):
            problems.add(f"{path}.urls[{i}]", f"expected an http:// or https:// url, got {url!r}")
    for key, reason in check_tls_files(cfg.ca_file, cfg.cert_file, cfg.key_file):
        problems.add(f"{path}.{key}", reason)


def events_url(base: str) -> bytes:
    """The relay endpoint under a central base url (a full endpoint url is kept)."""
    base = base.rstrip("/")
    if base.endswith(EVENTS_PATH):
        return base.encode()
    return (base + EVENTS_PATH).encode()


def retry_after_seconds(value: bytes | str | None) -> float | None:
    """``Retry-After`` in seconds (the delta form; a date form is ignored)."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    try:
        seconds = float(text.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def partial_url(metric: Any, urls: int) -> int:
    """The index of the url a StatsD partial of ``metric`` goes to (the same on every agent)."""
    return zlib.crc32(str(metric or "").encode("utf-8", "surrogatepass")) % urls


class _PartialsQueue:
    """The destination of the partials whose names hash to one url: no failover."""

    def __init__(self, output: RelayOutput, index: int) -> None:
        self.output = output
        self.index = index
        self.key = f"partials_{index}"

    def send(self, batch: list[bytes]) -> defer.Deferred[SendResult | None]:
        return self.output.send_to(self.index, batch)


class _RetryableError(Exception):
    """One url failed in a way the next url (or a later retry) may not."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class RelayOutput(HttpOutput):
    """POST batches to central; fail over across ``urls``; keep what is not acknowledged."""

    type_name = "relay"
    wants_private = True

    def __init__(
        self, name: str, config: Config, context: OutputContext, http_client: Any = None
    ) -> None:
        self.relay_config = config
        self.urls = [events_url(u) for u in config.urls]
        self._current = 0
        super().__init__(name, config, context)
        self.use_http(context, config, http_client)
        tel = context.telemetry
        self._failovers = tel.counter(f"obsd.output.{name}.failovers")
        self._refused = tel.counter(f"obsd.output.{name}.refused")
        self._headers = {
            b"Content-Type": [b"application/x-ndjson"],
            b"User-Agent": [USER_AGENT],
        }
        if config.token:
            self._headers[b"Authorization"] = [b"Bearer " + config.token.encode()]
        if config.gzip:
            self._headers[b"Content-Encoding"] = [b"gzip"]

    def make_destinations(self) -> Sequence[Any]:
        """Everything in one failover queue; with several urls, partials in one per url."""
        if len(self.urls) < 2:
            return [self]
        return [self, *(_PartialsQueue(self, i) for i in range(len(self.urls)))]

    def destination_for(self, event: dict[str, Any]) -> str:
        if event.get(events.KIND) == events.STATSD_PARTIAL:
            return f"partials_{partial_url(event.get(events.METRIC_NAME), len(self.urls))}"
        return ""

    def encode(self, event: dict[str, Any]) -> bytes:
        return encode_event(event)

    def decode(self, record: bytes) -> Any:
        try:
            event = decode_event(record)
        except ValueError:
            return record.decode("utf-8", "replace")
        # the dead-letter file is JSON: show bytes as text there
        return {k: (v.decode("utf-8", "replace") if isinstance(v, bytes) else v)
                for k, v in event.items()}

    @property
    def current_url(self) -> bytes:
        return self.urls[self._current]

    def send(self, batch: list[bytes]) -> defer.Deferred[SendResult | None]:
        return defer.ensureDeferred(self._send_all(self._body(batch), len(batch)))

    def send_to(self, index: int, batch: list[bytes]) -> defer.Deferred[SendResult | None]:
        """One url only (a partials queue): on failure the queue retries it there."""
        return defer.ensureDeferred(self._send_one(index, self._body(batch), len(batch)))

    def _body(self, batch: list[bytes]) -> bytes:
        body = b"".join(batch)
        return gzip.compress(body, compresslevel=1) if self.relay_config.gzip else body

    async def _send_one(self, index: int, body: bytes, count: int) -> SendResult | None:
        url = self.urls[index]
        try:
            await self._post(url, body)
        except _RetryableError as exc:
            return SendResult(retry=list(range(count)), retry_reason=f"{url.decode()}: {exc}",
                              retry_after=exc.retry_after)
        return None

    async def _send_all(self, body: bytes, count: int) -> SendResult | None:
        reasons: list[str] = []
        retry_after: float | None = None
        for attempt in range(len(self.urls)):
            index = (self._current + attempt) % len(self.urls)
            url = self.urls[index]
            try:
                await self._post(url, body)
            except _RetryableError as exc:
                reasons.append(f"{url.decode()}: {exc}")
                if exc.retry_after is not None:
                    retry_after = max(retry_after or 0.0, exc.retry_after)
                continue
            if index != self._current:
                self._failovers.inc()
                self._current = index
            return None
        if len(self.urls) > 1:
            self._current = (self._current + 1) % len(self.urls)
        return SendResult(
            retry=list(range(count)), retry_reason="; ".join(reasons), retry_after=retry_after
        )

    async def _post(self, url: bytes, body: bytes) -> None:
        try:
            response = await self._http.post(
                url,
                data=body,
                headers=self._headers,
                timeout=self.relay_config.request_timeout,
                reactor=self.context.reactor,
            )
            text = await response.content()
        except PermanentError:
            raise
        except Exception as exc:  # noqa: BLE001 - any network failure: try the next url
            raise _RetryableError(Failure(exc).getErrorMessage() or type(exc).__name__) from None
        code = response.code
        if code == 200:
            return
        detail = text[:200].decode("utf-8", "replace").strip()
        if code in (429, 503) or code == 408 or code >= 500:
            header = response.headers.getRawHeaders(b"retry-after", [None])[0]
            raise _RetryableError(f"HTTP {code} {detail}".strip(), retry_after_seconds(header))
        self._refused.inc()
        self.context.throttle.error(
            f"{self.name}:refused",
            "central refused a relay batch for good",
            output=self.name,
            url=url.decode(),
            status=code,
            detail=detail,
        )
        raise PermanentError(f"HTTP {code} from {url.decode()}: {detail}")



def build_output(
    name: str, config: Config, context: OutputContext, http_client: Any = None
) -> RelayOutput:
    return RelayOutput(name, config, context, http_client)


__all__: Sequence[str] = [
    "ACCEPTS", "DEFAULT_KINDS", "Config", "RelayOutput", "build_output", "check_config",
]
