"""The ``sentry`` output: forward received reports upstream like Relay in proxy mode, and
turn error logs into Sentry events.

Forwarding.  The Sentry input keeps each request's body as received under
``_sentry_raw`` on the first event of the request (the others were part of
it).  That body is POSTed to the upstream's matching endpoint
(``/api/<upstream project>/store/`` or ``/envelope/``) with the same
``Content-Type`` and ``Content-Encoding``, re-authenticated by ``X-Sentry-Auth``
with the upstream key (``sentry_version=7``, the client's ``sentry_client``
kept).  The body is byte for byte the one received, except when it must change:

* an envelope whose header names a ``dsn``: the ``dsn`` authenticates as well,
  and Sentry refuses two keys, so that header line is rewritten to the
  upstream's public DSN; the items stay byte for byte, and the body is
  compressed again with the client's encoding;
  (The ``trace`` header's ``public_key``, which only steers dynamic sampling,
  is left as the client wrote it: rewriting it would re-serialise every
  sentry-sdk envelope.)
* an envelope some of whose item categories the upstream rate-limits: it is
  split into the items that go now and the items that wait (see below).

Errors from logs.  ``log`` events routed here (only through an explicit
``[[routes]]``) at or above ``min_level`` become one-event envelopes, with a
real ``exception`` when they carry a Python traceback
(``obsd.codecs.tracebacks``); identical repeats within ``dedupe_window`` are
counted, not sent, and the next one sent says how many were held back.

Upstream answers.  ``X-Sentry-Rate-Limits`` (on any answer) and a 429's
``Retry-After`` hold back only the named data categories until the time given:
the queue keeps one FIFO per upstream, so the waiting records sit in this
output's hold list and go back to the queue when their time is up; the rest
flow on.  5xx and network errors retry the record through the queue (backoff
with jitter); other 4xx go to the dead-letter file with the upstream's status
and body.  One record is one upstream request.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from treq.content import content as read_content
from twisted.internet import defer
from twisted.python.failure import Failure

import obsd
from obsd import events
from obsd.codecs import sentry as ingest_codec
from obsd.codecs import sentry_body
from obsd.codecs import sentry_encode as codec
from obsd.codecs.sentry import Envelope
from obsd.errors import ParseError
from obsd.outputs.base import OutputContext, SendResult
from obsd.outputs.http import HttpOutput
from obsd.outputs.repeats import Repeats
from obsd.outputs.sentry_config import (
    Config,
    check_config,
    decode_record,
    make_record,
    split_record,
)

ACCEPTS = frozenset({events.ERROR, events.SENTRY, events.LOG})
DEFAULT_KINDS = frozenset({events.ERROR, events.SENTRY})
LISTEN_TYPES: frozenset[str] = frozenset()

RAW_KEY: Final = "_sentry_raw"
REPEATS_KEY: Final = "_sentry_repeats"
ENVELOPE_CONTENT_TYPE: Final = ingest_codec.ENVELOPE_CONTENT_TYPE
CLIENT: Final = f"obsd/{obsd.__version__}"
#: How much of an upstream's refusal goes into the dead-letter reason.
MAX_ANSWER_CHARS: Final = 500
_SAFE_KEY = re.compile(r"[^A-Za-z0-9_-]+")


def _text(value: Any) -> str:
    """A header value kept by the ingest as text (bytes from twisted.web decoded)."""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return "" if value is None else str(value)


class _Upstream:
    """One upstream DSN: a destination with its own queue."""

    def __init__(self, key: str, dsn: codec.Dsn, output: SentryOutput) -> None:
        self.key = key
        self.dsn = dsn
        self._output = output

    def send(self, batch: list[bytes]) -> defer.Deferred[SendResult | None]:
        return self._output.send_to(self, batch)


#: what became of one record: ok, retry (reason, Retry-After), reject (reason), or
#: hold (until when, and what to send then: None for the record itself)
_Outcome = tuple[str, str, float | None, bytes | None]
_OK: _Outcome = ("ok", "", None, None)


class SentryOutput(HttpOutput):
    """Forward Sentry reports upstream; make Sentry events of error logs."""

    type_name = "sentry"
    wants_private = True

    def __init__(
        self, name: str, config: Config, context: OutputContext, http: Any = None
    ) -> None:
        self.sentry_config = config
        self._upstreams: dict[str, _Upstream] = {}
        self._default: _Upstream | None = None
        self._by_project: dict[int, _Upstream] = {}
        self._setup_upstreams(config)
        self.use_http(context, config, http)
        self._limits: dict[str, float] = {}
        self._repeats = Repeats(config.dedupe_window, context.clock)
        super().__init__(name, config, context)
        tel = context.telemetry
        prefix = f"obsd.output.{name}"
        self._prefix = prefix
        self._skipped_no_raw = tel.counter(f"{prefix}.skipped.no_raw")
        self._skipped_unmapped = tel.counter(f"{prefix}.skipped.unmapped")
        self._skipped_kind = tel.counter(f"{prefix}.skipped.kind")
        self._below_level = tel.counter(f"{prefix}.skipped.below_level")
        self._deduplicated = tel.counter(f"{prefix}.deduplicated")
        self._forwarded = tel.counter(f"{prefix}.forwarded")
        self._from_logs = tel.counter(f"{prefix}.from_logs")
        self._split = tel.counter(f"{prefix}.split")
        tel.gauge(f"{prefix}.held", self.held)
        for queue in self.queues.values():
            queue.max_held = config.max_held
        self._min_rank = events.LEVEL_RANK[events.normalise_level(config.min_level)]

    # -- setup -------------------------------------------------------------------

    def _setup_upstreams(self, config: Config) -> None:
        by_text: dict[str, _Upstream] = {}

        def upstream(text: str, key: str) -> _Upstream:
            found = by_text.get(text)
            if found is None:
                dsn = codec.parse_dsn(text)
                found = by_text[text] = _Upstream(key, dsn, self)
                self._upstreams[key] = found
            return found

        if config.dsn:
            self._default = upstream(config.dsn, "default")
        for incoming, text in sorted(config.projects.items()):
            dsn = codec.parse_dsn(text)
            key = _SAFE_KEY.sub("_", f"{dsn.host}_{dsn.project_id}").strip("_")
            while key in self._upstreams and by_text.get(text) is None:
                key += "_"
            self._by_project[int(incoming)] = upstream(text, key)


    def make_destinations(self) -> Sequence[_Upstream]:
        return list(self._upstreams.values())

    def _upstream_for(self, event: dict[str, Any]) -> _Upstream | None:
        raw = event.get(RAW_KEY)
        if isinstance(raw, dict):
            project = raw.get("project_id")
            if isinstance(project, int) and project in self._by_project:
                return self._by_project[project]
        return self._default

    def destination_for(self, event: dict[str, Any]) -> str:
        upstream = self._upstream_for(event)
        assert upstream is not None  # accept() skipped events with none
        return upstream.key

    # -- accepting ---------------------------------------------------------------

    def accept(self, event: dict[str, Any]) -> None:
        """Take forwarded reports and error logs; count and skip the rest."""
        kind = event.get(events.KIND)
        if RAW_KEY in event:
            if self._upstream_for(event) is None:
                self._skipped_unmapped.inc()
                return
            super().accept(event)
            return
        if kind in (events.ERROR, events.SENTRY):
            # sent upstream as part of the request whose first event carries the body
            self._skipped_no_raw.inc()
            return
        if kind != events.LOG:
            self._skipped_kind.inc()
            return
        level = events.normalise_level(event.get(events.LEVEL))
        if events.LEVEL_RANK[level] < self._min_rank:
            self._below_level.inc()
            return
        if self._default is None:
            self._skipped_unmapped.inc()
            return
        repeats = self._repeats.check(event)
        if repeats is None:
            self._deduplicated.inc()
            return
        if repeats:
            event = {**event, REPEATS_KEY: repeats}
        super().accept(event)

    # -- encoding ----------------------------------------------------------------

    def encode(self, event: dict[str, Any]) -> bytes:
        raw = event.get(RAW_KEY)
        if isinstance(raw, dict):
            return self._encode_forward(event, raw)
        return self._encode_log(event)

    def decode(self, record: bytes) -> Any:
        return decode_record(record)

    def _encode_forward(self, event: dict[str, Any], raw: dict[str, Any]) -> bytes:
        upstream = self._upstream_for(event)
        assert upstream is not None
        body = raw["body"]
        if isinstance(body, str):
            body = body.encode("utf-8")
        encoding = _text(raw.get("content_encoding"))
        endpoint = "envelope" if raw.get("endpoint") == "envelope" else "store"
        auth = raw.get("auth") or {}
        header: dict[str, Any] = {
            "endpoint": endpoint,
            "content_type": _text(raw.get("content_type")),
            "content_encoding": encoding,
            "client": _text(auth.get("sentry_client")) or None,
            "project_id": raw.get("project_id"),
            "id": event.get(events.ID),
        }
        if endpoint == "envelope":
            decoded = sentry_body.decode_body(body, encoding, ingest_codec.MAX_ENVELOPE_BYTES)
            envelope = ingest_codec.parse_envelope(decoded)
            header["categories"] = codec.envelope_categories(envelope)
            if envelope.dsn is not None and envelope.dsn != upstream.dsn.public:
                headers = {**envelope.headers, "dsn": upstream.dsn.public}
                body = codec.encode_body(codec.replace_envelope_header(decoded, headers), encoding)
                header["rewritten"] = "dsn"
        else:
            decoded = sentry_body.decode_body(body, encoding, ingest_codec.MAX_EVENT_BYTES)
            try:
                payload = ingest_codec.parse_json(decoded)
            except ingest_codec.SentryRequestError:
                payload = {}
            header["categories"] = [codec.store_category(payload)]
        return make_record(header, body)

    def _encode_log(self, event: dict[str, Any]) -> bytes:
        assert self._default is not None
        payload = codec.log_event_payload(
            event, tag_fields=self.sentry_config.tags, sdk_version=obsd.__version__
        )
        repeats = event.get(REPEATS_KEY)
        if repeats:
            payload.setdefault("extra", {})["obsd_repeats_held_back"] = repeats
        sent_at = datetime.fromtimestamp(self.context.clock.seconds(), UTC).isoformat()
        body = codec.log_event_envelope(payload, self._default.dsn, sent_at)
        header = {
            "endpoint": "envelope",
            "content_type": ENVELOPE_CONTENT_TYPE,
            "content_encoding": "",
            "client": CLIENT,
            "categories": ["error"],
            "id": payload["event_id"],
            "from_log": True,
        }
        self._from_logs.inc()
        return make_record(header, body)

    # -- rate limits -------------------------------------------------------------

    def _limited(self, category: str, now: float) -> bool:
        until = max(self._limits.get(category, 0.0), self._limits.get("", 0.0))
        if category == "internal":  # client reports are never rate limited (Relay)
            return False
        return until > now

    def _apply_limits(self, limits: dict[str, float], now: float) -> None:
        for category, seconds in limits.items():
            self._limits[category] = max(self._limits.get(category, 0.0), now + seconds)

    def _hold_until(self, categories: list[str]) -> float:
        """Count the rate-limited categories; the time the record may go again."""
        now = self.context.clock.seconds()
        tel = self.context.telemetry
        for category in sorted(set(categories)):
            if self._limited(category, now):
                tel.counter(f"{self._prefix}.rate_limited.{category}").inc()
        self._limits = {c: t for c, t in self._limits.items() if t > now}
        return max(
            max(self._limits.get(c, 0.0), self._limits.get("", 0.0)) for c in categories
        )

    def held(self) -> int:
        """Records the queues hold back for upstream rate limits."""
        return sum(queue.held for queue in self.queues.values())

    def _admit(self, record: bytes) -> tuple[bytes | None, tuple[bytes, float] | None]:
        """The part of ``record`` to send now, and the rate-limited rest with its time."""
        header, body = split_record(record)
        categories: list[str] = header.get("categories") or ["default"]
        now = self.context.clock.seconds()
        limited = [self._limited(c, now) for c in categories]
        if not any(limited):
            return record, None
        if all(limited) or header.get("endpoint") != "envelope":
            return None, (record, self._hold_until(categories))
        # some items wait, the others go: split the envelope (the one re-serialisation)
        encoding = header.get("content_encoding") or ""
        decoded = sentry_body.decode_body(body, encoding, ingest_codec.MAX_ENVELOPE_BYTES)
        envelope = ingest_codec.parse_envelope(decoded)
        now_items = [i for i, lim in zip(envelope.items, limited, strict=False) if not lim]
        later_items = [i for i, lim in zip(envelope.items, limited, strict=False) if lim]
        self._split.inc()

        def part(items: list[Any]) -> bytes:
            cats = codec.envelope_categories(Envelope(envelope.headers, items))
            data = codec.encode_envelope(envelope.headers, items)
            return make_record(
                {**header, "categories": cats, "split": True}, codec.encode_body(data, encoding)
            )

        held = part(later_items)
        return part(now_items), (held, self._hold_until(split_record(held)[0]["categories"]))

    # -- sending -----------------------------------------------------------------

    def send_to(self, upstream: _Upstream, batch: list[bytes]) -> defer.Deferred[SendResult | None]:
        """Send each record of ``batch`` as one request; gather what became of each."""
        sends = [self._send_one(upstream, record) for record in batch]
        d: defer.Deferred[list[Any]] = defer.gatherResults(sends, consumeErrors=True)
        d.addCallback(self._outcome)
        return d  # type: ignore[return-value]

    @staticmethod
    def _outcome(outcomes: list[_Outcome]) -> SendResult | None:
        result = SendResult()
        for index, (what, reason, when, replacement) in enumerate(outcomes):
            if what == "retry":
                result.retry.append(index)
                result.retry_reason = reason
                if when is not None:
                    result.retry_after = max(result.retry_after or 0.0, when)
            elif what == "reject":
                result.rejected.append((index, reason))
            elif what == "hold":
                assert when is not None
                result.held.append((index, when, replacement))
        if not result.retry and not result.rejected and not result.held:
            return None
        return result

    def _send_one(self, upstream: _Upstream, record: bytes) -> defer.Deferred[_Outcome]:
        try:
            to_send, later = self._admit(record)
        except ParseError as exc:
            return defer.succeed(("reject", f"cannot split for rate limits: {exc}", None, None))
        if to_send is None:
            assert later is not None
            return defer.succeed(("hold", "", later[1], None))
        header, body = split_record(to_send)
        headers = {
            "Content-Type": header.get("content_type") or "application/json",
            "X-Sentry-Auth": codec.auth_header(
                upstream.dsn.key, header.get("client"), upstream.dsn.secret
            ),
            "User-Agent": header.get("client") or CLIENT,
        }
        if header.get("content_encoding"):
            headers["Content-Encoding"] = header["content_encoding"]
        url = upstream.dsn.url(header.get("endpoint", "envelope"))
        d = self._http.post(
            url,
            data=body,
            headers=headers,
            timeout=self.sentry_config.request_timeout,
            reactor=self.context.reactor,
        )
        d.addCallback(self._answered, to_send, header, later)
        d.addErrback(self._failed)
        return d  # type: ignore[no-any-return]

    def _answered(
        self,
        response: Any,
        record: bytes,
        header: dict[str, Any],
        later: tuple[bytes, float] | None,
    ) -> defer.Deferred[_Outcome]:
        status = int(response.code)
        now = self.context.clock.seconds()

        def first(name: bytes) -> str | None:
            values = response.headers.getRawHeaders(name)
            return values[0].decode("latin-1") if values else None

        limits = codec.rate_limits_from_answer(
            status, first(b"x-sentry-rate-limits"), first(b"retry-after"), now
        )
        self._apply_limits(limits, now)

        def judged(content: bytes) -> _Outcome:
            text = content.decode("utf-8", "replace")[:MAX_ANSWER_CHARS]
            if 200 <= status < 300:
                self._forwarded.inc()
                if later is not None:  # sent what could go; the rest waits in the queue
                    return ("hold", "", later[1], later[0])
                return _OK
            if status == 429:
                categories = header.get("categories") or ["default"]
                if any(self._limited(c, now) for c in categories):
                    return ("hold", "", self._hold_until(categories), record)
                wait = codec.parse_retry_after(first(b"retry-after"), now)
                return ("retry", "upstream answered 429", wait, None)
            if status >= 500 or status == 408:
                retry_after = first(b"retry-after")
                asked = codec.parse_retry_after(retry_after, now) if retry_after else None
                return ("retry", f"upstream answered {status}", asked, None)
            return ("reject", f"upstream answered {status}: {text}", None, None)

        return read_content(response).addCallback(judged)

    @staticmethod
    def _failed(failure: Failure) -> _Outcome:
        reasons = getattr(failure.value, "reasons", None) or []  # ResponseNeverReceived
        if failure.check(defer.CancelledError) or any(
            isinstance(r, Failure) and r.check(defer.CancelledError) for r in reasons
        ):
            return ("retry", "upstream request timed out", None, None)
        return ("retry", failure.getErrorMessage() or repr(failure.value), None, None)

    def health(self) -> dict[str, Any]:
        """The queues' health, plus what waits for upstream rate limits and until when."""
        report = super().health()
        now = self.context.clock.seconds()
        report["held"] = self.held()
        report["rate_limited_until"] = {
            category or "all": until for category, until in self._limits.items() if until > now
        }
        return report



def build_output(name: str, config: Config, context: OutputContext) -> SentryOutput:
    return SentryOutput(name, config, context)


__all__ = [
    "ACCEPTS", "DEFAULT_KINDS", "LISTEN_TYPES", "Config", "SentryOutput", "build_output",
    "check_config", "decode_record", "make_record", "split_record",
]
