"""The ``prometheus`` output: every metric obsd aggregates, for Prometheus to scrape.

It stands where ``statsd_exporter`` stands: StatsD counters become counters
cumulative since obsd started (``NAME_total``), gauges and sets gauges,
timers summaries (the last flush's median, 90th… percentiles as quantiles, in
seconds as statsd_exporter gives them, with cumulative ``_sum`` and
``_count``); other metric events (derived metrics, obsd's own, Graphite and
OTLP points) are gauges.  Names and labels are mapped as statsd_exporter maps
them (``obsd.codecs.prometheus_text``).  A series not updated for
``stale_after`` seconds is dropped, so a host or a name that went away stops
being scraped.  Served on ``[http]`` at ``path``, apart from obsd's own
``/metrics``.

Nothing is sent anywhere, so there is no delivery queue to fill: an event
updates the series at once (``route`` keeps it out of the queue).
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from twisted.web.server import NOT_DONE_YET, Request

from obsd import events
from obsd.codecs import prometheus_text as text
from obsd.config.model import ObsdConfig, OutputConfig
from obsd.config.schema import Problems, at_least, setting
from obsd.outputs.base import Output, OutputContext, SendResult
from obsd.outputs.promseries import Series, SeriesBook, add_series, series_to_json
from obsd.twistedtypes import Resource

ACCEPTS = frozenset({events.METRIC})
DEFAULT_KINDS = frozenset({events.METRIC})
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


@attrs.frozen(kw_only=True)
class MappingConfig:
    """One ``[[outputs.NAME.mappings]]``: a glob of a dotted name, the name and labels it gets."""

    match: str = setting(help='a dotted glob, "*" one part: "myapp.*.requests"')
    name: str = setting(help='the Prometheus name; "$1"… are what the stars matched')
    labels: dict[str, str] = setting(factory=dict, help='labels, e.g. { host = "$1" }')


@attrs.frozen(kw_only=True)
class Config(OutputConfig):
    """``[outputs.prometheus]``."""

    path: str = setting("/metrics/data", help="where [http] serves the scrape")
    stale_after: float = setting(
        300.0, check=at_least(1.0), help="seconds without an update before a series is dropped",
        client_sees="a series not updated for this long disappears from the scrape",
    )
    mappings: list[MappingConfig] = setting(
        factory=list, help="statsd_exporter-style glob mappings, the first that matches wins"
    )


def check_config(name: str, cfg: Config, whole: ObsdConfig, problems: Problems) -> None:
    """The path is absolute and not obsd's own; mappings compile."""
    path = f"outputs.{name}"
    if not cfg.path.startswith("/") or cfg.path.rstrip("/") in ("", "/metrics", "/status"):
        problems.add(f"{path}.path", f"expected an absolute path other than obsd's own, "
                                     f"got {cfg.path!r}")
    for i, mapping in enumerate(cfg.mappings):
        if not mapping.match or not mapping.name:
            problems.add(f"{path}.mappings[{i}]", "a mapping needs match and name")


class PrometheusOutput(Output):
    """Keeps one series per Prometheus name and labels; renders them on each scrape."""

    type_name = "prometheus"

    def __init__(self, name: str, config: Config, context: OutputContext) -> None:
        self.prom_config = config
        self.book = SeriesBook(config.mappings)
        super().__init__(name, config, context)
        tel = context.telemetry
        self._scrapes = tel.counter(f"obsd.output.{name}.scrapes")
        self._stale = tel.counter(f"obsd.output.{name}.stale_dropped")
        tel.gauge(f"obsd.output.{name}.series", lambda: float(len(self.book.series)))
        if context.http is not None:
            segments = tuple(p for p in config.path.split("/") if p)
            self.scrape = ScrapeResource(self)
            context.http.mount(segments, self.scrape, replace=True)

    def send(self, batch: list[bytes]) -> Any:  # pragma: no cover - route() never queues
        return SendResult()

    def route(self, event: dict[str, Any]) -> tuple[str, bytes] | None:
        """Update the series now; nothing goes to the queue."""
        self.book.observe(event, self.context.clock.seconds())
        return None

    def fresh_series(self) -> dict[tuple[str, text.Labels], Series]:
        """This process's series, stale ones dropped first."""
        cutoff = self.context.clock.seconds() - self.prom_config.stale_after
        self._stale.inc(self.book.drop_stale(cutoff))
        return self.book.series

    def render(self, book: dict[tuple[str, text.Labels], Series] | None = None) -> bytes:
        """The scrape body: this process's series, or ``book`` (every worker's)."""
        self._scrapes.inc()
        if book is None:
            book = self.fresh_series()
        families: dict[str, list[tuple[text.Labels, Series]]] = {}
        for (name, labels), series in sorted(book.items()):
            families.setdefault(name, []).append((labels, series))
        out: list[str] = []
        for name, members in families.items():
            kind = members[0][1].kind
            samples: list[text.Sample] = []
            for labels, series in members:
                if kind == "summary":
                    samples.extend(
                        text.Sample("", labels, (("quantile", q),), v)
                        for q, v in sorted(series.quantiles.items(), key=lambda i: float(i[0]))
                    )
                    samples.append(text.Sample("_sum", labels, (), series.total / 1000.0))
                    samples.append(text.Sample("_count", labels, (), series.count))
                else:
                    samples.append(text.Sample("", labels, (), series.value))
            help_text = "StatsD timer, seconds" if kind == "summary" else f"obsd {kind}"
            out.append(text.render_family(name, kind, help_text, samples))
        return "".join(out).encode("utf-8")


class ScrapeResource(Resource):
    """``GET`` renders the output's series in the text format.

    With ``[daemon] workers`` a scrape reaches one worker: it adds the other
    workers' series (``?local=json`` on their private ports) to its own.
    """

    isLeaf = True

    def __init__(self, output: PrometheusOutput) -> None:
        super().__init__()
        self.output = output
        #: ``obsd.ops.peers.Peers`` of the other workers, or None
        self.peers: Any = None

    def join_workers(self, peers: Any) -> None:
        self.peers = peers

    def render_GET(self, request: Request) -> Any:
        local = (request.args or {}).get(b"local")
        if local == [b"json"]:
            request.setHeader(b"content-type", b"application/json")
            return json.dumps(series_to_json(self.output.fresh_series())).encode()
        request.setHeader(b"content-type", CONTENT_TYPE)
        if self.peers is None or local:
            return self.output.render()
        mine = dict(self.output.fresh_series())
        d = self.peers.gather(f"{self.output.prom_config.path}?local=json")

        def answer(found: list[tuple[int, Any]]) -> None:
            book = mine
            for _index, theirs in found:
                if theirs is not None:
                    book = add_series(book, theirs)
            if not request.finished and not getattr(request, "_disconnected", False):
                request.write(self.output.render(book))
                request.finish()

        d.addCallback(answer)
        return NOT_DONE_YET


def build_output(name: str, config: Config, context: OutputContext) -> PrometheusOutput:
    return PrometheusOutput(name, config, context)
