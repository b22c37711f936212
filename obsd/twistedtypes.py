"""Typed faces of the untyped Twisted base classes obsd builds on.

``twisted.application.service`` and ``twisted.web.resource`` have no
annotations, so under ``mypy --strict`` every call to an inherited method of
a subclass (``setServiceParent``, ``super().startService()``) is an untyped
call.  obsd's services and resources subclass these names instead: at run
time they are Twisted's own classes, and for the type checker they declare
the signatures obsd relies on.  Calls made directly on Twisted's objects are
left to ``untyped_calls_exclude`` in ``pyproject.toml``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.application import service as _service
from twisted.web import resource as _resource

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.web.server import Request

    class Service(_service.Service):
        name: str | None
        running: int

        def __init__(self) -> None: ...
        def setName(self, name: str) -> None: ...
        def setServiceParent(self, parent: Any) -> None: ...
        def disownServiceParent(self) -> Deferred[None] | None: ...
        def privilegedStartService(self) -> None: ...
        def startService(self) -> None: ...
        def stopService(self) -> Deferred[Any] | None: ...

    class MultiService(Service, _service.MultiService):  # facade first in the MRO
        def addService(self, service: Any) -> None: ...
        def removeService(self, service: Any) -> Deferred[None] | None: ...

    class Resource(_resource.Resource):
        def __init__(self) -> None: ...
        def putChild(self, path: bytes, child: Any) -> None: ...
        def getChild(self, path: bytes, request: Request) -> Any: ...
        def render(self, request: Request) -> Any: ...
else:
    Service = _service.Service
    MultiService = _service.MultiService
    Resource = _resource.Resource

__all__ = ["MultiService", "Resource", "Service"]
