"""``[daemon] workers``: one ``/status``, ``/metrics`` and set of own numbers for all workers.

A request on the shared HTTP port reaches whichever worker the kernel picks;
that worker asks every other one, on its private port on 127.0.0.1, for its
own document (``?local=1``) and answers with the sum.  Counters, gauges and
rates add up; times and sizes that describe a window (``uptime``,
``rate_window``, ``last_error_at`` ...) are taken from one of them; lists (the
listeners, the history's samples) are those of the worker that answered.
``workers`` lists each worker with its pid, whether it answered, and whether
it is ready.  A worker that does not answer within ``PEER_TIMEOUT`` is listed
as not answering; the sum is of the others.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import Protocol
from twisted.web.server import NOT_DONE_YET, Request

from obsd.net.httpclient import make_http_client
from obsd.twistedtypes import Resource

#: seconds one worker waits for another's numbers
PEER_TIMEOUT = 2.0
#: keys whose numbers describe a window or a moment, not an amount: never added
NOT_SUMMED = frozenset(
    {
        "uptime", "rate_window", "rate_span", "interval", "capacity", "since", "at",
        "last_error_at", "port", "times", "index", "pid",
    }
)


def add_up(a: Any, b: Any, key: str = "") -> Any:
    """``b`` added into ``a`` (a new value): numbers add, tables merge, the rest is ``a``'s."""
    if isinstance(a, dict) and isinstance(b, dict):
        merged = dict(a)
        for k, value in b.items():
            merged[k] = add_up(merged[k], value, k) if k in merged else value
        return merged
    numbers = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return a if key != "ready" else bool(a) and bool(b)
    if isinstance(a, numbers) and isinstance(b, numbers) and key not in NOT_SUMMED:
        return a + b
    return a if a is not None else b


class Peers:
    """The other workers, by their private ports; asks each for a JSON document."""

    def __init__(self, role: Any, reactor: Any) -> None:
        self.role = role
        self.reactor = reactor
        self.others = [i for i in range(role.count) if i != role.index]
        self._client: Any = None

    def http(self) -> Any:
        if self._client is None:
            self._client, _pool = make_http_client(
                self.reactor, connect_timeout=PEER_TIMEOUT, max_persistent=2
            )
        return self._client

    def get_json(self, index: int, path: str) -> defer.Deferred[Any]:
        """Worker ``index``'s document at ``path``; fires None when it does not answer."""
        url = f"{self.role.peer_url(index)}{path}"
        d: defer.Deferred[Any] = self.http().get(url, timeout=PEER_TIMEOUT)
        d.addCallback(lambda response: response.json() if response.code == 200 else None)
        d.addErrback(lambda _: None)
        return d

    def gather(self, path: str) -> defer.Deferred[list[tuple[int, Any]]]:
        """``(index, document or None)`` of every other worker."""
        asked = [self.get_json(i, path) for i in self.others]
        d = defer.gatherResults(asked, consumeErrors=True)
        d.addCallback(lambda docs: list(zip(self.others, docs, strict=True)))
        return d


def local_only(request: Request) -> bool:
    return b"local" in (request.args or {})


class SummedJson(Resource):
    """A JSON document of this worker, or (``?local`` absent) the sum over all workers."""

    isLeaf = True

    def __init__(self, make: Callable[[], dict[str, Any]], peers: Peers, path: str) -> None:
        super().__init__()
        self._make = make
        self._peers = peers
        self._path = path

    def render_GET(self, request: Request) -> Any:
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        if local_only(request):
            return self._encode(self.own())
        d = self.summed()
        d.addCallback(lambda doc: _finish(request, self._encode(doc)))
        d.addErrback(lambda failure: _failed(request, failure))
        return NOT_DONE_YET

    def own(self) -> dict[str, Any]:
        doc = self._make()
        role = self._peers.role
        doc["worker"] = {"index": role.index, "pid": os.getpid()}
        return doc

    def summed(self) -> defer.Deferred[dict[str, Any]]:
        mine = self.own()
        d: defer.Deferred[Any] = self._peers.gather(f"{self._path}?local=1")
        d.addCallback(lambda docs: sum_documents(mine, docs))
        return d

    @staticmethod
    def _encode(doc: dict[str, Any]) -> bytes:
        return json.dumps(doc, default=repr).encode() + b"\n"


def sum_documents(mine: dict[str, Any], others: list[tuple[int, Any]]) -> dict[str, Any]:
    """This worker's document with the others' added, and who answered."""
    workers = [{**mine.pop("worker"), "answered": True, "ready": mine.get("ready", True)}]
    total = mine
    for index, doc in others:
        if doc is None:
            workers.append({"index": index, "pid": None, "answered": False, "ready": False})
            continue
        workers.append({**doc.pop("worker"), "answered": True, "ready": doc.get("ready", True)})
        total = add_up(total, doc)
    total["workers"] = sorted(workers, key=lambda w: w["index"])
    if "ready" in total:
        total["ready"] = all(w["ready"] for w in workers)
    return total


def _finish(request: Request, body: bytes) -> None:
    if not request.finished and not getattr(request, "_disconnected", False):
        request.write(body)
        request.finish()


def _failed(request: Request, failure: Any) -> None:
    """A bug in summing: a clear 500 rather than a request that never ends."""
    if not request.finished and not getattr(request, "_disconnected", False):
        request.setResponseCode(500)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.write(f"cannot add up the workers' numbers: {failure.value!r}\n".encode())
        request.finish()


