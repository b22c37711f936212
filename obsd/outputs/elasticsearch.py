"""The ``elasticsearch`` output: ``_bulk`` writes over a persistent treq connection pool.

Documents are shaped by ``obsd.codecs.esbulk`` (``@timestamp``, ``_id`` = the
event's ``id``, an index named from the event's own time); this module only
posts batches, reads the answers and decides what is retried.  The shared
``DeliveryQueue`` does the batching, the cap on requests in flight, backoff
with jitter, health and the dead-letter file.

Failure semantics, per bulk request:

* network errors, timeouts and 5xx answers mark that node down for a while
  and the same batch is tried at once on the next node in ``urls``; when
  every node failed, the whole batch goes back to the queue (backoff);
* a whole-request 429 sends the batch back to the queue, honouring
  ``Retry-After``; 401, 403 and 404 too (a configuration problem: the
  output stays stuck, visible in health and the logs, and loses nothing);
* a whole-request 400 or 413 is bisected until the offending document stands
  alone, which is then dead-lettered;
* otherwise every item is judged by ``classify_bulk_response``: retried items
  (429, 5xx, ``cluster_block_exception``) go back to the queue, rejected
  ones (mapping conflicts, other 4xx) to the dead-letter file with the
  status and Elasticsearch's reason.
"""

from __future__ import annotations

import base64
import json
import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import treq
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall

from obsd import events
from obsd.codecs import esbulk
from obsd.config.model import HttpOutputConfig, MiB, ObsdConfig
from obsd.config.schema import Problems, at_least, setting
from obsd.net.httpclient import retry_after
from obsd.net.tls import check_tls_files
from obsd.ops.log import get_logger
from obsd.outputs.base import OutputContext, SendResult, backoff_delay
from obsd.outputs.bisect import WholeBatchRefused
from obsd.outputs.http import HttpOutput

ACCEPTS = frozenset(events.KINDS)
DEFAULT_KINDS = frozenset({events.LOG, events.ERROR, events.SPAN})

#: How long a node that failed on the network (or with a 5xx) is skipped.
NODE_DOWN_SECONDS = 5.0


@attrs.frozen(kw_only=True)
class Config(HttpOutputConfig):
    """``[outputs.elasticsearch]``."""

    urls: list[str] = setting(
        factory=lambda: ["http://127.0.0.1:9200"],
        help="nodes, used round-robin; a failing one is skipped for a while",
    )
    index: str = setting(
        esbulk.DEFAULT_INDEX,
        help="index name: a strftime pattern on the event's own UTC time (a data stream's name)",
    )
    data_stream: bool = setting(False, help="write with op_type create into a data stream")
    batch_size: int = setting(1000, check=at_least(1), help="documents per bulk request at most")
    batch_bytes: int = setting(
        5 * MiB, check=at_least(1024), help="NDJSON bytes per bulk request at most"
    )
    batch_timeout: float = setting(
        1.0, check=at_least(0), help="seconds the first event of a batch waits for more"
    )
    max_in_flight: int = setting(2, check=at_least(1), help="bulk requests at once")
    gzip: bool = setting(False, help="gzip request bodies (Content-Encoding: gzip)")
    gzip_level: int = setting(1, check=at_least(1), help="zlib level 1 (fast) .. 9 (small)")
    username: str = setting("", help="basic auth user")
    password: str = setting("", secret=True, help="basic auth password")
    api_key: str = setting(
        "", secret=True, help="an API key, base64 of id:key (Authorization: ApiKey ...)"
    )
    ca_file: str = setting("", help="PEM bundle of CAs to trust for https urls")
    template: bool | str = setting(
        True, help="install obsd's index template at start; or a JSON file's template; false"
    )
    template_name: str = setting("", help='the template\'s name; "" = named after index ("obsd")')
    request_timeout: float = setting(
        30.0, check=at_least(0.1), help="seconds a bulk request may take",
        client_sees="a bulk request taking longer is cancelled; the node is skipped for 5 s and "
                    "the batch goes to the next node",
    )
    connect_timeout: float = setting(
        5.0, check=at_least(0.1), help="seconds to connect",
        client_sees="a node that does not accept a connection within it is skipped for 5 s; the "
                    "batch goes to the next node",
    )


