"""The ``relay`` input: central obsd's end of the agent -> central relay.

Mounted on ``[http]`` at ``POST /api/obsd/v1/events``.  A request carries a
batch of events as (gzip) NDJSON, ``obsd.codecs.relaywire``, with a bearer
token that names the agent.  The answer is 200 only once every event of the
batch is on this obsd's output queues (with ``[daemon] durability = "sync"``,
on disk), so the agent may forget the batch; any other answer makes the agent
keep it and send it again (``durability = "sync"`` makes the answer wait for
``InputContext.wait_durable()``).  Retries therefore bring duplicates, and they are
dropped here by the events' ``id``: ids seen within ``dedupe_window`` seconds
(at most ``dedupe_size`` of them, least recently seen forgotten first) are
counted as ``duplicates`` and not passed on.  The ids are saved in
``data_dir/relay-NAME-seen.txt`` on stop and read back on start, so a restart
does not forget them; after a crash they are lost, and a batch that was in
flight then may come twice.

Relayed events keep their ``id``, ``timestamp``, ``host`` and ``source``: they
go through an ingest logger with no bound source.  Metric points arrive as the
agent's aggregator flushed them and are passed on as they are, never
aggregated again, except that an agent's own numbers (``obsd.*``) are named by
its host (``obsd.<host>.*``) so agents do not overwrite each other.  StatsD
partials (``statsd_partial``, from agents in ``mode = "partials"``) go on to
the statsd input with ``merge_partials = true``.
"""

from __future__ import annotations

import hmac
import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import attrs
from twisted.application.service import IService
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request

from obsd import events
from obsd.codecs.relaywire import decode_body
from obsd.config.model import InputConfig
from obsd.config.schema import Problems, at_least, setting
from obsd.contracts import InputContext
from obsd.errors import ParseError
from obsd.inputs.relayed import relayed_batch_emitter
from obsd.twistedtypes import Resource, Service

LISTEN_TYPES: frozenset[str] = frozenset()
MOUNT = ("api", "obsd", "v1", "events")
MiB = 1024 * 1024


@attrs.frozen(kw_only=True)
class AgentToken:
    """One agent: a name (for counters and logs) and its secret token."""

    name: str = setting("", help="the agent's name, in counters and logs")
    token: str = setting("", secret=True, help="the agent's bearer token")


@attrs.frozen(kw_only=True)
class Config(InputConfig):
    """``[inputs.relay]``."""

    tokens: list[AgentToken] = setting(
        factory=list, help="the agents allowed in: [{name, token}] (token_file works too)"
    )
    dedupe_window: float = setting(
        600.0, check=at_least(0), help="seconds an event id is remembered to drop duplicates",
        client_sees="an agent retrying a batch central took within this window gets 200 and its "
                    "events are counted as duplicates; after it they pass again",
    )
    dedupe_size: int = setting(
        1_000_000, check=at_least(0), help="event ids remembered at most (least recent go first)",
        client_sees="ids beyond it are forgotten, least recently seen first; a retry of those "
                    "passes again",
    )
    max_body_bytes: int = setting(
        64 * MiB, check=at_least(1024), help="inflated request body size at most",
        client_sees="400, and nothing of the batch is taken",
    )
    max_events: int = setting(
        100_000, check=at_least(1), help="events in one request at most",
        client_sees="400, and nothing of the batch is taken",
    )


def check_config(name: str, cfg: Config, whole: Any, problems: Problems) -> None:
    """Every agent needs a token; names and tokens must be unique."""
    path = f"inputs.{name}.tokens"
    if not cfg.tokens:
        problems.add(path, "no tokens: no agent could send anything")
    seen_names: set[str] = set()
    seen_tokens: set[str] = set()
    for i, agent in enumerate(cfg.tokens):
        if not agent.token:
            problems.add(f"{path}[{i}].token", "empty token")
        if agent.name in seen_names:
            problems.add(f"{path}[{i}].name", f"agent name {agent.name!r} given twice")
        if agent.token and agent.token in seen_tokens:
            problems.add(f"{path}[{i}].token", "the same token is given to two agents")
        seen_names.add(agent.name)
        seen_tokens.add(agent.token)


