"""Listening sockets shared by ``[daemon] workers``: bound once, before the workers exist.

The first process binds every listener (as root where a port needs it, before
twistd drops privileges) and hands each worker its sockets as inherited
descriptors.  TCP and UDP listeners get one socket per worker, all bound to the
same address with ``SO_REUSEPORT``, so the kernel spreads connections and
datagrams over the workers (by the sender's address and port); unix sockets
and systemd's sockets are one socket every worker reads.  The first process
keeps every socket open, so a worker that dies leaves its connections waiting
in the backlog for its restart instead of refused.

``ListenerService`` asks ``adopted(owner, description)`` first: a listener whose
description was shared here is adopted, never bound again.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable

from obsd.net.endpoints import DEFAULT_BACKLOG, Listener

#: "owner description" -> descriptor this process adopts it from (two inputs may
#: both say ``tcp:0``, so the owner is part of the key)
_SHARED: dict[str, int] = {}


def key(owner: str, description: str) -> str:
    """The name of one listener: its owner (an input, or ``http``) and its description."""
    return f"{owner} {description}"


def share(name: str, fd: int) -> None:
    """From now on, listen on the listener ``name`` (see ``key``) by adopting ``fd``."""
    _SHARED[name] = fd


def adopted(owner: str, description: str) -> int | None:
    """The descriptor shared for this listener, if any."""
    return _SHARED.get(key(owner, description))


def forget_all() -> None:
    """Bind listeners normally again (tests)."""
    _SHARED.clear()


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _bound(listener: Listener, port: int, reuse_port: bool) -> socket.socket:
    datagram = listener.is_datagram
    kind = socket.SOCK_DGRAM if datagram else socket.SOCK_STREAM
    if listener.family == "unix":
        sock = socket.socket(socket.AF_UNIX, kind)
        path = listener.address
        if os.path.exists(path) and not os.path.isfile(path):
            os.unlink(path)  # a socket a previous run left behind
        sock.bind(path)
        if "mode" in listener.options:
            os.chmod(path, int(listener.options["mode"], 8))
    else:
        family = _family(listener.address)
        sock = socket.socket(family, kind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        host = listener.address or ("::" if family == socket.AF_INET6 else "0.0.0.0")
        sock.bind((host, port))
    if not datagram:
        sock.listen(int(listener.options.get("backlog", DEFAULT_BACKLOG)))
    sock.setblocking(False)
    return sock


def bind_for_workers(listener: Listener, count: int) -> list[socket.socket]:
    """One socket per worker for ``listener`` (the same one where it cannot be split).

    A TCP or UDP port 0 is chosen once, by the first bind, and shared by all.
    Raises ``OSError`` as binding does.
    """
    if listener.family == "systemd":
        from obsd.net.systemd import find_fd, inherited

        fd = find_fd(listener.options, inherited())
        one = socket.socket(fileno=os.dup(fd))
        return [one] * count
    if listener.family == "unix":
        return [_bound(listener, 0, reuse_port=False)] * count
    first = _bound(listener, listener.port, reuse_port=True)
    port = first.getsockname()[1]
    return [first] + [_bound(listener, port, reuse_port=True) for _ in range(count - 1)]


def close_all(sockets: Iterable[socket.socket]) -> None:
    for sock in {id(s): s for s in sockets}.values():
        sock.close()


__all__ = ["adopted", "bind_for_workers", "close_all", "forget_all", "key", "share"]
