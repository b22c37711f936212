"""Live tail: ``GET /api/obsd/v1/tail?match=...`` streams the events flowing through obsd.

Each client gets the normalised events its filter matches (private ``_`` keys
dropped), one JSON object per line, in a chunked response that never ends
until the client goes away.  The filter is a route's ``match`` (``kind``,
``source``, ``level``, ``event`` glob), evaluated server-side by the router's
own matcher.

A tail never slows the pipeline.  Each client is a streaming producer on its
connection: when the kernel and Twisted's write buffer fill, the transport
pauses it, and from then on matched events go to a small bounded buffer; when
that is full they are dropped and counted.  On resume the buffer is written,
then a marker line ``{"_tail": "missed", "missed": N}`` says how many were
lost.  Like ``vector tap``: a view, never a delivery guarantee.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from twisted.web.server import NOT_DONE_YET, Request

from obsd import events
from obsd.config.model import RouteConfig, RouteMatch
from obsd.ops.telemetry import Telemetry
from obsd.pipeline.router import Route
from obsd.twistedtypes import Resource, Service

#: matched lines a paused client may hold before events are dropped for it
CLIENT_BUFFER = 1000
#: clients at once; more are answered 503
MAX_CLIENTS = 32
MATCH_KEYS = ("kind", "source", "level", "event")

Tap = Callable[[dict[str, Any]], None]


class TapSet:
    """Who listens on the router's tap; the router sees None when nobody does."""

    def __init__(self, router: Any) -> None:
        self.router = router
        self._taps: list[Tap] = []

    def add(self, tap: Tap) -> None:
        self._taps.append(tap)
        self._update()

    def remove(self, tap: Tap) -> None:
        if tap in self._taps:
            self._taps.remove(tap)
            self._update()

    def __len__(self) -> int:
        return len(self._taps)

    def _update(self) -> None:
        taps = tuple(self._taps)
        if not taps:
            self.router.tap = None
        elif len(taps) == 1:
            self.router.tap = taps[0]
        else:

            def fan_out(event: dict[str, Any]) -> None:
                for tap in taps:
                    tap(event)

            self.router.tap = fan_out


class MatchError(ValueError):
    """A ``match`` parameter obsd cannot use."""


def parse_match(values: Iterable[str]) -> Callable[[dict[str, Any]], bool]:
    """``["kind=log", "level=warning", "event=user.*"]`` as an event predicate.

    ``kind`` and ``source`` may repeat (any of them); ``level`` is a minimum;
    ``event`` a glob.  The router's own matcher decides, so a tail shows what a
    route with the same ``match`` would take.
    """
    given: dict[str, list[str]] = {key: [] for key in MATCH_KEYS}
    for value in values:
        key, sep, wanted = value.partition("=")
        key = key.strip()
        if not sep or key not in given:
            raise MatchError(f"bad match {value!r}: expected one of {', '.join(MATCH_KEYS)}=VALUE")
        given[key].append(wanted.strip())
    for kind in given["kind"]:
        if kind not in events.KINDS:
            raise MatchError(f"unknown kind {kind!r} (kinds: {', '.join(events.KINDS)})")
    for key in ("level", "event"):
        if len(given[key]) > 1:
            raise MatchError(f"{key} may be given once")
    level = given["level"][0] if given["level"] else ""
    if level and level not in events.LEVEL_ALIASES:
        raise MatchError(f"unknown level {level!r} (levels: {', '.join(events.LEVELS)})")
    match = RouteMatch(
        kind=given["kind"],
        source=given["source"],
        level=level,
        event=given["event"][0] if given["event"] else "",
    )
    route = Route(RouteConfig(match=match, outputs=[]), [])
    kinds = frozenset(match.kind)
    if not kinds:
        return route.matches
    return lambda event: event.get(events.KIND) in kinds and route.matches(event)


def encode_line(event: dict[str, Any]) -> bytes:
    """One event as an NDJSON line, without private keys."""
    public = {k: v for k, v in event.items() if not k.startswith("_")}
    return json.dumps(public, default=str, separators=(",", ":")).encode() + b"\n"