class SeenIds:
    """The ids seen lately: bounded by count and age (an LRU keyed by id)."""

    def __init__(self, window: float, size: int, now: Any) -> None:
        self._window = window
        self._size = size
        self._now = now
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def save(self, path: Path) -> None:
        """Write the ids still within the window, so a restart keeps dropping them."""
        self.expire()
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        with temporary.open("w") as handle:
            for event_id, when in self._seen.items():
                handle.write(f"{when!r} {event_id}\n")
        os.replace(temporary, path)

    def load(self, path: Path) -> int:
        """Read ids saved by ``save``; a missing or damaged file gives what it can."""
        try:
            text = path.read_text()
        except OSError:
            return 0
        loaded = 0
        for line in text.splitlines():
            when_text, _, event_id = line.partition(" ")
            try:
                when = float(when_text)
            except ValueError:
                continue
            if event_id and event_id not in self._seen:
                self._seen[event_id] = when
                loaded += 1
        self._seen = OrderedDict(sorted(self._seen.items(), key=lambda item: item[1]))
        while len(self._seen) > self._size:
            self._seen.popitem(last=False)
        self.expire()
        return loaded

    def expire(self) -> None:
        """Forget ids older than the window (oldest are at the head)."""
        limit = self._now() - self._window
        seen = self._seen
        while seen:
            oldest = next(iter(seen.values()))
            if oldest >= limit:
                break
            seen.popitem(last=False)

    def seen(self, event_id: str) -> bool:
        """Whether ``event_id`` was seen within the window."""
        when = self._seen.get(event_id)
        return when is not None and when >= self._now() - self._window

    def add(self, event_id: str) -> None:
        if self._size == 0 or self._window == 0:
            return
        self._seen[event_id] = self._now()
        self._seen.move_to_end(event_id)
        while len(self._seen) > self._size:
            self._seen.popitem(last=False)


