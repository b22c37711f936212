"""The ``otlp`` input: OpenTelemetry's OTLP/HTTP on a listener of its own (4318).

``POST /v1/logs``, ``/v1/metrics`` and ``/v1/traces`` take protobuf
(``application/x-protobuf``) or JSON (``application/json``) bodies, gzipped or
not; that is where every OpenTelemetry SDK sends by default.  Parsing and
mapping are ``obsd.codecs.otlp``, ``otlp_metrics`` and ``otlp_traces`` (pure):
log records become ``log`` events, metric points ``metric`` events (cumulative
sums as per-export increases, reset-aware), spans ``span`` events and recorded
exceptions ``error`` events the Sentry output forwards as issues.

Answers follow the OTLP/HTTP spec: 200 with the ``Export*ServiceResponse`` in
the request's encoding (``partial_success`` says how many items were refused
and why), 400 for a body that cannot be read, 413 past ``max_body_bytes``
(checked against ``Content-Length`` before reading), 415 for another content
type, 503 with ``Retry-After`` while outputs are congested; errors carry a
``google.rpc.Status``.  A large request is handed on ``events_per_turn`` events
per reactor turn and answered when the last is handed on, so one request never
holds the reactor for long.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import attrs
from twisted.application.service import IService
from twisted.web.pages import notFound
from twisted.web.server import NOT_DONE_YET, Request

from obsd.codecs import otlp as codec
from obsd.codecs.otlp_metrics import CumulativeState, MetricConverter
from obsd.codecs.otlp_traces import span_events
from obsd.config.model import ListeningInputConfig
from obsd.config.schema import at_least, setting
from obsd.contracts import InputContext
from obsd.net.endpoints import STREAM_TYPES
from obsd.net.httpguard import HttpGuard, HttpLimits
from obsd.net.web import make_site
from obsd.twistedtypes import MultiService, Resource

LISTEN_TYPES = STREAM_TYPES
MiB = 1024 * 1024
SIGNALS = ("logs", "metrics", "traces")


@attrs.frozen(kw_only=True)
class Config(ListeningInputConfig):
    """``[inputs.otlp]``."""

    listen: list[str] = setting(
        factory=lambda: ["tcp:4318:interface=127.0.0.1"],
        help="stream endpoint strings (OTLP/HTTP's port is 4318)",
    )
    max_body_bytes: int = setting(
        8 * MiB,
        check=at_least(1024),
        help="a body (or its gunzipped form) past this gets 413",
        client_sees="413 with a google.rpc.Status; SDKs drop that batch (413 is not retried)",
    )
    max_items_per_request: int = setting(
        50_000,
        check=at_least(1),
        help="log records, metric data points or spans in one request at most",
        client_sees="413 with a google.rpc.Status naming the count; nothing of the request "
                    "is taken (SDKs send 512 per batch by default)",
    )
    max_series: int = setting(
        100_000,
        check=at_least(1),
        help="cumulative series whose last value is kept (for increases); oldest forgotten",
        client_sees="nothing: a forgotten series counts its whole value once when it returns",
    )
    events_per_turn: int = setting(
        1000, check=at_least(1), help="events handed on per reactor turn for a large request"
    )
    shed_status: Literal[503, 429] = setting(
        503, help="the status answered while outputs are congested (with Retry-After)"
    )


class OtlpReceiver:
    """What the three endpoints share: converters, counters, the ingest logger."""

    def __init__(self, name: str, config: Config, context: InputContext) -> None:
        self.name = name
        self.config = config
        self.context = context
        self.ingest = context.ingest
        self.state = CumulativeState(config.max_series)
        self.metrics = MetricConverter(self.state)
        tel = context.telemetry
        self.telemetry = tel
        self.prefix = f"obsd.input.{name}."
        self.requests = tel.counter(self.prefix + "requests")
        self.bytes = tel.counter(self.prefix + "bytes")
        self.shed = tel.counter(self.prefix + "shed")
        tel.gauge(self.prefix + "cumulative_series", lambda: len(self.state))
        tel.gauge(self.prefix + "cumulative_resets", lambda: self.state.resets)
        tel.gauge(self.prefix + "cumulative_evicted", lambda: self.state.evicted)
        tel.gauge(self.prefix + "points_skipped", lambda: self.metrics.skipped)
        durability = getattr(getattr(context.config, "daemon", None), "durability", "async")
        self.wait_durable = context.wait_durable if durability == "sync" else None

    def counter(self, what: str) -> Any:
        return self.telemetry.counter(self.prefix + what)

    def convert(self, signal: str, request: Any, tally: codec.Tally) -> Iterator[Any]:
        if signal == "logs":
            return codec.log_events(request, tally)
        if signal == "metrics":
            return self.metrics.events(request, tally)
        return span_events(request, tally)


class OtlpSignalResource(Resource):
    """``POST /v1/<signal>``."""

    isLeaf = True

    def __init__(self, receiver: OtlpReceiver, signal: str) -> None:
        super().__init__()
        self.receiver = receiver
        self.signal = signal
        self._items = receiver.counter(f"{signal}.items")
        self._refused = receiver.counter(f"{signal}.refused_items")

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"allow", b"POST")
        return self._error(request, 405, "POST OTLP requests here", codec.JSON)

    def render_POST(self, request: Request) -> Any:
        receiver = self.receiver
        receiver.requests.inc()
        encoding = codec.JSON
        try:
            encoding = codec.media_type(_header(request, b"content-type"))
            flow = receiver.context.flow_control
            if flow.congested:
                receiver.shed.inc()
                request.setHeader(b"retry-after", str(flow.retry_after).encode())
                status = receiver.config.shed_status
                raise codec.OtlpRequestError(status, "obsd is shedding load; retry later")
            body = self._read_body(request)
            data = codec.decode_body(
                body, _header(request, b"content-encoding"), receiver.config.max_body_bytes
            )
            message = codec.parse_request(self.signal, data, encoding)
            count = codec.count_items(self.signal, message)
            if count > receiver.config.max_items_per_request:
                raise codec.OtlpRequestError(
                    413,
                    f"{count} items in one request; at most "
                    f"{receiver.config.max_items_per_request} are taken",
                )
        except codec.OtlpRequestError as exc:
            if exc.status not in (429, 503):
                receiver.context.throttle.warning(
                    f"input:{receiver.name}:{exc.status}",
                    "OTLP request refused",
                    input=receiver.name,
                    signal=self.signal,
                    status=exc.status,
                    reason=str(exc),
                    client=_header(request, b"user-agent"),
                )
            return self._error(request, exc.status, str(exc), encoding)
        tally = codec.Tally()
        items = receiver.convert(self.signal, message, tally)
        _Emission(self, request, items, tally, encoding).run()
        return NOT_DONE_YET

    def _read_body(self, request: Request) -> bytes:
        limit = self.receiver.config.max_body_bytes
        length = _header(request, b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > limit:
            raise codec.OtlpRequestError(413, f"body over {limit} bytes")
        content = request.content
        if content is None:
            return b""
        content.seek(0)
        body: bytes = content.read(limit + 1)
        self.receiver.bytes.inc(len(body))
        if len(body) > limit:
            raise codec.OtlpRequestError(413, f"body over {limit} bytes")
        return body

    def _error(self, request: Request, status: int, reason: str, encoding: str) -> bytes:
        self.receiver.counter(f"rejected.{status}").inc()
        request.setResponseCode(status)
        request.setHeader(b"content-type", encoding.encode())
        return codec.encode_status(status, reason, encoding)

    def finish(self, request: Request, tally: codec.Tally, emitted: int, encoding: str) -> None:
        """Answer 200 with the response (and partial success when items were refused)."""
        self._items.inc(emitted)
        if tally.rejected:
            self._refused.inc(tally.rejected)
            receiver = self.receiver
            receiver.context.throttle.warning(
                f"input:{receiver.name}:partial:{self.signal}",
                "OTLP items refused",
                input=receiver.name,
                signal=self.signal,
                rejected=tally.rejected,
                reason=tally.reason,
            )
        body = codec.encode_response(self.signal, encoding, tally.rejected, tally.reason)
        if request.finished or getattr(request, "_disconnected", False):
            return
        request.setResponseCode(200)
        request.setHeader(b"content-type", encoding.encode())
        request.setHeader(b"content-length", str(len(body)).encode())  # not chunked
        request.write(body)
        request.finish()


class _Emission:
    """Hands one request's events on, ``events_per_turn`` at a time, then answers."""

    def __init__(
        self,
        endpoint: OtlpSignalResource,
        request: Request,
        items: Iterator[Any],
        tally: codec.Tally,
        encoding: str,
    ) -> None:
        self.endpoint = endpoint
        self.request = request
        self.items = items
        self.tally = tally
        self.encoding = encoding
        self.emitted = 0
        receiver = endpoint.receiver
        self.reactor = receiver.context.reactor
        self.budget = receiver.config.events_per_turn
        ingest = receiver.ingest
        self.emit = {
            "log": ingest.log, "metric": ingest.metric, "span": ingest.span, "error": ingest.error
        }

    def run(self) -> None:
        emit = self.emit
        count = 0
        try:
            for kind, fields in self.items:
                emit[kind](fields)
                count += 1
                if count >= self.budget:
                    self.emitted += count
                    self.reactor.callLater(0, self.run)
                    return
        except Exception as exc:  # noqa: BLE001 - a bug must still get the client an answer
            self._failed(exc)
            return
        self.emitted += count
        self._done()

    def _failed(self, exc: Exception) -> None:
        receiver = self.endpoint.receiver
        receiver.context.throttle.error(
            f"input:{receiver.name}:500",
            "OTLP request failed inside obsd",
            input=receiver.name,
            signal=self.endpoint.signal,
            error=repr(exc),
        )
        if not self.request.finished:
            self.request.write(self.endpoint._error(self.request, 500, "internal error",
                                                    self.encoding))
            self.request.finish()

    def _done(self) -> None:
        wait = self.endpoint.receiver.wait_durable
        answer = self.endpoint.finish
        if wait is None:
            answer(self.request, self.tally, self.emitted, self.encoding)
            return

        def failed(_: Any) -> None:
            if not self.request.finished:
                self.request.write(
                    self.endpoint._error(self.request, 503, "events not on disk yet", self.encoding)
                )
                self.request.finish()

        wait().addCallbacks(
            lambda _: answer(self.request, self.tally, self.emitted, self.encoding), failed
        )


