"""Listen addresses: parse and check endpoint strings without opening anything.

Stream listeners are Twisted endpoint strings (``tcp:5514:interface=127.0.0.1``,
``ssl:6514:privateKey=k.pem:certKey=c.pem``, ``unix:/run/obsd.sock``,
``systemd:name=syslog-udp``); ``ssl:`` also takes obsd's ``clientCA=ca.pem``,
which makes the listener require client certificates signed by that CA (Twisted's
string syntax has no such option).  Datagrams have no Twisted endpoint, so obsd
adds ``udp:PORT[:interface=ADDR]`` and ``unixgram:PATH``.  ``systemd:`` takes a
socket systemd passed, by ``name=`` (``FileDescriptorName=``) or ``index=``, stream
or datagram alike (``obsd.net.systemd`` reads which from the socket); inputs that
take datagrams accept it for UDP and unix datagram sockets too.  ``Listener`` is what
config checks (port conflicts) and topology (which Twisted call to make) need.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import attrs

DATAGRAM_TYPES = frozenset({"udp", "unixgram"})
#: obsd's own option for ``ssl:`` listeners: require client certificates signed by this CA
CLIENT_CA = "clientCA"
STREAM_TYPES = frozenset({"tcp", "tcp6", "ssl", "unix", "systemd"})

#: the listen queue of stream listeners that name none (the kernel caps it at somaxconn)
DEFAULT_BACKLOG = 1024

_SPLIT = re.compile(r"(?<!\\):")


@attrs.frozen
class Listener:
    """One parsed listen string."""

    description: str
    type: str
    #: ``tcp`` for tcp/tcp6/ssl, ``udp``, ``unix`` for unix and unixgram paths, ``systemd``.
    family: Literal["tcp", "udp", "unix", "systemd"]
    address: str  # interface, or path for unix sockets
    port: int  # 0 for unix sockets and systemd
    options: dict[str, str]

    @property
    def is_datagram(self) -> bool:
        return self.type in DATAGRAM_TYPES

    @property
    def is_loopback(self) -> bool:
        """Whether only this host can reach it (unix sockets count as local)."""
        if self.family == "unix":
            return True
        return self.address.startswith("127.") or self.address in ("::1", "localhost")

    @property
    def endpoint_string(self) -> str:
        """The string handed to Twisted: a stream listener gets ``backlog=DEFAULT_BACKLOG``
        unless it names one (Twisted's 50 makes a burst of connects wait for a SYN retry)."""
        if self.type in ("tcp", "tcp6", "ssl", "unix") and "backlog" not in self.options:
            return f"{self.description}:backlog={DEFAULT_BACKLOG}"
        return self.description

    def conflicts_with(self, other: Listener) -> bool:
        """Whether both would bind the same transport, address and port."""
        if self.family != other.family or self.family == "systemd":
            return False
        if self.family == "unix":
            return self.address == other.address and self.type == other.type
        if self.port != other.port or self.port == 0:
            return False
        wildcard = {"", "0.0.0.0", "::"}
        return self.address == other.address or bool({self.address, other.address} & wildcard)


def _split(description: str) -> tuple[list[str], dict[str, str]]:
    args: list[str] = []
    kwargs: dict[str, str] = {}
    for part in _SPLIT.split(description)[1:]:
        part = part.replace("\\:", ":")
        if "=" in part:
            key, _, value = part.partition("=")
            kwargs[key] = value
        else:
            args.append(part)
    return args, kwargs


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    return port


def parse_listener(description: str, allowed: frozenset[str]) -> Listener:
    """Parse one listen string; raise ``ValueError`` saying what is wrong.

    ``allowed`` holds the types this input takes (``STREAM_TYPES``, ``DATAGRAM_TYPES``
    or both).  Stream strings are also checked by Twisted's own parser.
    """
    kind = description.split(":", 1)[0]
    if ":" not in description:
        raise ValueError(f"{description!r} is not an endpoint string such as 'tcp:5514'")
    if kind not in allowed:
        raise ValueError(
            f"{kind!r} listeners are not accepted here (accepted: {', '.join(sorted(allowed))})"
        )
    args, kwargs = _split(description)
    try:
        if kind in ("udp", "tcp", "tcp6", "ssl"):
            port_text = kwargs.pop("port", None) or (args.pop(0) if args else None)
            if port_text is None:
                raise ValueError("a port is required")
            port = _port(port_text)
            default = "::" if kind == "tcp6" else ""
            address = kwargs.get("interface", default)
            family: Literal["tcp", "udp", "unix", "systemd"] = "udp" if kind == "udp" else "tcp"
            listener = Listener(description, kind, family, address, port, kwargs)
        elif kind in ("unix", "unixgram"):
            path = kwargs.get("address") or (args[0] if args else "")
            if not path:
                raise ValueError("a socket path is required")
            listener = Listener(description, kind, "unix", path, 0, kwargs)
        else:  # systemd
            if kwargs.get("domain", "INET") not in ("INET", "INET6", "UNIX"):
                raise ValueError("domain= must be INET, INET6 or UNIX")
            if ("name" in kwargs) == ("index" in kwargs):
                raise ValueError("give the socket's name= (FileDescriptorName) or its index=")
            if "index" in kwargs and int(kwargs["index"]) < 0:
                raise ValueError("index= counts from 0")
            listener = Listener(description, kind, "systemd", "", 0, kwargs)
    except ValueError as exc:
        raise ValueError(f"bad endpoint {description!r}: {exc}") from None
    if kind == "ssl" and CLIENT_CA in listener.options:
        if not Path(listener.options[CLIENT_CA]).is_file():
            raise ValueError(
                f"bad endpoint {description!r}: {CLIENT_CA} file "
                f"{listener.options[CLIENT_CA]!r} does not exist"
            )
        description = without_option(description, CLIENT_CA)
    if kind in STREAM_TYPES and kind != "systemd":
        _check_with_twisted(description)
    return listener


def without_option(description: str, name: str) -> str:
    """The endpoint string without its ``name=...`` part (obsd's own options)."""
    parts = _SPLIT.split(description)
    return ":".join(p for p in parts if not p.startswith(name + "="))


def _check_with_twisted(description: str) -> None:
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.testing import MemoryReactor

    try:
        serverFromString(MemoryReactor(), description)
    except Exception as exc:  # noqa: BLE001 - Twisted's parsers raise many kinds
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise ValueError(f"bad endpoint {description!r}: {reason}") from None