def check_config(name: str, cfg: Config, whole: ObsdConfig, problems: Problems) -> None:
    """URLs, auth and template file are checked before the daemon starts."""
    path = f"outputs.{name}"
    if not cfg.urls:
        problems.add(f"{path}.urls", "needs at least one url")
    for i, url in enumerate(cfg.urls):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.add(f"{path}.urls[{i}]", f"expected http(s)://host[:port], got {url!r}")
    if cfg.api_key and cfg.username:
        problems.add(f"{path}.api_key", "give either api_key or username/password, not both")
    if cfg.password and not cfg.username:
        problems.add(f"{path}.password", "a password needs a username")
    if cfg.data_stream and "%" in cfg.index:
        problems.add(f"{path}.index", "a data stream has one name: no % directives")
    if cfg.gzip_level > 9:
        problems.add(f"{path}.gzip_level", f"must be at most 9, got {cfg.gzip_level}")
    for key, reason in check_tls_files(cfg.ca_file):
        problems.add(f"{path}.{key}", reason)
    if isinstance(cfg.template, str):
        try:
            _load_template_file(cfg.template)
        except (OSError, ValueError) as exc:
            problems.add(f"{path}.template", f"cannot load template {cfg.template!r}: {exc}")


def _load_template_file(path: str) -> dict[str, Any]:
    body = json.loads(Path(path).read_text())
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    return body


def default_template_name(index: str) -> str:
    """Name the template after the indices it matches (``obsd-%Y.%m.%d`` gives ``obsd``).

    Outputs (and obsd hosts) writing the same indices then share one template
    instead of refusing each other's: two templates whose patterns overlap at
    the same priority are a 400.
    """
    glob = esbulk.index_glob(index).replace("*", "")
    return re.sub(r"[^a-z0-9_.-]+", "-", glob).strip("-._") or "obsd"


class BulkRequestError(Exception):
    """A bulk request got no usable answer from any node."""


class _Node:
    __slots__ = ("down_until", "url")

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.down_until = 0.0


def _error_text(body: bytes) -> str:
    """``type: reason`` of a whole-request error body, or its start."""
    try:
        parsed = json.loads(body)
        error = parsed.get("error") if isinstance(parsed, dict) else None
    except ValueError:
        error = None
    if isinstance(error, dict):
        return f"{error.get('type', '')}: {error.get('reason', '')}"
    if isinstance(error, str):
        return error
    return body[:200].decode("utf-8", "replace")


