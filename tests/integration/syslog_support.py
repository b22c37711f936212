"""Shared by the syslog integration tests: one obsd with every syslog listener, and reading back."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

from tests.integration.fixtures.obsd import ObsdProcess, twistd_args

#: Keys whose values differ on every run (the ids, the receipt time, the sender's port).
VOLATILE = ("id", "received_at", "timestamp", "peer")


def syslog_config(data_dir: Path, sockets: Path, tls: tuple[Path, Path] | None = None) -> str:
    """An obsd config: syslog on UDP, TCP, unixgram and unix (and TLS), to the file output."""
    listen = [
        "udp:0:interface=127.0.0.1",
        "tcp:0:interface=127.0.0.1",
        f"unixgram:{sockets / 'dgram.sock'}",
        f"unix:{sockets / 'stream.sock'}",
    ]
    if tls is not None:
        key, cert = tls
        listen.append(f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}")
    return (
        f"[daemon]\ndata_dir = '{data_dir}'\nlog_interval = 0.5\n"
        f"[inputs.syslog]\nlisten = {json.dumps(listen)}\ntimezone = 'UTC'\n"
        "[outputs.file]\nbatch_timeout = 0.02\n"
    )


def start_obsd(workdir: Path, config_text: str) -> ObsdProcess:
    """Start a real obsd in ``workdir`` with ``config_text``."""
    config = workdir / "obsd.toml"
    config.write_text(config_text)
    return ObsdProcess(workdir, twistd_args(config)).start()


def file_events(data_dir: Path) -> list[dict[str, Any]]:
    """Every event the file output wrote so far."""
    path = data_dir / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for_events(
    proc: ObsdProcess, data_dir: Path, marker: str, count: int, timeout: float = 15.0
) -> list[dict[str, Any]]:
    """The events whose text or appname holds ``marker``, once ``count`` of them are there.

    Waits a little longer after the count is reached, so that an extra event
    (a message split in two) would show up and fail the test.
    """
    deadline = time.monotonic() + timeout
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = [e for e in file_events(data_dir) if _has_marker(e, marker)]
        if len(found) >= count:
            time.sleep(0.2)
            return [e for e in file_events(data_dir) if _has_marker(e, marker)]
        time.sleep(0.05)
    raise AssertionError(
        f"wanted {count} events marked {marker!r}, got {found}; obsd log:\n{proc.output()[-3000:]}"
    )


def _has_marker(event: dict[str, Any], marker: str) -> bool:
    return marker in str(event.get("event", "")) or event.get("appname") == marker


def stable(event: dict[str, Any]) -> dict[str, Any]:
    """The event without the keys that change on every run."""
    return {k: v for k, v in event.items() if k not in VOLATILE}


def iso_age(stamp: str) -> float:
    """Seconds between an ISO stamp the file output wrote and now."""
    import datetime

    parsed = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return time.time() - parsed.timestamp()


def send_tcp(port: int, data: bytes) -> None:
    """Write ``data`` to 127.0.0.1:``port`` and close."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
