"""Helpers for the operations tests: real syslog traffic and reading obsd over HTTP."""

from __future__ import annotations

import json
import os
import socket
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
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
