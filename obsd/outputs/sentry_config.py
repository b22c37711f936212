"""The Sentry output's settings, and the records its queue holds (how to send, then the body).

Kept apart from ``outputs/sentry.py`` (forwarding, dedupe, rate limits) so
each reads on its own; ``obsd.outputs.sentry`` exports both.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import attrs

from obsd import events
from obsd.codecs import sentry_encode as codec
from obsd.config.model import HttpOutputConfig
from obsd.config.schema import Problems, at_least, setting
from obsd.errors import ParseError


def _check_dsn(value: str) -> str | None:
    if not value:
        return None
    try:
        codec.parse_dsn(value)
    except ParseError as exc:
        return f"not a Sentry DSN: {exc}"
    return None


def _check_projects(value: dict[str, str]) -> str | None:
    for incoming, dsn in value.items():
        if not incoming.isdigit():
            return f"keys are incoming project ids (numbers), not {incoming!r}"
        problem = _check_dsn(dsn)
        if problem:
            return f"project {incoming}: {problem}"
    return None


def _check_level(value: str) -> str | None:
    if value.lower() not in events.LEVEL_ALIASES:
        return f"unknown level {value!r} (levels: {', '.join(events.LEVELS)})"
    return None


@attrs.frozen(kw_only=True)
class Config(HttpOutputConfig):
    """``[outputs.sentry]``."""

    dsn: str = setting(
        "",
        secret=True,
        check=_check_dsn,
        help="upstream DSN https://<key>@host/<project>: where reports and log errors go",
    )
    projects: dict[str, str] = setting(
        factory=dict,
        secret=True,
        check=_check_projects,
        help="incoming project id -> upstream DSN; unmapped projects go to dsn",
    )
    connect_timeout: float = setting(
        5.0, check=at_least(0.1), help="seconds to connect to an upstream",
        client_sees="an upstream that does not accept a connection within it fails the request; "
                    "the report stays queued and is retried with backoff",
    )
    request_timeout: float = setting(
        30.0, check=at_least(0.1), help="seconds one upstream request may take",
        client_sees="a request taking longer is cancelled and retried with the queue's backoff",
    )
    max_in_flight: int = setting(
        8, check=at_least(1), help="upstream requests at once (per upstream)"
    )
    batch_size: int = setting(1, check=at_least(1), help="records per send; each is one request")
    batch_timeout: float = setting(
        0.0, check=at_least(0), help="seconds a record waits before it is sent"
    )
    min_level: str = setting(
        "error", check=_check_level, help="log events below this level are not sent"
    )
    tags: list[str] = setting(
        factory=list, help="log event fields sent as Sentry tags (e.g. appname, source)"
    )
    dedupe_window: float = setting(
        60.0,
        check=at_least(0),
        help="seconds in which identical log errors are sent once (0: send all)",
        client_sees="identical log errors within it reach Sentry once; the next one sent carries "
                    "extra.obsd_repeats_held_back",
    )
    max_held: int = setting(
        10_000,
        check=at_least(1),
        help="records held back for upstream rate limits at most; past it the oldest "
        "goes to the dead-letter file",
        client_sees="past it the oldest record held for a rate limit goes to the dead-letter file "
                    "(dropped.rate_limited)",
    )


def check_config(name: str, cfg: Config, whole: Any, problems: Problems) -> None:
    """An output with neither ``dsn`` nor ``projects`` has nowhere to send."""
    if not cfg.dsn and not cfg.projects:
        problems.add(f"outputs.{name}.dsn", "set dsn (or projects) to the upstream Sentry")


# --- records ----------------------------------------------------------------


def make_record(header: dict[str, Any], body: bytes) -> bytes:
    """A queued record: one JSON header line (how to send), then the body to POST."""
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + body


def split_record(record: bytes) -> tuple[dict[str, Any], bytes]:
    line, _, body = record.partition(b"\n")
    header: dict[str, Any] = json.loads(line)
    return header, body


def decode_record(record: bytes) -> Any:
    """A record as the dead-letter file shows it: header, and the body as text or base64."""
    try:
        header, body = split_record(record)
    except ValueError:
        return base64.b64encode(record).decode()
    try:
        header["body"] = body.decode("utf-8")
    except UnicodeDecodeError:
        header["body_base64"] = base64.b64encode(body).decode()
    return header
