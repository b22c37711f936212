"""The hostile clients of issue 14, each a function that attacks from 127.0.0.2.

Every attack takes the ``Target`` (obsd's ports) and a ``scale`` (1.0 for the
full run, smaller for ``--quick``) and returns what the attacker saw (the
statuses it was answered).  Blocking sockets are fine here: this is the load,
not obsd.  Every loop is bounded in count and time.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import socket
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable
from typing import Any

import brotli

ATTACKER = "127.0.0.2"
HONEST = "127.0.0.1"
KEY = "0123456789abcdef0123456789abcdef"
AUTH = f"Sentry sentry_key={KEY}, sentry_version=7, sentry_client=bench/1"


class Target:
    """Where obsd listens, and its limits as the bench configured them."""

    def __init__(self, http: int, syslog: int, statsd: int, timeouts: float) -> None:
        self.http, self.syslog, self.statsd, self.timeouts = http, syslog, statsd, timeouts


def connect(port: int, source: str = ATTACKER, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(
        ("127.0.0.1", port), timeout=timeout, source_address=(source, 0)
    )


def status_of(sock: socket.socket, limit: float = 10.0) -> int:
    """The status of the answer on ``sock`` (0: closed or reset without one)."""
    sock.settimeout(limit)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    try:
        return int(data.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0


def request(port: int, method: str, path: str, body: bytes, headers: dict[str, str],
            source: str = ATTACKER) -> int:
    """One whole request; the answer's status."""
    head = f"{method} {path} HTTP/1.1\r\nHost: obsd\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with connect(port, source) as sock:
        with contextlib.suppress(OSError):  # refused mid-body: the answer is already waiting
            sock.sendall(head.encode() + body)
        return status_of(sock)


def honest_event(port: int) -> int:
    """One Sentry store event from 127.0.0.1, as raven would send it."""
    body = json.dumps({"event_id": uuid.uuid4().hex, "message": "honest", "level": "info",
                       "platform": "python"}).encode()
    return request(port, "POST", "/api/42/store/", body,
                   {"X-Sentry-Auth": AUTH, "Content-Type": "application/json"}, HONEST)


# --- the attacks -----------------------------------------------------------------------


def gzip_members_before_auth(target: Target, scale: float) -> dict[str, Any]:
    """Item 1: a 290 KB body of one-byte gzip members, wrong key and no key at all."""
    body = b"".join(gzip.compress(b" ") for _ in range(int(14_000 * scale) or 1))
    seen = Counter()
    for auth in ({"X-Sentry-Auth": AUTH.replace(KEY, "f" * 32)}, {}):
        headers = {"Content-Encoding": "gzip", "Content-Type": "application/x-sentry-envelope"}
        seen[request(target.http, "POST", "/api/42/envelope/", body, {**headers, **auth})] += 1
    return {"statuses": dict(seen), "bytes": len(body)}


def envelope_items(target: Target, scale: float) -> dict[str, Any]:
    """Item 2: one envelope of 250,000 tiny items (5.25 MB)."""
    item = b'{"type":"session"}\n{}\n'
    body = b'{"event_id":"9ec79c33ec9942ab8353589fcb2e04dc"}\n' + item * int(250_000 * scale)
    status = request(target.http, "POST", "/api/42/envelope/", body,
                     {"X-Sentry-Auth": AUTH, "Content-Type": "application/x-sentry-envelope"})
    return {"statuses": {status: 1}, "bytes": len(body)}


def half_sent_requests(target: Target, scale: float) -> dict[str, Any]:
    """Item 3: 3,000 connections that send half a request and wait."""
    socks = []
    for _ in range(int(3_000 * scale)):
        try:
            sock = connect(target.http)
            sock.sendall(b"POST /api/42/store/ HTTP/1.1\r\nHost: obsd\r\nX-Sentry-")
            socks.append(sock)
        except OSError:
            break
    seen = Counter(status_of(sock, target.timeouts + 5) for sock in socks)
    for sock in socks:
        sock.close()
    return {"statuses": dict(seen), "connections": len(socks)}


def endless_chunked(target: Target, scale: float) -> dict[str, Any]:
    """Items 3 and 4: a chunked body that never ends (sent until obsd answers)."""
    with connect(target.http) as sock:
        sock.sendall(b"POST /api/42/store/ HTTP/1.1\r\nHost: obsd\r\nTransfer-Encoding: chunked\r\n"
                     b"X-Sentry-Auth: " + AUTH.encode() + b"\r\n\r\n")
        chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
        sent = 0
        try:
            for _ in range(int(3200 * scale) or 1):  # 200 MiB at most
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        return {"statuses": {status_of(sock): 1}, "bytes": sent}


