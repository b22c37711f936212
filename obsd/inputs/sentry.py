"""Sentry ingest on ``[http]``: what raven and sentry-sdk send, answered as Sentry Relay does.

``/api/<project_id>/store/``, ``/api/store/`` and ``/api/<project_id>/envelope/``
take reports; ``/api/relay/healthcheck/live/`` and ``/ready/`` answer probes.
Parsing is ``obsd.codecs.sentry`` (pure); this module reads the body within the
size limit, maps ``SentryRequestError`` to Relay's status and JSON body, scrubs
secrets from the fields and hands one event per report to the ingest logger.
The body as received rides along once per request under ``_sentry_raw`` so the
Sentry and relay outputs can forward it byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from twisted.application.service import IService
from twisted.web.server import NOT_DONE_YET, Request

from obsd.codecs import sentry as codec
from obsd.codecs import sentry_auth, sentry_body, sentry_fields
from obsd.codecs.scrub import DEFAULT_SCRUB_KEYS, Scrubber, make_scrubber
from obsd.contracts import InputContext
from obsd.events import ERROR, ID
from obsd.inputs.sentry_config import Config, ProjectConfig, ScrubConfig, check_config
from obsd.ops.telemetry import Counter
from obsd.twistedtypes import Resource, Service

LISTEN_TYPES: frozenset[str] = frozenset()

#: Headers browser SDKs may send (the CORS preflight allows them).
_CORS_ALLOW_HEADERS = (
    b"x-sentry-auth, x-requested-with, origin, accept, content-type, content-encoding, "
    b"authentication, authorization, sentry-trace, baggage"
)
_CORS_EXPOSE_HEADERS = b"x-sentry-error, x-sentry-rate-limits, retry-after"
#: Envelope items that are one event each, held to ``max_event_bytes`` (Relay's max_event_size).
_EVENT_ITEMS = frozenset({"event", "transaction", "security", "raw_security", "user_report"})


@attrs.define
class _Counters:
    requests: Counter
    accepted: Counter
    events: Counter
    bytes: Counter
    shed: Counter
    rejected: Callable[[int], Counter]


def _auth_headers(request: Request) -> dict[str, str]:
    """The two headers auth may come in (``parse_auth`` reads no others)."""
    found = {}
    for name in (b"x-sentry-auth", b"authorization"):
        values = request.requestHeaders.getRawHeaders(name)
        if values:
            found[name.decode()] = values[0].decode("latin-1")
    return found


def _header(request: Request, name: bytes) -> str | None:
    value = request.requestHeaders.getRawHeaders(name)
    return value[0].decode("latin-1") if value else None


def _query(request: Request) -> dict[str, list[str]]:
    return {
        name.decode("latin-1"): [v.decode("latin-1") for v in values]
        for name, values in (request.args or {}).items()
    }


class _Answer(Exception):  # noqa: N818 - not an error: a finished answer
    """A finished answer other than an error (used to leave the handler early)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