class RelayResource(Resource):
    """``POST /api/obsd/v1/events``: authenticate, decode, drop duplicates, ingest."""

    isLeaf = True

    def __init__(self, name: str, config: Config, context: InputContext) -> None:
        super().__init__()
        self.name = name
        self.config = config
        self.context = context
        self.ingest = context.make_ingest()
        self._hand_on_many = relayed_batch_emitter(self.ingest, name)
        self.seen = SeenIds(config.dedupe_window, config.dedupe_size, context.reactor.seconds)
        self._tokens = [(a.token.encode(), a.name) for a in config.tokens if a.token]
        tel = context.telemetry
        prefix = f"obsd.input.{name}"
        self._requests = tel.counter(f"{prefix}.requests")
        self._received = tel.counter(f"{prefix}.received")
        self._duplicates = tel.counter(f"{prefix}.duplicates")
        self._unauthorized = tel.counter(f"{prefix}.unauthorized")
        self._bad = tel.counter(f"{prefix}.bad_requests")
        self._congested = tel.counter(f"{prefix}.congested")
        self._no_id = tel.counter(f"{prefix}.no_id")
        self._prefix = prefix
        tel.gauge(f"{prefix}.dedupe_ids", lambda: len(self.seen))

    def agent_for(self, request: Request) -> str | None:
        """The agent named by the request's bearer token, or None."""
        header = request.getHeader(b"authorization") or b""
        if isinstance(header, str):
            header = header.encode("latin-1")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not token:
            return None
        token = token.strip()
        found = None
        for known, name in self._tokens:  # compare with every token: no early exit timing
            if hmac.compare_digest(known, token):
                found = name
        return found

    def _answer(self, request: Request, code: int, doc: dict[str, Any]) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(doc).encode() + b"\n"

    def max_body_bytes(self, path: bytes, headers: Any) -> int:
        """The HTTP site refuses a larger body before reading it."""
        return self.config.max_body_bytes

    def render_POST(self, request: Request) -> bytes | int:
        self._requests.inc()
        agent = self.agent_for(request)
        if agent is None:
            self._unauthorized.inc()
            self.context.throttle.warning(
                f"{self.name}:unauthorized",
                "relay request with a missing or unknown token refused",
                input=self.name,
                peer=str(request.getClientAddress()),
            )
            request.setHeader(b"www-authenticate", b'Bearer realm="obsd"')
            return self._answer(request, 401, {"error": "unknown or missing bearer token"})
        flow = self.context.flow_control
        if flow.congested:
            self._congested.inc()
            request.setHeader(b"retry-after", str(flow.retry_after).encode())
            doc = {"error": "congested", "retry_after": flow.retry_after}
            return self._answer(request, 503, doc)
        encoding = (request.getHeader(b"content-encoding") or b"").strip().lower()
        if encoding not in (b"", b"identity", b"gzip"):
            self._bad.inc()
            return self._answer(request, 415, {"error": f"unsupported encoding {encoding!r}"})
        assert request.content is not None
        body = request.content.read(self.config.max_body_bytes + 1)
        try:
            if len(body) > self.config.max_body_bytes:
                raise ParseError(f"body is larger than {self.config.max_body_bytes} bytes")
            batch = decode_body(
                body,
                gzipped=encoding == b"gzip",
                max_bytes=self.config.max_body_bytes,
                max_events=self.config.max_events,
            )
        except ParseError as exc:
            self._bad.inc()
            self.context.throttle.warning(
                f"{self.name}:bad", "relay request refused", input=self.name, agent=agent,
                reason=str(exc),
            )
            return self._answer(request, 400, {"error": str(exc)})
        accepted, duplicates = self.ingest_batch(batch)
        self.context.telemetry.counter(f"{self._prefix}.agents.{agent}.events").inc(accepted)
        doc = {"accepted": accepted, "duplicates": duplicates}
        wait_durable = getattr(self.context, "wait_durable", None)
        if wait_durable is None or not accepted:
            return self._answer(request, 200, doc)
        # durability = "sync": the answer waits until the batch is on disk
        immediate: list[Any] = []
        waiting = [False]
        gone: list[bool] = []

        def settled(result: Any) -> None:
            if not waiting[0]:
                immediate.append(result)
            elif not gone:
                request.write(self._durable_answer(request, result, doc))
                request.finish()

        wait_durable().addBoth(settled)
        if immediate:
            return self._durable_answer(request, immediate[0], doc)
        waiting[0] = True
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        return NOT_DONE_YET

    def _durable_answer(self, request: Request, result: Any, doc: dict[str, Any]) -> bytes:
        if isinstance(result, Failure):
            self.context.throttle.error(
                f"{self.name}:durable", "relay batch could not be made durable",
                input=self.name, error=result.getErrorMessage(),
            )
            return self._answer(request, 500, {"error": "not durable"})
        return self._answer(request, 200, doc)

    def ingest_batch(self, batch: list[dict[str, Any]]) -> tuple[int, int]:
        """Hand each new event to the chain by its kind; count and skip duplicates."""
        seen = self.seen
        seen.expire()
        duplicates = 0
        fresh: list[dict[str, Any]] = []
        ids: dict[str, None] = {}  # in order, and a repeat within the batch is a duplicate
        for event in batch:
            event_id = event.get(events.ID)
            if isinstance(event_id, str) and event_id:
                if event_id in ids or seen.seen(event_id):
                    duplicates += 1
                    continue
                ids[event_id] = None
            else:
                event.pop(events.ID, None)
                self._no_id.inc()
            fresh.append(event)
        self._hand_on_many(fresh)  # the chain, the router and the queues: one pass
        for event_id in ids:
            seen.add(event_id)
        accepted = len(fresh)
        self._received.inc(accepted)
        self._duplicates.inc(duplicates)
        return accepted, duplicates


class RelayInputService(Service):
    """Keeps the dedupe ids across restarts: loaded on start, saved on stop."""

    def __init__(self, name: str, resource: RelayResource, path: Path | None) -> None:
        self.setName(name)
        self.resource = resource
        self.path = path

    def startService(self) -> None:
        super().startService()
        if self.path is not None:
            self.resource.seen.load(self.path)

    def stopService(self) -> None:
        super().stopService()
        if self.path is not None:
            try:
                self.resource.seen.save(self.path)
            except OSError as exc:
                self.resource.context.throttle.error(
                    f"{self.name}:save", "cannot save the relay dedupe ids",
                    input=self.name, path=str(self.path), error=str(exc),
                )


def build_input(name: str, config: Config, context: InputContext) -> IService:
    """Mount the resource on ``[http]``; the service keeps the dedupe ids across restarts."""
    resource = RelayResource(name, config, context)
    context.http.mount(MOUNT, resource)
    data_dir = getattr(context, "data_dir", None)
    path = Path(data_dir) / f"relay-{name}-seen.txt" if data_dir is not None else None
    return RelayInputService(name, resource, path)
