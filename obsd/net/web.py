"""The one HTTP site on ``[http] listen``: inputs and status resources mount on it.

``HttpRoot.mount(("api",), resource)`` puts a resource at a path; mounts may
nest (the relay input at ``/api/obsd/v1/events`` beside the Sentry ingest at
``/api``), whatever order they are made in.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from twisted.web.http_headers import Headers
from twisted.web.server import Request, Site

from obsd.net.httpguard import DEFAULT_MAX_BODY, GuardedSite, HttpGuard
from obsd.twistedtypes import Resource


class JsonResource(Resource):
    """A leaf that answers GET with a JSON document made by a callable."""

    isLeaf = True

    def __init__(self, make: Any, status_of: Any = None) -> None:
        super().__init__()
        self._make = make
        self._status_of = status_of

    def render_GET(self, request: Request) -> bytes:
        doc = self._make()
        if self._status_of is not None:
            request.setResponseCode(self._status_of(doc))
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(doc, default=repr).encode() + b"\n"


class PrometheusResource(Resource):
    """``GET /metrics``: obsd's own counters and gauges in Prometheus text format.

    Not a leaf: the Prometheus output's scrape lives below it (``/metrics/data``).
    """

    def __init__(self, telemetry: Any) -> None:
        super().__init__()
        self._telemetry = telemetry

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"" and not request.postpath:
            return self  # "/metrics/"
        return super().getChild(path, request)  # type: ignore[no-any-return]

    def render_GET(self, request: Request) -> bytes:
        from obsd.ops.selfmetrics import prometheus_text

        request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
        return prometheus_text(self._telemetry)


class HttpRoot(Resource):
    """The site's root: a tree of mounted resources."""

    def __init__(self) -> None:
        super().__init__()
        self.mounted: dict[tuple[str, ...], Resource] = {}
        #: what ``GET /`` shows (the status page); plain text when unset
        self.index: Resource | None = None

    def mount(self, path: Sequence[str], resource: Resource, *, replace: bool = False) -> None:
        """Serve ``resource`` at ``/a/b`` for ``path == ("a", "b")``.

        ``replace``: a reloaded output's resource takes its predecessor's place.
        """
        path = tuple(path)
        if path in self.mounted and not replace:
            raise ValueError(f"/{'/'.join(path)} is mounted already")
        self.mounted[path] = resource
        parent: Resource = self
        for segment in path[:-1]:
            key = segment.encode()
            child = parent.children.get(key)
            if child is None:
                child = Resource()
                parent.putChild(key, child)
            parent = child
        key = path[-1].encode()
        previous = parent.children.get(key)
        if previous is not None:  # a placeholder made for a deeper mount: keep its children
            for child_key, child in previous.children.items():
                resource.putChild(child_key, child)
        parent.putChild(key, resource)

    def max_body_bytes(self, path: bytes, headers: Headers) -> int:
        """The body limit of the deepest resource mounted above ``path``."""
        segments = tuple(part.decode("utf-8", "replace") for part in path.split(b"/")[1:])
        for depth in range(len(segments), 0, -1):
            resource = self.mounted.get(segments[:depth])
            if resource is not None:
                limited = getattr(resource, "max_body_bytes", None)
                return int(limited(path, headers)) if limited is not None else DEFAULT_MAX_BODY
        return DEFAULT_MAX_BODY

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"" and not request.postpath:
            return self  # "/" itself
        return super().getChild(path, request)  # type: ignore[no-any-return]

    def render_GET(self, request: Request) -> bytes:
        if self.index is not None:
            return self.index.render(request)  # type: ignore[no-any-return]
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"obsd\n"


def make_site(root: Resource, reactor: Any, guard: HttpGuard) -> Site:
    """A guarded Site for ``root`` that does not write access logs (obsd counts requests)."""
    site = GuardedSite(root, guard, reactor)
    site.noisy = False
    site.log = lambda request: None  # type: ignore[method-assign]
    return site