class Numbers:
    """A ``Telemetry``-shaped view of summed counters and gauges (for ``/metrics``)."""

    def __init__(self, counters: dict[str, int], gauges: dict[str, float]) -> None:
        self._counters = counters
        self._gauges = gauges

    def counters(self) -> dict[str, int]:
        return self._counters

    def gauges(self) -> dict[str, float]:
        return self._gauges

    def snapshot(self) -> dict[str, float]:
        return {**self._counters, **self._gauges}


def summed_numbers(telemetry: Any, peers: Peers) -> defer.Deferred[Numbers]:
    """Every worker's counters and gauges, added up."""
    mine = {"counters": telemetry.counters(), "gauges": telemetry.gauges()}
    d: defer.Deferred[Any] = peers.gather(f"{NUMBERS_PATH}?local=1")

    def add(docs: list[tuple[int, Any]]) -> Numbers:
        total = mine
        for _index, doc in docs:
            if doc is not None:
                total = add_up(total, {"counters": doc["counters"], "gauges": doc["gauges"]})
        return Numbers(total["counters"], total["gauges"])

    d.addCallback(add)
    return d


#: where each worker answers with its own counters and gauges
NUMBERS_PATH = "/api/obsd/v1/worker/numbers"


class SummedPrometheus(Resource):
    """``GET /metrics`` over every worker (the Prometheus output's scrape stays below it)."""

    def __init__(self, telemetry: Any, peers: Peers) -> None:
        super().__init__()
        self._telemetry = telemetry
        self._peers = peers

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"" and not request.postpath:
            return self
        return super().getChild(path, request)  # type: ignore[no-any-return]

    def render_GET(self, request: Request) -> Any:
        from obsd.ops.selfmetrics import prometheus_text

        request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
        if local_only(request):
            return prometheus_text(self._telemetry)
        d = summed_numbers(self._telemetry, self._peers)
        d.addCallback(lambda numbers: _finish(request, prometheus_text(numbers)))
        d.addErrback(lambda failure: _failed(request, failure))
        return NOT_DONE_YET


def mount_peers(service: Any, report: Any) -> Peers:
    """Sum ``/status``, ``/metrics`` and the status page over the workers of ``service``."""
    from obsd.ops.statuspage import render_page

    peers = Peers(service.config.worker, service.reactor)
    root = service.http_root
    telemetry = service.telemetry
    root.mount(
        ("api", "obsd", "v1", "worker", "numbers"),
        _NumbersResource(telemetry),
    )
    status = SummedJson(report.status, peers, "/status")
    root.mount(("status",), status, replace=True)
    metrics = SummedPrometheus(telemetry, peers)
    old = root.mounted.get(("metrics",))
    if old is not None:
        for key, child in old.children.items():
            metrics.putChild(key, child)
    root.mount(("metrics",), metrics, replace=True)
    root.index = _SummedPage(status, render_page)
    join_scrapes(service.outputs, peers)
    return peers


def join_scrapes(outputs: Any, peers: Peers) -> None:
    """Outputs that are scraped (Prometheus) add the other workers' series to their own."""
    for output in outputs.values():
        scrape = getattr(output, "scrape", None)
        if scrape is not None and hasattr(scrape, "join_workers"):
            scrape.join_workers(peers)


class _NumbersResource(Resource):
    isLeaf = True

    def __init__(self, telemetry: Any) -> None:
        super().__init__()
        self._telemetry = telemetry

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        doc = {"counters": self._telemetry.counters(), "gauges": self._telemetry.gauges()}
        return json.dumps(doc).encode()


class _SummedPage(Resource):
    """``GET /``: the status page, drawn from the sum."""

    isLeaf = True

    def __init__(self, status: SummedJson, render: Callable[[dict[str, Any]], bytes]) -> None:
        super().__init__()
        self._status = status
        self._render = render

    def render_GET(self, request: Request) -> Any:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        d = self._status.summed()
        d.addCallback(lambda doc: _finish(request, self._render(doc)))
        d.addErrback(lambda failure: _failed(request, failure))
        return NOT_DONE_YET


__all__ = [
    "NUMBERS_PATH",
    "Numbers",
    "Peers",
    "SummedJson",
    "SummedPrometheus",
    "add_up",
    "follow_peers",
    "join_scrapes",
    "mount_peers",
    "sum_documents",
    "summed_numbers",
]


class _PeerTail(Protocol):
    """One other worker's tail stream: its event lines, whole, into this response."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self._rest = b""

    def dataReceived(self, data: bytes) -> None:
        lines = (self._rest + data).split(b"\n")
        self._rest = lines.pop()
        if self.request.finished or getattr(self.request, "_disconnected", False):
            return
        for line in lines:
            if line and not line.startswith(b'{"_tail": "started"'):
                self.request.write(line + b"\n")

    def connectionLost(self, reason: Any = None) -> None:
        """The worker stopped, or this client left."""

    def stop(self) -> None:
        stop = getattr(self.transport, "stopProducing", None)
        if stop is not None:
            stop()


def follow_peers(peers: Peers, request: Request) -> None:
    """Add every other worker's tail (same query, ``local=1``) to this tail response."""
    query = (request.uri or b"").partition(b"?")[2].decode("utf-8", "replace")
    path = f"/api/obsd/v1/tail?local=1{'&' + query if query else ''}"
    streams: list[_PeerTail] = []

    def connected(response: Any) -> None:
        if response.code != 200:
            return
        stream = _PeerTail(request)
        streams.append(stream)
        response.deliverBody(stream)

    for index in peers.others:
        d = peers.http().get(f"{peers.role.peer_url(index)}{path}", unbuffered=True)
        d.addCallbacks(connected, lambda _: None)

    def leave(_: Any) -> None:
        for stream in streams:
            stream.stop()

    request.notifyFinish().addBoth(leave)
