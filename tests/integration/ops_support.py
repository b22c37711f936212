"""Helpers for the operations tests: real syslog traffic and reading obsd over HTTP."""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest


def require_input(type_name: str) -> None:
    """Fail (CI) or skip when this checkout has no input of ``type_name`` to send through."""
    from obsd import registry

    if type_name not in registry.INPUT_MODULES:
        reason = (
            f"these tests send real {type_name} traffic, and obsd.registry has no "
            f"{type_name!r} input on this branch yet"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def syslog_lines(texts: list[str]) -> bytes:
    """RFC 5424 lines (user.info), LF framed."""
    return b"".join(
        f"<14>1 2024-01-02T03:04:05Z web01 app 1 - - {text}\n".encode() for text in texts
    )


def send_syslog(port: int, texts: list[str]) -> None:
    """One TCP connection, the lines, then close."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(syslog_lines(texts))


def get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())


def file_events(path: Path) -> list[dict[str, Any]]:
    """The events obsd has written whole (a line still being written is left for later)."""
    if not path.exists():
        return []
    text = path.read_text()
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


SENTRY_PROJECT = 42
SENTRY_KEY = "0123456789abcdef0123456789abcdef"


def send_sentry(base: str, texts: list[str]) -> None:
    """One store request per message, as raven does."""
    auth = f"Sentry sentry_key={SENTRY_KEY}, sentry_version=7, sentry_client=obsd-tests/1"
    for text in texts:
        request = urllib.request.Request(
            f"{base}/api/{SENTRY_PROJECT}/store/",
            data=json.dumps({"message": text, "level": "error"}).encode(),
            headers={"X-Sentry-Auth": auth, "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200, response.status


#: how each input is configured in these tests, and the kind its events get
INPUT_CONFIG = {
    "syslog": '[inputs.syslog]\nlisten = ["tcp:0:interface=127.0.0.1"]\ntimezone = "UTC"\n',
    "sentry": f"[inputs.sentry]\nprojects = [{{ id = {SENTRY_PROJECT}, keys = ['{SENTRY_KEY}'] }}]\n",
}
EVENT_KIND = {"syslog": "log", "sentry": "error"}


def pick_input() -> str:
    """The input to send real traffic through: syslog, else Sentry (fail under CI if neither)."""
    from obsd import registry

    for name in ("syslog", "sentry"):
        if name in registry.INPUT_MODULES:
            return name
    require_input("syslog")
    raise AssertionError("unreachable")


def send_events(kind: str, proc: Any, texts: list[str]) -> None:
    """Send ``texts`` as events through input ``kind`` of a running obsd (in order)."""
    if kind == "syslog":
        send_syslog(proc.port("syslog"), texts)
    else:
        send_sentry(f"http://127.0.0.1:{proc.port('http')}", texts)