def marker(kind: str, **fields: Any) -> bytes:
    """A line that is not an event: ``{"_tail": kind, ...}`` (events never have ``_`` keys)."""
    return json.dumps({"_tail": kind, **fields}).encode() + b"\n"


class TailClient:
    """One tail connection: an IPushProducer that buffers a little, then drops."""

    def __init__(
        self,
        write: Callable[[bytes], None],
        matches: Callable[[dict[str, Any]], bool],
        telemetry: Telemetry,
        buffer_size: int = CLIENT_BUFFER,
    ) -> None:
        self._write = write
        self.matches = matches
        self.buffer_size = buffer_size
        self.pending: deque[bytes] = deque()
        self.paused = False
        #: events dropped since the last marker was written
        self.missed = 0
        self._sent = telemetry.counter("obsd.tail.sent")
        self._missed = telemetry.counter("obsd.tail.missed")

    def __call__(self, event: dict[str, Any]) -> None:
        """The tap: take one event if it matches."""
        if not self.matches(event):
            return
        if self.paused or self.pending:
            if len(self.pending) >= self.buffer_size:
                self.missed += 1
                self._missed.inc()
                return
            self.pending.append(encode_line(event))
            if not self.paused:
                self._flush()
            return
        self._sent.inc()
        self._write(encode_line(event))

    def _flush(self) -> None:
        while self.pending and not self.paused:
            self._sent.inc()
            self._write(self.pending.popleft())
        if not self.pending and not self.paused and self.missed:
            missed, self.missed = self.missed, 0
            self._write(marker("missed", missed=missed))

    # IPushProducer: the transport calls these as its buffer fills and empties
    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._flush()

    def stopProducing(self) -> None:
        self.paused = True
        self.pending.clear()


class TailResource(Resource):
    """``GET /api/obsd/v1/tail``: NDJSON of matching events, until the client leaves."""

    isLeaf = True

    def __init__(self, hub: TailHub) -> None:
        super().__init__()
        self.hub = hub
        #: ``[daemon] workers``: the other workers, whose tails join this one
        self.peers: Any = None

    def render_GET(self, request: Request) -> bytes | int:
        query = parse_qs((request.uri or b"").partition(b"?")[2].decode("utf-8", "replace"))
        wanted = query.get("match", [])
        try:
            matches = parse_match(wanted)
        except MatchError as exc:
            request.setResponseCode(400)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return f"{exc}\n".encode()
        if len(self.hub.clients) >= MAX_CLIENTS:
            request.setResponseCode(503)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return f"too many tail clients (at most {MAX_CLIENTS})\n".encode()
        request.setHeader(b"content-type", b"application/x-ndjson")
        request.setHeader(b"cache-control", b"no-store")
        client = TailClient(request.write, matches, self.hub.telemetry)
        request.registerProducer(client, True)
        request.write(marker("started", match=wanted))
        self.hub.add(client, request)
        request.notifyFinish().addBoth(lambda _: self.hub.remove(client))
        if self.peers is not None and b"local" not in query_keys(request):
            from obsd.ops.peers import follow_peers

            follow_peers(self.peers, request)
        return NOT_DONE_YET


def query_keys(request: Request) -> set[bytes]:
    return set((request.args or {}).keys())


class TailHub(Service):
    """The tail clients of one service; ends their responses when obsd stops."""

    def __init__(self, taps: TapSet, telemetry: Telemetry) -> None:
        self.taps = taps
        self.telemetry = telemetry
        self.clients: dict[TailClient, Request] = {}
        telemetry.gauge("obsd.tail.clients", lambda: len(self.clients))

    def add(self, client: TailClient, request: Request) -> None:
        self.clients[client] = request
        self.taps.add(client)

    def remove(self, client: TailClient) -> None:
        self.clients.pop(client, None)
        self.taps.remove(client)

    def stopService(self) -> None:
        super().stopService()
        for client, request in list(self.clients.items()):
            self.remove(client)
            request.unregisterProducer()
            request.finish()