class SentryIngestResource(Resource):
    """``/api``: the Sentry store, envelope and health endpoints.

    Not a leaf, so resources mounted deeper (the relay input at
    ``/api/obsd/...``) keep working; every other segment is Sentry's.
    """

    def __init__(
        self,
        config: Config,
        context: InputContext,
        *,
        scrubber: Scrubber | None = None,
    ) -> None:
        super().__init__()
        self._config = config
        self._ingest = context.ingest
        self._flow = context.flow_control
        # durability = "sync": answer 200 only once the events are on disk
        durability = getattr(getattr(context.config, "daemon", None), "durability", "async")
        self._wait_durable = context.wait_durable if durability == "sync" else None
        self._throttle = context.throttle
        self._scrubber = scrubber or make_scrubber(
            config.scrub.keys, defaults=config.scrub.defaults
        )
        self._projects: dict[int, frozenset[str]] | None = (
            {p.id: frozenset(p.keys) for p in config.projects} if config.projects else None
        )
        prefix = f"obsd.input.{context.name}"
        telemetry = context.telemetry
        self._count = _Counters(
            requests=telemetry.counter(f"{prefix}.requests"),
            accepted=telemetry.counter(f"{prefix}.accepted"),
            events=telemetry.counter(f"{prefix}.events"),
            bytes=telemetry.counter(f"{prefix}.bytes"),
            shed=telemetry.counter(f"{prefix}.shed"),
            rejected=lambda status: telemetry.counter(f"{prefix}.rejected.{status}"),
        )
        self._leaf = _SentryEndpoint(self)

    def getChild(self, path: bytes, request: Request) -> Resource:
        return self._leaf

    def max_body_bytes(self, path: bytes, headers: Any) -> int:
        """An envelope (by path or content type) may be larger than a store body."""
        content_type = (headers.getRawHeaders(b"content-type") or [b""])[0]
        envelope = path.rstrip(b"/").endswith(b"/envelope") or content_type.partition(b";")[
            0
        ].strip().decode("latin-1") == codec.ENVELOPE_CONTENT_TYPE
        return self._config.max_envelope_bytes if envelope else self._config.max_event_bytes

    def render(self, request: Request) -> bytes | int:
        return self._leaf.render(request)

    # --- one request ----------------------------------------------------

    def handle(self, request: Request, segments: list[str]) -> bytes | int:
        """Answer one request to ``/api/<segments>``."""
        self._cors(request)
        method = request.method
        try:
            route = self._route(segments)
            if method == b"OPTIONS":
                request.setResponseCode(200)
                request.setHeader(b"allow", b"GET, POST, OPTIONS")
                request.setHeader(b"content-length", b"0")
                return b""
            if route[0] == "health":
                if method not in (b"GET", b"HEAD"):
                    raise _Answer(405, {"detail": "method not allowed"})
                if route[1] == "ready" and self._flow.congested:
                    self._retry_after(request)
                    raise _Answer(503, {"is_healthy": False})
                raise _Answer(200, {"is_healthy": True})
            if method != b"POST":
                raise _Answer(405, {"detail": "method not allowed"})
            self._count.requests.inc()
            if self._flow.congested:
                self._count.shed.inc()
                self._retry_after(request)
                status = self._config.shed_status
                raise codec.SentryRequestError(
                    status,
                    "obsd is shedding load" if status == 503 else "rate limited",
                    f"outputs congested: {', '.join(self._flow.congested_queues())}",
                )
            answer = self._ingest_request(request, route[0], route[1])
            self._count.accepted.inc()
            if self._wait_durable is not None:
                return self._answer_when_durable(request, answer)
            raise _Answer(200, answer)
        except _Answer as answer:
            return self._json(request, answer.status, answer.body)
        except codec.SentryRequestError as exc:
            self._count.rejected(exc.status).inc()
            if exc.status < 500 and exc.status != 429:
                self._throttle.warning(
                    f"sentry:{exc.status}:{exc.detail}",
                    "sentry request refused",
                    status=exc.status,
                    detail=exc.detail,
                    reason=str(exc),
                    path=request.path.decode("latin-1", "replace"),
                    client=_header(request, b"user-agent"),
                )
            request.setHeader(b"x-sentry-error", exc.detail.encode("utf-8", "replace"))
            return self._json(request, exc.status, exc.body())
        except Exception as exc:  # noqa: BLE001 - a bug must not cost the client a Relay answer
            self._count.rejected(500).inc()
            self._throttle.error(
                "sentry:500",
                "sentry request failed inside obsd",
                error=repr(exc),
                path=request.path.decode("latin-1", "replace"),
            )
            return self._json(request, 500, {"detail": "internal server error"})

    def _answer_when_durable(self, request: Request, answer: dict[str, Any]) -> int:
        """Answer 200 once every output has the events on disk (503 if the disk fails)."""
        assert self._wait_durable is not None

        def durable(_: object) -> None:
            if not request.finished and not request._disconnected:
                request.write(self._json(request, 200, answer))
                request.finish()

        def failed(failure: Any) -> None:
            self._count.rejected(503).inc()
            if not request.finished and not request._disconnected:
                self._retry_after(request)
                request.write(self._json(request, 503, {"detail": "events not on disk yet"}))
                request.finish()

        self._wait_durable().addCallbacks(durable, failed)
        done_later: int = NOT_DONE_YET
        return done_later

    @staticmethod
    def _route(segments: list[str]) -> tuple[str, str | None]:
        """``(endpoint, project id)`` or ``("health", live|ready)``; 404 otherwise."""
        parts = [s for s in segments if s]
        if len(parts) == 2 and parts[1] in ("store", "envelope"):
            return parts[1], parts[0]
        if parts == ["store"]:
            return "store", None
        if parts[:2] == ["relay", "healthcheck"] and parts[2:] in (["live"], ["ready"]):
            return "health", parts[2]
        raise _Answer(404, {"detail": "not found"})

    def _authorize_before_decoding(
        self, headers: dict[str, str], query: dict[str, list[str]], path_project: str | None
    ) -> None:
        """Refuse a bad key in the header or query before a byte of the body is decoded.

        An envelope may carry its auth in its own ``dsn`` header, so a request
        with no other auth must be decoded first; one that names a key and a
        project in its URL is judged at once (the full check runs again after).
        """
        if path_project is None:
            return
        try:
            early = sentry_auth.parse_auth(headers, query)
        except codec.SentryRequestError as exc:
            if exc.detail == "missing authorization information":
                return
            raise
        sentry_auth.authorize(early, path_project, self._projects)

    def _ingest_request(
        self, request: Request, endpoint: str, path_project: str | None
    ) -> dict[str, Any]:
        headers = _auth_headers(request)
        content_type = (_header(request, b"content-type") or "").partition(";")[0].strip()
        is_envelope = endpoint == "envelope" or content_type == codec.ENVELOPE_CONTENT_TYPE
        limit = self._config.max_envelope_bytes if is_envelope else self._config.max_event_bytes
        body = self._read_body(request, limit)
        encoding = _header(request, b"content-encoding")
        query = _query(request)
        fields: list[dict[str, Any]]
        if is_envelope:
            if path_project is not None and not path_project.isdigit():
                raise codec.SentryRequestError(400, "bad project path parameter")
            self._authorize_before_decoding(headers, query, path_project)
            envelope = codec.parse_envelope(
                sentry_body.decode_body(body, encoding, limit), self._config.max_envelope_items
            )
            self._check_items(envelope)
            auth = sentry_auth.parse_auth(headers, query, envelope.dsn)
            project_id = sentry_auth.authorize(auth, path_project, self._projects)
            fields = sentry_fields.envelope_event_fields(envelope, project_id)
            answer_id = envelope.event_id or next(
                (f[ID] for f in fields if f.get("kind") == ERROR and ID in f), None
            )
        else:
            auth = sentry_auth.parse_auth(headers, query)
            project_id = sentry_auth.authorize(auth, path_project, self._projects)
            payload = codec.parse_json(sentry_body.decode_body(body, encoding, limit))
            if payload.get("type") == "transaction":
                item = codec.EnvelopeItem({"type": "transaction"}, json.dumps(payload).encode())
                fields = [sentry_fields.item_event_fields(item, {}, project_id)]
            else:
                fields = [sentry_fields.error_event_fields(payload, project_id)]
            answer_id = fields[0].get(ID)
        raw = {
            "body": body,
            "content_type": content_type or None,
            "content_encoding": encoding,
            "endpoint": "envelope" if is_envelope else "store",
            "project_id": project_id,
            "auth": {
                "sentry_key": auth.key,
                "sentry_version": auth.version,
                "sentry_client": auth.client or _header(request, b"user-agent"),
            },
        }
        self._emit(fields, raw)
        return {"id": answer_id} if answer_id else {}

    def _check_items(self, envelope: codec.Envelope) -> None:
        """An event or transaction item over ``max_event_bytes`` refuses the envelope, as Relay."""
        limit = self._config.max_event_bytes
        for item in envelope.items:
            if item.type in _EVENT_ITEMS and len(item.payload) > limit:
                raise codec.SentryRequestError(
                    413,
                    "request body exceeded the size limit",
                    f"{item.type} item over {limit} bytes",
                )

    def _read_body(self, request: Request, limit: int) -> bytes:
        """The body as received, refused with 413 past ``limit`` (before reading it)."""
        length = _header(request, b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > limit:
            raise codec.SentryRequestError(
                413, "request body exceeded the size limit", f"limit is {limit} bytes"
            )
        content = request.content
        if content is None:
            return b""
        content.seek(0)
        body: bytes = content.read(limit + 1)
        self._count.bytes.inc(len(body))
        if len(body) > limit:
            raise codec.SentryRequestError(
                413, "request body exceeded the size limit", f"limit is {limit} bytes"
            )
        return body

    def _emit(self, fields: list[dict[str, Any]], raw: dict[str, Any]) -> None:
        scrub = self._scrubber.scrub
        ingest = self._ingest
        for i, one in enumerate(fields):
            event = scrub(one)
            if i == 0:
                event["_sentry_raw"] = raw
            if event.get("kind") == ERROR:
                ingest.error(event)
            else:
                ingest.sentry(event)
        self._count.events.inc(len(fields))

    # --- answers --------------------------------------------------------

    def _retry_after(self, request: Request) -> None:
        request.setHeader(b"retry-after", str(self._flow.retry_after).encode())

    def _cors(self, request: Request) -> None:
        if _header(request, b"origin") is None and request.method != b"OPTIONS":
            return
        origin = self._config.cors_origin
        if origin == "*":
            origin = _header(request, b"origin") or "*"
        request.setHeader(b"access-control-allow-origin", origin.encode("latin-1", "replace"))
        request.setHeader(b"access-control-allow-methods", b"GET, POST, OPTIONS")
        request.setHeader(b"access-control-allow-headers", _CORS_ALLOW_HEADERS)
        request.setHeader(b"access-control-expose-headers", _CORS_EXPOSE_HEADERS)
        request.setHeader(b"access-control-max-age", b"3600")
        request.setHeader(b"vary", b"Origin")

    @staticmethod
    def _json(request: Request, status: int, body: Mapping[str, Any]) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(body, separators=(",", ":")).encode()


class _SentryEndpoint(Resource):
    """The leaf every ``/api/...`` segment not mounted by another input reaches."""

    isLeaf = True

    def __init__(self, parent: SentryIngestResource) -> None:
        super().__init__()
        self._parent = parent

    def render(self, request: Request) -> bytes | int:
        # prepath ends with "api" (at /api itself) or the first segment after it
        prepath = [s.decode("utf-8", "replace") for s in request.prepath or ()]
        after_api = prepath[prepath.index("api") + 1 :] if "api" in prepath else []
        segments = after_api + [s.decode("utf-8", "replace") for s in request.postpath or ()]
        return self._parent.handle(request, segments)


def build_input(name: str, config: Config, context: InputContext) -> IService:
    """Mount the ingest resource at ``/api`` on the shared HTTP site."""
    context.http.mount(("api",), SentryIngestResource(config, context))
    service = Service()
    service.setName(name)
    return service


__all__ = [
    "DEFAULT_SCRUB_KEYS",
    "LISTEN_TYPES",
    "Config",
    "ProjectConfig",
    "ScrubConfig",
    "SentryIngestResource",
    "build_input",
    "check_config",
]
