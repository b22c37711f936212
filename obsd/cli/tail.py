"""``python -m obsd tail``: follow a running obsd's events, rendered for a terminal.

Reads ``/api/obsd/v1/tail`` (NDJSON) and renders each event with structlog's
``ConsoleRenderer``; the server's marker lines (``{"_tail": ...}``) go to
stderr.  Filters are sent to the server, so a busy obsd sends only what
matches.
"""

from __future__ import annotations

import datetime
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import IO, Any
from urllib.parse import urlencode

import structlog

DEFAULT_URL = "http://127.0.0.1:9000"
TAIL_PATH = "/api/obsd/v1/tail"


def tail_url(base: str, matches: Sequence[str]) -> str:
    """The tail endpoint under ``base`` with ``match`` parameters."""
    query = urlencode([("match", m) for m in matches])
    return base.rstrip("/") + TAIL_PATH + (f"?{query}" if query else "")


def _stamp(value: Any) -> Any:
    """Epoch seconds as an RFC 3339 UTC stamp with milliseconds; anything else as it is."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            moment = datetime.datetime.fromtimestamp(value, datetime.UTC)
        except (OverflowError, OSError, ValueError):
            return value
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return value


def render_line(line: bytes, renderer: Any, out: IO[str], err: IO[str]) -> None:
    """Show one NDJSON line: an event on ``out``, a marker on ``err``."""
    try:
        doc = json.loads(line)
    except ValueError:
        err.write(f"obsd tail: not JSON: {line[:200]!r}\n")
        return
    if not isinstance(doc, dict):
        return
    if "_tail" in doc:
        if doc["_tail"] == "missed":
            err.write(f"obsd tail: missed {doc.get('missed')} events (this client was too slow)\n")
        elif doc["_tail"] == "started":
            err.write(f"obsd tail: following (match: {' '.join(doc.get('match', [])) or 'all'})\n")
        err.flush()
        return
    fields = {"timestamp": _stamp(doc.pop("timestamp", "")), "level": doc.pop("level", ""), **doc}
    fields.setdefault("event", "")
    out.write(renderer(None, fields["level"] or "info", fields) + "\n")
    out.flush()


def run_tail(
    url: str, matches: Sequence[str], out: IO[str] | None = None, err: IO[str] | None = None
) -> int:
    """Stream until the server ends or Ctrl-C; 0 on a clean end, 1 when obsd cannot be read."""
    out = out or sys.stdout
    err = err or sys.stderr
    renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    target = tail_url(url, matches)
    try:
        with urllib.request.urlopen(target) as response:
            for line in response:
                render_line(line, renderer, out, err)
    except urllib.error.HTTPError as exc:
        body = exc.read().decode("utf-8", "replace").strip()
        err.write(f"obsd tail: {target}: HTTP {exc.code}: {body}\n")
        return 1
    except (urllib.error.URLError, OSError) as exc:
        err.write(f"obsd tail: cannot read {target}: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 0
    return 0