def _header(request: Request, name: bytes) -> str | None:
    value = request.requestHeaders.getRawHeaders(name)
    return value[0].decode("latin-1") if value else None


class _Tree(Resource):
    """A resource whose unknown children are a plain 404."""

    def getChild(self, path: bytes, request: Request) -> Resource:
        return notFound()  # type: ignore[return-value]

    def render(self, request: Request) -> bytes:
        page: bytes = notFound().render(request)
        return page


class OtlpRoot(_Tree):
    """``/v1/logs``, ``/v1/metrics``, ``/v1/traces``; 404 elsewhere."""

    def __init__(self, receiver: OtlpReceiver) -> None:
        super().__init__()
        v1 = _Tree()
        for signal in SIGNALS:
            v1.putChild(signal.encode(), OtlpSignalResource(receiver, signal))
        self.putChild(b"v1", v1)
        self._receiver = receiver

    def max_body_bytes(self, path: bytes, headers: Any) -> int:
        """Every signal takes bodies up to the input's ``max_body_bytes``."""
        return self._receiver.config.max_body_bytes


def build_input(name: str, config: Config, context: InputContext) -> IService:
    """The OTLP/HTTP input: its own site on each ``listen`` endpoint."""
    receiver = OtlpReceiver(name, config, context)
    guard = HttpGuard(
        HttpLimits.of(context.config.http), context.telemetry, context.throttle,
        f"obsd.input.{name}.http.",
    )
    site = make_site(OtlpRoot(receiver), context.reactor, guard)
    service = MultiService()
    service.setName(name)
    for listener in context.listener_services(list(config.listen), LISTEN_TYPES, factory=site):
        listener.setServiceParent(service)
    return service
