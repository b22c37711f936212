"""The UDP receive buffer every datagram input asks the kernel for.

Most UDP loss at real rates is this buffer overflowing while the process is
busy for a moment, so StatsD, Graphite and GELF all ask for a large one and
say so when the kernel caps it.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

#: Linux's SO_RCVBUFFORCE (33), which Python's socket module does not name.
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def set_receive_buffer(sock: Any, asked: int, platform: str = sys.platform) -> tuple[int, bool]:
    """Ask for ``asked`` bytes of receive buffer; return (bytes granted, capped?).

    ``SO_RCVBUFFORCE`` (root) passes ``net.core.rmem_max``; otherwise Linux caps
    ``SO_RCVBUF`` at it.  Linux reports twice the usable size it granted.
    """
    options = [socket.SO_RCVBUF]
    if platform.startswith("linux"):
        options.insert(0, SO_RCVBUFFORCE)
    for option in options:
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, asked)
            break
        except OSError:
            continue
    reported = int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
    granted = reported // 2 if platform.startswith("linux") else reported
    return granted, granted < asked


def tune_receive_buffer(sock: Any, asked: int, log: Any, input_name: str) -> None:
    """Ask for ``asked`` bytes (0: leave it); log the grant, with the sysctl when capped.

    Every UDP input does this: most UDP loss at real rates is this buffer
    overflowing while the process is busy for a moment.
    """
    if not asked:
        return
    try:
        granted, capped = set_receive_buffer(sock, asked)
    except OSError as exc:
        log.warning("cannot set the UDP receive buffer", input=input_name, error=str(exc))
        return
    if capped:
        log.warning(
            "UDP receive buffer smaller than asked; raise the kernel cap",
            input=input_name,
            asked_bytes=asked,
            granted_bytes=granted,
            hint=f"sysctl -w net.core.rmem_max={asked}",
        )
    else:
        log.info(
            "UDP receive buffer set", input=input_name, asked_bytes=asked, granted_bytes=granted
        )
