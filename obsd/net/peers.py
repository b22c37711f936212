"""Who is on the other end of a connection: for log fields and per-sender limits."""

from __future__ import annotations

import socket
import struct
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress


def describe_peer(address: Any) -> str:
    """The sender's address as text: ``ip:port``, ``[ipv6]:port``, a unix path or ``unix``."""
    if isinstance(address, IPv4Address):
        return f"{address.host}:{address.port}"
    if isinstance(address, IPv6Address):
        return f"[{address.host}]:{address.port}"
    if isinstance(address, UNIXAddress):
        name: Any = address.name
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        return str(name or "unix")
    if isinstance(address, tuple) and len(address) >= 2:  # a UDP sender
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(address, bytes | str):  # a unixgram sender's path
        text = address.decode("utf-8", "replace") if isinstance(address, bytes) else address
        return text or "unix"
    return "unix" if address is None else str(address)


def peer_key(address: Any, transport: Any) -> str:
    """Whose connection this is, for per-sender limits: the IP, or a unix peer's uid.

    Unix-socket peers have no address worth the name, so the kernel's
    ``SO_PEERCRED`` says which user connected (every local process otherwise
    looks the same).
    """
    if isinstance(address, IPv4Address | IPv6Address):
        return address.host
    sock = getattr(transport, "socket", None)
    if sock is not None and hasattr(socket, "SO_PEERCRED"):
        try:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
            _pid, uid, _gid = _UCRED.unpack(creds)
            return f"uid:{uid}"
        except OSError:
            pass
    return "unix"


_UCRED = struct.Struct("3i")
