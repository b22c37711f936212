"""The ``influxdb`` output: metric points as line protocol to InfluxDB's ``/write`` API.

InfluxDB 1.x serves ``/write``; 2.x and 3.x keep it for compatibility (the
database is then a bucket, and ``token`` authenticates).  Lines are made by
``obsd.codecs.influx_line``; what each answer means for a batch (a refused
line dead-lettered alone, overload retried, a missing database kept queued)
is ``obsd.outputs.writeapi``.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import urlencode

import attrs
from twisted.internet import defer

from obsd import events
from obsd.codecs import influx_line
from obsd.config.model import HttpOutputConfig, MiB, ObsdConfig
from obsd.config.schema import Problems, at_least, setting
from obsd.net.tls import check_tls_files
from obsd.outputs import writeapi
from obsd.outputs.base import OutputContext, SendResult
from obsd.outputs.http import HttpOutput, check_url

ACCEPTS = frozenset({events.METRIC})
DEFAULT_KINDS = frozenset({events.METRIC})


@attrs.frozen(kw_only=True)
class Config(HttpOutputConfig):
    """``[outputs.influxdb]``."""

    url: str = setting("http://127.0.0.1:8086", help="InfluxDB's base url (http or https)")
    database: str = setting("obsd", help="database (1.x) or bucket (2.x, 3.x) written to")
    retention_policy: str = setting("", help='retention policy; "" = the database\'s default')
    precision: Literal["s", "ms", "us", "ns"] = setting(
        "s", help="timestamp precision of the lines (StatsD flushes are whole seconds)"
    )
    username: str = setting("", help="user (1.x auth), sent as basic auth")
    password: str = setting("", secret=True, help="password of username")
    token: str = setting("", secret=True, help="an API token (Authorization: Token ...)")
    tag_fields: list[str] = setting(
        factory=lambda: ["host"],
        help="event fields written as tags beside the metric's own tags and metric_type",
    )
    gzip: bool = setting(True, help="gzip request bodies (Content-Encoding: gzip)")
    ca_file: str = setting("", help="PEM bundle of CAs to trust for an https url")
    batch_size: int = setting(5000, check=at_least(1), help="lines per write at most")
    batch_bytes: int = setting(
        4 * MiB, check=at_least(1024), help="line-protocol bytes per write at most"
    )


def check_config(name: str, cfg: Config, whole: ObsdConfig, problems: Problems) -> None:
    """The url, the database name, auth and TLS files are checked before the daemon starts."""
    path = f"outputs.{name}"
    check_url(problems, f"{path}.url", cfg.url)
    if not cfg.database:
        problems.add(f"{path}.database", "a database (or bucket) name is needed")
    if cfg.token and cfg.username:
        problems.add(f"{path}.token", "give either token or username/password, not both")
    if cfg.password and not cfg.username:
        problems.add(f"{path}.password", "a password needs a username")
    for key, reason in check_tls_files(cfg.ca_file):
        problems.add(f"{path}.{key}", reason)


def _error_text(body: bytes) -> str:
    """InfluxDB's ``{"error": "..."}``, or the start of the body."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        return str(parsed["error"])
    return body[:300].decode("utf-8", "replace").strip()


class InfluxOutput(HttpOutput):
    """Metric events as InfluxDB points, written in batches to one server."""

    type_name = "influxdb"

    def __init__(
        self, name: str, config: Config, context: OutputContext, http_client: Any = None
    ) -> None:
        self.influx_config = config
        self.use_http(context, config, http_client)
        query = {"db": config.database, "precision": config.precision}
        if config.retention_policy:
            query["rp"] = config.retention_policy
        self._url = config.url.rstrip("/") + "/write?" + urlencode(query)
        self._headers = self._make_headers(config)
        self._tag_fields = tuple(config.tag_fields)
        super().__init__(name, config, context)
        tel = context.telemetry
        self._nonfinite = tel.counter(f"obsd.output.{name}.skipped_nonfinite")
        self._requests = tel.counter(f"obsd.output.{name}.requests")

    @staticmethod
    def _make_headers(config: Config) -> dict[bytes, list[bytes]]:
        headers = {b"Content-Type": [b"text/plain; charset=utf-8"]}
        if config.gzip:
            headers[b"Content-Encoding"] = [b"gzip"]
        if config.token:
            headers[b"Authorization"] = [b"Token " + config.token.encode()]
        elif config.username:
            pair = f"{config.username}:{config.password}".encode()
            headers[b"Authorization"] = [b"Basic " + base64.b64encode(pair)]
        return headers

    # -- encoding ----------------------------------------------------------------

    def encode(self, event: dict[str, Any]) -> bytes:
        line = influx_line.metric_line(
            event, self._tag_fields, self.influx_config.precision, self.context.clock.seconds()
        )
        return line.encode("utf-8")

    def route(self, event: dict[str, Any]) -> tuple[str, bytes] | None:
        """Skip NaN and infinities (counted, as Graphite does); encode the rest."""
        try:
            return "", self.encode(event)
        except influx_line.NotFinite:
            self._nonfinite.inc()
            return None

    def decode(self, record: bytes) -> Any:
        return record.decode("utf-8", "replace").rstrip("\n")

    # -- sending ----------------------------------------------------------------

    def send(self, batch: list[bytes]) -> defer.Deferred[SendResult | None]:
        return self.send_halving(batch, self._post)

    @defer.inlineCallbacks
    def _post(self, batch: Sequence[bytes]) -> Any:
        body = b"".join(batch)
        if self.influx_config.gzip:
            body = gzip.compress(body, compresslevel=1)
        self._requests.inc()
        code, text, wait = yield writeapi.post(
            self._http, self._url, body, self._headers,
            self.influx_config.request_timeout, self.context.reactor,
        )
        return writeapi.judge(code, f"{code} {_error_text(text)}", len(batch), wait)



def build_output(name: str, config: Config, context: OutputContext) -> InfluxOutput:
    return InfluxOutput(name, config, context)