class ElasticsearchOutput(HttpOutput):
    """Bulk-index events into one Elasticsearch (or OpenSearch) cluster."""

    type_name = "elasticsearch"

    def __init__(
        self,
        name: str,
        config: Config,
        context: OutputContext,
        http_client: Any = None,
    ) -> None:
        self.es_config = config
        self._nodes = [_Node(url) for url in config.urls]
        self._next = 0
        self.use_http(context, config, http_client)
        self._headers = self._make_headers(config)
        self._pattern = config.index
        self._data_stream = config.data_stream
        self._template_body = self._make_template(config)
        self.template_name = config.template_name or default_template_name(config.index)
        self.template_installed = self._template_body is None
        self._template_failures = 0
        self._template_timer: IDelayedCall | None = None
        super().__init__(name, config, context)
        tel = context.telemetry
        self._requests = tel.counter(f"obsd.output.{name}.requests")
        self._failovers = tel.counter(f"obsd.output.{name}.failovers")
        self._log = get_logger(f"obsd.output.{name}")

    @staticmethod
    def _make_headers(config: Config) -> dict[bytes | str, list[bytes | str]]:
        headers: dict[bytes | str, list[bytes | str]] = {
            b"Content-Type": [b"application/x-ndjson"]
        }
        if config.gzip:
            headers[b"Content-Encoding"] = [b"gzip"]
        if config.api_key:
            headers[b"Authorization"] = [b"ApiKey " + config.api_key.encode()]
        elif config.username:
            token = base64.b64encode(f"{config.username}:{config.password}".encode())
            headers[b"Authorization"] = [b"Basic " + token]
        return headers

    @staticmethod
    def _make_template(config: Config) -> dict[str, Any] | None:
        if config.template is False:
            return None
        if isinstance(config.template, str):
            return _load_template_file(config.template)
        return esbulk.index_template(config.index, data_stream=config.data_stream)

    # -- encoding ----------------------------------------------------------------

    def encode(self, event: dict[str, Any]) -> bytes:
        when = esbulk.event_time(event)
        index = esbulk.index_name(self._pattern, when)
        return esbulk.encode_bulk_lines(event, index, self._data_stream, when)

    def decode(self, record: bytes) -> Any:
        """The dead-letter file shows the document and the index it was meant for."""
        action, _, source = record.partition(b"\n")
        try:
            meta = next(iter(json.loads(action).values()))
            return {"_index": meta.get("_index"), **json.loads(source)}
        except (ValueError, AttributeError, StopIteration):
            return record.decode("utf-8", "replace")

    # -- the index template ---------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        if not self.template_installed:
            self._ensure_template().addErrback(lambda _: None)

    def _ensure_template(self) -> defer.Deferred[None]:
        """Install the template unless it is; a PUT is idempotent, so callers need not share."""
        if self.template_installed:
            return defer.succeed(None)
        return self._put_template()

    @defer.inlineCallbacks
    def _put_template(self) -> Any:
        path = f"/_index_template/{self.template_name}"
        body = json.dumps(self._template_body).encode()
        try:
            response, text = yield self._request(
                "PUT", path, body, {b"Content-Type": [b"application/json"]}
            )
            if response.code >= 300:
                raise BulkRequestError(
                    f"template {self.template_name}: {response.code} {_error_text(text)}"
                )
        except Exception as exc:
            self._template_failed(exc)
            raise
        if not self.template_installed:
            self.template_installed = True
            self._log.info("index template installed", output=self.name,
                           template=self.template_name)
        self._template_failures = 0
        if self._template_timer is not None and self._template_timer.active():
            self._template_timer.cancel()
        self._template_timer = None
        return None

    def _template_failed(self, exc: BaseException) -> None:
        self._template_failures += 1
        delay = backoff_delay(
            self._template_failures,
            self.config.retry_initial,
            self.config.retry_max,
            self.context.random,
        )
        self.context.throttle.warning(
            f"{self.name}:template",
            "cannot install the index template; documents wait for it",
            output=self.name,
            template=self.template_name,
            error=str(exc),
            retry_in=round(delay, 3),
        )
        if self.running and (self._template_timer is None or not self._template_timer.active()):
            self._template_timer = self.context.clock.callLater(delay, self._template_retry)

    def _template_retry(self) -> None:
        self._template_timer = None
        self._ensure_template().addErrback(lambda _: None)

    # -- sending ----------------------------------------------------------------

    def send(self, batch: list[bytes]) -> defer.Deferred[SendResult | None]:
        if not self.template_installed:
            d: defer.Deferred[Any] = self._ensure_template()
            d.addCallback(lambda _: self._send_bulk(batch))
            return d
        return self._send_bulk(batch)

    def _send_bulk(self, batch: Sequence[bytes]) -> defer.Deferred[SendResult | None]:
        return self.send_halving(batch, self._post)

    @defer.inlineCallbacks
    def _post(self, batch: Sequence[bytes]) -> Any:
        body = b"".join(batch)
        if self.es_config.gzip:
            compressor = zlib.compressobj(self.es_config.gzip_level, zlib.DEFLATED, 31)
            body = compressor.compress(body) + compressor.flush()
        response, text = yield self._request("POST", "/_bulk", body, self._headers)
        code = response.code
        count = len(batch)
        if code == 429 or code >= 500:
            reason = f"{code} {_error_text(text)}"
            return SendResult(
                retry=list(range(count)), retry_reason=reason, retry_after=retry_after(response)
            )
        if code in (400, 413):
            raise WholeBatchRefused(f"{code} {_error_text(text)}")
        if code >= 300:
            # 401, 403, 404...: a configuration problem; keep the events and say so
            raise BulkRequestError(f"{code} {_error_text(text)}")
        return self._judge(text, count)

    @staticmethod
    def _judge(body: bytes, count: int) -> SendResult | None:
        retry: list[int] = []
        rejected: list[tuple[int, str]] = []
        retry_reason = ""
        for i, outcome in enumerate(esbulk.classify_bulk_response(body, count)):
            if outcome.result == esbulk.OK:
                continue
            why = f"{outcome.status} {outcome.reason}"
            if outcome.result == esbulk.RETRY:
                retry.append(i)
                retry_reason = retry_reason or why
            else:
                rejected.append((i, why))
        if not retry and not rejected:
            return None
        return SendResult(retry=retry, rejected=rejected, retry_reason=retry_reason)

    def _pick_nodes(self) -> list[_Node]:
        """Every node, healthy ones first in round-robin order, then the soonest back."""
        count = len(self._nodes)
        start = self._next
        self._next = (start + 1) % count
        ordered = [self._nodes[(start + i) % count] for i in range(count)]
        now = self.context.clock.seconds()
        healthy = [n for n in ordered if n.down_until <= now]
        down = sorted((n for n in ordered if n.down_until > now), key=lambda n: n.down_until)
        return healthy + down

    @defer.inlineCallbacks
    def _request(
        self, method: str, path: str, body: bytes, headers: Any
    ) -> Any:
        """Send to one node after another until one answers below 500; return (response, body)."""
        errors: list[str] = []
        nodes = self._pick_nodes()
        for attempt, node in enumerate(nodes):
            if attempt:
                self._failovers.inc()
            self._requests.inc()
            try:
                response = yield self._http.request(
                    method,
                    node.url + path,
                    data=body,
                    headers=headers,
                    timeout=self.es_config.request_timeout,
                    reactor=self.context.reactor,
                )
                text = yield treq.content(response)
            except defer.CancelledError:
                if not self.running:
                    raise
                errors.append(f"{node.url}: timed out after {self.es_config.request_timeout}s")
                self._mark_down(node)
                continue
            except Exception as exc:  # noqa: BLE001 - any network failure means: next node
                errors.append(f"{node.url}: {_describe(exc)}")
                self._mark_down(node)
                continue
            if response.code >= 500 and attempt + 1 < len(nodes):
                errors.append(f"{node.url}: {response.code} {_error_text(text)}")
                self._mark_down(node)
                continue
            node.down_until = 0.0
            return response, text
        raise BulkRequestError("; ".join(errors))

    def _mark_down(self, node: _Node) -> None:
        node.down_until = self.context.clock.seconds() + NODE_DOWN_SECONDS

    # -- stopping -------------------------------------------------------------------

    def stopService(self) -> defer.Deferred[Any]:
        if self._template_timer is not None and self._template_timer.active():
            self._template_timer.cancel()
        self._template_timer = None
        return super().stopService()


def _describe(exc: BaseException) -> str:
    reasons = getattr(exc, "reasons", None)
    if reasons:  # ResponseNeverReceived and friends wrap Failures
        return "; ".join(r.getErrorMessage() for r in reasons)
    return str(exc) or type(exc).__name__


def build_output(name: str, config: Config, context: OutputContext) -> ElasticsearchOutput:
    return ElasticsearchOutput(name, config, context)