def short_body(target: Target, scale: float) -> dict[str, Any]:
    """Item 3: a Content-Length beyond the body that is sent."""
    with connect(target.http) as sock:
        sock.sendall(b"POST /api/42/store/ HTTP/1.1\r\nHost: obsd\r\nContent-Length: 1000\r\n"
                     b"X-Sentry-Auth: " + AUTH.encode() + b"\r\n\r\n{\"message\":")
        return {"statuses": {status_of(sock, target.timeouts + 5): 1}}


def large_content_length(target: Target, scale: float) -> dict[str, Any]:
    """Item 4: a 50 MB store body, announced by its Content-Length."""
    body = b"{" + b" " * int(50_000_000 * scale) + b"}"
    status = request(target.http, "POST", "/api/42/store/", body, {"X-Sentry-Auth": AUTH})
    return {"statuses": {status: 1}, "bytes": len(body)}


def _bombs() -> list[tuple[str, bytes]]:
    zeros = b"\0" * (64 << 20)
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return [
        ("gzip", gzip.compress(zeros)),
        ("deflate", raw.compress(zeros) + raw.flush()),
        ("br", brotli.compress(zeros)),
        ("", base64.b64encode(zlib.compress(zeros))),  # raven's legacy form
    ]


def compression_bombs(target: Target, scale: float) -> dict[str, Any]:
    """gzip, deflate, brotli and base64-zlib bodies that inflate to 64 MiB."""
    seen = Counter()
    for encoding, body in _bombs():
        headers = {"X-Sentry-Auth": AUTH, **({"Content-Encoding": encoding} if encoding else {})}
        seen[request(target.http, "POST", "/api/42/store/", body, headers)] += 1
    return {"statuses": dict(seen)}


def statsd_long_line(target: Target, scale: float) -> dict[str, Any]:
    """Item 5: a 10 MB StatsD line over TCP, then 500 metric names of 60 KB."""
    with connect(target.statsd) as sock:
        sock.sendall(b"a" * int(10_000_000 * scale) + b":1|c\n")
        for i in range(int(500 * scale) or 1):
            sock.sendall(b"n%d" % i + b"x" * 60_000 + b":1|c\n")
    return {"statuses": {}}


def syslog_slots(target: Target, scale: float) -> dict[str, Any]:
    """Item 6: one address opens connections until refused, and holds them."""
    socks, refused = [], 0
    for _ in range(max(100, int(300 * scale))):  # past the per-address cap of 64
        try:
            sock = connect(target.syslog)
        except OSError:
            refused += 1
            continue
        socks.append(sock)
        try:
            sock.sendall(b"<13>Oct 11 22:14:15 attacker app: hold\n")
            time.sleep(0.002)
            sock.sendall(b"<13>Oct 11 22:14:15 attacker app: hold\n")
        except OSError:
            refused += 1
    time.sleep(0.5)
    for sock in socks:
        sock.close()
    return {"statuses": {}, "connections": len(socks), "reset": refused}


#: name -> (attack, the obsd counters it must raise, honest traffic besides Sentry)
ATTACKS: dict[str, tuple[Callable[[Target, float], dict[str, Any]], tuple[str, ...], str]] = {
    "gzip members before auth": (
        gzip_members_before_auth,
        ("obsd_input_sentry_rejected_401", "obsd_input_sentry_rejected_403",
         "obsd_input_sentry_rejected_400"),
        "",
    ),
    "250,000-item envelope": (envelope_items, ("obsd_input_sentry_rejected_413",), ""),
    "3,000 half-sent requests": (
        half_sent_requests, ("obsd_http_refused_peer", "obsd_http_refused_header_timeout"), ""),
    "endless chunked body": (endless_chunked, ("obsd_http_refused_too_large",), ""),
    "Content-Length beyond body": (short_body, ("obsd_http_refused_body_timeout",), ""),
    "50 MB Content-Length": (large_content_length, ("obsd_http_refused_too_large",), ""),
    "compression bombs": (compression_bombs, ("obsd_input_sentry_rejected_413",), ""),
    "10 MB StatsD line, 60 KB names": (
        statsd_long_line, ("obsd_input_statsd_bad_lines_seen",), "statsd"),
    "syslog slots from one address": (syslog_slots, ("obsd_input_syslog_refused",), "syslog"),
}
