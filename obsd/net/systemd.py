"""Sockets systemd hands over (socket activation): find them, see what they are, adopt them.

systemd (or ``systemd-socket-activate``) passes listening sockets as file
descriptors 3, 4, ... with ``LISTEN_FDS``, ``LISTEN_PID`` and, for named
sockets, ``LISTEN_FDNAMES`` (``FileDescriptorName=`` in the .socket unit).  A
``systemd:`` listener names one by ``name=`` or by ``index=``; whether it is a
stream or a datagram socket, and of which family, is read from the socket
itself, so ``systemd:name=syslog-udp`` needs nothing else.  Stream sockets are
adopted with ``adoptStreamPort``, UDP with ``adoptDatagramPort``, and unix
datagram sockets (``ListenDatagram=/run/obsd/syslog``) with a small port class,
since Twisted's adopt call takes only INET families.  The inherited descriptor
stays open (the reactor works on a duplicate), so a reload can adopt it again.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

from twisted.internet import unix

#: systemd's first passed descriptor
FIRST_FD = 3


def inherited(environ: Mapping[str, str] | None = None, pid: int | None = None) -> list[
    tuple[int, str]
]:
    """``(fd, name)`` for each socket passed to this process (name ``""`` when unnamed).

    Empty when ``LISTEN_PID`` names another process (the variables were meant
    for a parent).  Importing ``twisted.internet.endpoints`` parses and removes
    ``LISTEN_FDS``/``LISTEN_PID`` (so a child cannot adopt the same sockets);
    when that has happened, Twisted's parsed copy is the only record left, and
    it keeps named sockets only: systemd names every socket (the unit's name
    unless ``FileDescriptorName=``), ``systemd-socket-activate`` only with
    ``--fdname``.
    """
    env = os.environ if environ is None else environ
    if environ is None and "LISTEN_FDS" not in env:
        return _parsed_by_twisted()
    if env.get("LISTEN_PID") != str(os.getpid() if pid is None else pid):
        return []
    try:
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    names = env.get("LISTEN_FDNAMES", "").split(":") if env.get("LISTEN_FDNAMES") else []
    names += [""] * (count - len(names))
    return [(FIRST_FD + i, names[i]) for i in range(count)]


def _parsed_by_twisted() -> list[tuple[int, str]]:
    # Twisted keeps its parse of the environment on the systemd endpoint parser
    # (a private name: this is the one place obsd reads it).
    from twisted.internet.endpoints import _SystemdParser

    passed = _SystemdParser._sddaemon
    by_fd = {fd: name for name, fd in passed.inheritedNamedDescriptors().items()}
    return [(fd, by_fd.get(fd, "")) for fd in passed.inheritedDescriptors()]


def find_fd(options: Mapping[str, str], passed: list[tuple[int, str]]) -> int:
    """The descriptor a ``systemd:`` listener's ``name=`` or ``index=`` picks.

    Raises ``ValueError`` saying what was passed when nothing matches.
    """
    have = ", ".join(f"{i}={n or '(unnamed)'}" for i, (_fd, n) in enumerate(passed)) or (
        "none; unnamed sockets are lost unless named: FileDescriptorName=, or --fdname"
    )
    if "name" in options:
        for fd, name in passed:
            if name == options["name"]:
                return fd
        raise ValueError(f"systemd passed no socket named {options['name']!r} (passed: {have})")
    index = int(options["index"])
    if not 0 <= index < len(passed):
        raise ValueError(f"systemd passed no socket number {index} (passed: {have})")
    return passed[index][0]


def socket_kind(fd: int) -> tuple[int, int]:
    """``(family, type)`` of an open socket descriptor, e.g. ``(AF_INET, SOCK_DGRAM)``."""
    probe = socket.socket(fileno=os.dup(fd))
    try:
        return (
            probe.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN),
            probe.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE),
        )
    finally:
        probe.close()


class AdoptedUNIXDatagramPort(unix.DatagramPort):
    """A unix datagram port on a socket someone else bound (systemd)."""

    def __init__(self, fd: int, proto: Any, max_packet_size: int, reactor: Any) -> None:
        super().__init__(None, proto, maxPacketSize=max_packet_size, reactor=reactor)  # type: ignore[no-untyped-call]
        self._adopted_fd = fd

    def _bindSocket(self) -> None:
        skt = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM, fileno=os.dup(self._adopted_fd))
        skt.setblocking(False)
        self.port = skt.getsockname()
        self.connected = 1
        self.socket = skt
        self.fileno = skt.fileno  # type: ignore[method-assign]


def adopt(
    reactor: Any,
    options: Mapping[str, str],
    factory: Any = None,
    datagram: Any = None,
    max_packet_size: int = 65536,
    environ: Mapping[str, str] | None = None,
) -> Any:
    """Listen on the passed socket ``options`` names, with whichever protocol fits it.

    Raises ``ValueError`` with a clear reason: no such socket, a family other
    than ``domain=`` says, or a datagram socket for an input that takes streams
    only (or the reverse).
    """
    fd = find_fd(options, inherited(environ))
    wanted = options.get("domain")
    if wanted and getattr(socket, f"AF_{wanted}", None) != socket_kind(fd)[0]:
        family = socket.AddressFamily(socket_kind(fd)[0]).name
        raise ValueError(f"socket {fd} is {family}, not AF_{wanted}")
    return adopt_fd(reactor, fd, factory, datagram, max_packet_size)


def adopt_fd(
    reactor: Any, fd: int, factory: Any = None, datagram: Any = None, max_packet_size: int = 65536
) -> Any:
    """Listen on the open socket ``fd`` (systemd's, or a worker's inherited one).

    The reactor works on a duplicate; ``fd`` stays open.
    """
    family, kind = socket_kind(fd)
    # inherited sockets may be blocking; a blocking read would stall the reactor
    os.set_blocking(fd, False)
    if kind == socket.SOCK_DGRAM:
        if datagram is None:
            raise ValueError(f"socket {fd} is a datagram socket; this input takes streams only")
        if family == socket.AF_UNIX:
            port = AdoptedUNIXDatagramPort(fd, datagram, max_packet_size, reactor)
            port.startListening()  # type: ignore[no-untyped-call]
            return port
        return reactor.adoptDatagramPort(fd, family, datagram, maxPacketSize=max_packet_size)
    if kind == socket.SOCK_STREAM:
        if factory is None:
            raise ValueError(f"socket {fd} is a stream socket; this input takes datagrams only")
        return reactor.adoptStreamPort(fd, family, factory)
    raise ValueError(f"socket {fd} is neither a stream nor a datagram socket")
