"""The ``remote_write`` output: metric events pushed to Prometheus's remote-write 1.0 API.

For Prometheus (``--web.enable-remote-write-receiver``), Mimir, Thanos,
VictoriaMetrics and anything else that takes remote write.  The series and
their meaning are the scrape output's (``obsd.outputs.promseries``): StatsD
counters cumulative ``_total`` counters, timers summaries in seconds, names
and mappings as statsd_exporter has them; each event sends the samples it
changed, stamped with the event's time.  Messages are encoded by
``obsd.codecs.remote_write``; answers are judged by ``obsd.outputs.writeapi``
(a refused sample is dead-lettered alone with the server's reason; 429 and
5xx retried; 401/403/404 kept queued).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import attrs
from twisted.internet import defer

import obsd
from obsd import events
from obsd.codecs import remote_write as wire
from obsd.config.model import HttpOutputConfig, ObsdConfig
from obsd.config.schema import Problems, at_least, setting
from obsd.net.tls import check_tls_files
from obsd.outputs import writeapi
from obsd.outputs.base import OutputContext, SendResult
from obsd.outputs.http import HttpOutput, check_url
from obsd.outputs.prometheus import MappingConfig
from obsd.outputs.promseries import SeriesBook

ACCEPTS = frozenset({events.METRIC})
DEFAULT_KINDS = frozenset({events.METRIC})


@attrs.frozen(kw_only=True)
class Config(HttpOutputConfig):
    """``[outputs.remote_write]``."""

    url: str = setting(
        "http://127.0.0.1:9090/api/v1/write", help="the remote-write endpoint (http or https)"
    )
    username: str = setting("", help="basic auth user")
    password: str = setting("", secret=True, help="password of username")
    bearer_token: str = setting("", secret=True, help="Authorization: Bearer ...")
    ca_file: str = setting("", help="PEM bundle of CAs to trust for an https url")
    mappings: list[MappingConfig] = setting(
        factory=list, help="statsd_exporter-style glob mappings, as the prometheus output's"
    )
    batch_size: int = setting(2000, check=at_least(1), help="samples per request at most")


def check_config(name: str, cfg: Config, whole: ObsdConfig, problems: Problems) -> None:
    """The url, auth and TLS files are checked before the daemon starts."""
    path = f"outputs.{name}"
    check_url(problems, f"{path}.url", cfg.url, "http(s)://host[:port]/path")
    if cfg.bearer_token and cfg.username:
        problems.add(f"{path}.bearer_token", "give either bearer_token or username, not both")
    if cfg.password and not cfg.username:
        problems.add(f"{path}.password", "a password needs a username")
    for i, mapping in enumerate(cfg.mappings):
        if not mapping.match or not mapping.name:
            problems.add(f"{path}.mappings[{i}]", "a mapping needs match and name")
    for key, reason in check_tls_files(cfg.ca_file):
        problems.add(f"{path}.{key}", reason)


class RemoteWriteOutput(HttpOutput):
    """Each metric event's changed samples, queued as encoded series, sent as WriteRequests."""

    type_name = "remote_write"

    def __init__(
        self, name: str, config: Config, context: OutputContext, http_client: Any = None
    ) -> None:
        self.rw_config = config
        self.book = SeriesBook(config.mappings)
        self.use_http(context, config, http_client)
        self._headers = dict(wire.HEADERS)
        self._headers[b"User-Agent"] = [f"obsd/{obsd.__version__}".encode()]
        if config.bearer_token:
            self._headers[b"Authorization"] = [b"Bearer " + config.bearer_token.encode()]
        elif config.username:
            pair = f"{config.username}:{config.password}".encode()
            self._headers[b"Authorization"] = [b"Basic " + base64.b64encode(pair)]
        super().__init__(name, config, context)
        tel = context.telemetry
        self._requests = tel.counter(f"obsd.output.{name}.requests")

    def accept(self, event: dict[str, Any]) -> None:
        """One event may change several samples (none for a rate): each is queued."""
        self._received.inc()
        try:
            records = self.encode_all(event)
        except Exception as exc:  # noqa: BLE001 - one bad event must not stop the others
            self._encode_failed(event, exc)
            return
        assert self._single is not None
        for record in records:
            self._single.put(record)

    def encode_all(self, event: dict[str, Any]) -> list[bytes]:
        now = self.context.clock.seconds()
        when = event.get(events.TIMESTAMP)
        stamp = int((float(when) if isinstance(when, int | float) else now) * 1000)
        return [
            wire.encode_series(point.name, point.labels, point.value, stamp)
            for point in self.book.observe(event, now)
        ]

    def encode(self, event: dict[str, Any]) -> bytes:
        return b"".join(self.encode_all(event))

    def decode(self, record: bytes) -> Any:
        return record.hex()

    def send(self, batch: list[bytes]) -> defer.Deferred[SendResult | None]:
        return self.send_halving(batch, self._post)

    @defer.inlineCallbacks
    def _post(self, batch: Sequence[bytes]) -> Any:
        self._requests.inc()
        body = wire.compress(b"".join(batch))
        code, text, wait = yield writeapi.post(
            self._http, self.rw_config.url, body, self._headers,
            self.rw_config.request_timeout, self.context.reactor,
        )
        reason = f"{code} {text[:300].decode('utf-8', 'replace').strip()}"
        return writeapi.judge(code, reason, len(batch), wait)



def build_output(name: str, config: Config, context: OutputContext) -> RemoteWriteOutput:
    return RemoteWriteOutput(name, config, context)
