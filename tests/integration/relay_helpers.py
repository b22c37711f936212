"""Shared by the relay integration tests and bench.relay: configs, a loader, free ports."""

from __future__ import annotations

import gzip
import json
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from obsd.codecs.relaywire import encode_event

LOAD_TOKEN = "load-token"
EVENTS_PATH = "/api/obsd/v1/events"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


ALL_TO_FILE = '[outputs.file]\n[[routes]]\noutputs = ["file"]\n'


def central_config(
    http: str, tokens: dict[str, str], outputs: str = ALL_TO_FILE, extra: str = ""
) -> str:
    """A central obsd: the relay input on [http], its own outputs (all kinds to a file)."""
    agents = ", ".join(f'{{name = "{n}", token = "{t}"}}' for n, t in tokens.items())
    return (
        "[daemon]\ndata_dir = '{data_dir}'\nmetrics_interval = 0\nshutdown_timeout = 10\n"
        f"[http]\nlisten = ['{http}']\n"
        f"[inputs.relay]\ntokens = [{agents}]\n"
        f"{outputs}{extra}"
    )


def agent_config(urls: list[str], token: str, extra: str = "", relay_extra: str = "") -> str:
    """An agent obsd: a relay input for the test's load, and the relay output to central."""
    url_list = ", ".join(f"'{u}'" for u in urls)
    return (
        "[daemon]\ndata_dir = '{data_dir}'\nmetrics_interval = 0\nshutdown_timeout = 10\n"
        "[http]\nlisten = ['tcp:0:interface=127.0.0.1']\n"
        f'[inputs.relay]\ntokens = [{{name = "load", token = "{LOAD_TOKEN}"}}]\n'
        f"[outputs.relay]\nurls = [{url_list}]\ntoken = '{token}'\n"
        "batch_timeout = 0.05\nretry_initial = 0.1\nretry_max = 0.5\nrequest_timeout = 5\n"
        f"{relay_extra}{extra}"
    )


def post_events(
    url: str,
    events: list[dict[str, Any]],
    token: str = LOAD_TOKEN,
    *,
    gzipped: bool = True,
    context: ssl.SSLContext | None = None,
    timeout: float = 10.0,
) -> tuple[int, Any]:
    """POST events as (gzip) NDJSON to a relay input; (status, decoded answer)."""
    body = b"".join(encode_event(e) for e in events)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"}
    if gzipped:
        body = gzip.compress(body, compresslevel=1)
        headers["Content-Encoding"] = "gzip"
    request = urllib.request.Request(url + EVENTS_PATH, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def file_events(data_dir: Path) -> list[dict[str, Any]]:
    """What an obsd's file output wrote so far (a partial last line is left out)."""
    path = Path(data_dir) / "events.jsonl"
    if not path.exists():
        return []
    found = []
    for line in path.read_bytes().split(b"\n"):
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found
