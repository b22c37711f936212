"""``obsd top``: a live terminal view of a running obsd, like ``vector top``.

Polls ``/status`` and draws its ``flow`` section (inputs, route edges, outputs
with rates and queue depths) plus the last problems.  The live view redraws
with plain ANSI (home, clear) every ``--interval`` seconds; ``--once`` prints a
single frame as plain text, no escape codes, for scripts and tests.  This is a
command-line client, not the daemon: it blocks on its own HTTP reads.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import IO, Any

#: ANSI: cursor home, clear to the end of the screen
_REDRAW = "\x1b[H\x1b[J"


def fetch_status(base: str, timeout: float = 5.0) -> dict[str, Any]:
    """``GET base/status`` as a dict; raises ``OSError`` when obsd cannot be read."""
    with urllib.request.urlopen(base.rstrip("/") + "/status", timeout=timeout) as response:
        doc = json.loads(response.read())
    if not isinstance(doc, dict) or "flow" not in doc:
        raise OSError(f"{base}/status is not an obsd status document with a flow")
    return doc


def _rate(value: float) -> str:
    return f"{value:.2f}/s"


def _count(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w)
                       for i, (h, w) in enumerate(zip(header, widths, strict=True)))]
    for row in rows:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    return lines


def render_frame(doc: Mapping[str, Any], url: str) -> str:
    """One frame of ``obsd top`` as plain text."""
    flow = doc["flow"]
    ready = "ready" if doc.get("ready") else "NOT READY"
    lines = [
        f"obsd top  {url}  up {doc.get('uptime', 0):.0f} s  {ready}  "
        f"(rates over the last {flow['window']:.0f} s)",
        "",
    ]
    lines += _table(
        ["INPUT", "TYPE", "ACCEPTED", "RATE", "ERRORS"],
        [[n["name"], n["type"], _count(n["total"]), _rate(n["rate"]), _count(n["errors"])]
         for n in flow["inputs"]],
    ) if flow["inputs"] else ["INPUT  (none: obsd receives nothing)"]
    lines.append("")
    lines += _table(
        ["ROUTE", "MATCHES", "OUTPUT", "RATE"],
        [[e["route"], e["label"], e["output"], _rate(e["rate"])] for e in flow["edges"]],
    )
    lines.append("")
    lines += _table(
        ["OUTPUT", "TYPE", "STATE", "SENT", "RATE", "QUEUED", "ERRORS"],
        [[n["name"], n["type"], n["state"], _count(n["sent"]), _rate(n["rate"]),
          _count(n["queued"]), _count(n["errors"])] for n in flow["outputs"]],
    )
    problems = doc.get("errors") or {}
    if problems:
        lines += ["", "LAST PROBLEMS"]
        for component, noted in problems.items():
            lines.append(f"  {component}: {noted['message']} ({noted['count']} so far)")
    return "\n".join(lines) + "\n"


def run_top(
    url: str, interval: float = 2.0, once: bool = False, out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    """Draw frames until Ctrl-C (or one with ``once``); 1 when obsd cannot be read."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        while True:
            try:
                doc = fetch_status(url)
            except (OSError, ValueError) as exc:
                if once:
                    err.write(f"obsd top: cannot read {url}/status: {exc}\n")
                    return 1
                out.write(f"{_REDRAW}obsd top: cannot read {url}/status: {exc}\n")
                out.flush()
            else:
                frame = render_frame(doc, url)
                if once:
                    out.write(frame)
                    return 0
                out.write(_REDRAW + frame)
                out.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0
