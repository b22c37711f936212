"""The sending side of Sentry's wire format: DSNs, auth, envelopes, rate limits, log events.

Pure (the parsing side is ``obsd.codecs.sentry``).  The Sentry output uses this
to re-authenticate forwarded reports, to write the envelopes it makes from log
events, to tell which data categories an envelope holds, and to read the
upstream's ``X-Sentry-Rate-Limits`` / ``Retry-After`` answers as the Sentry
SDKs do.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Final
from urllib.parse import urlsplit

import brotli

from obsd import events
from obsd.codecs import tracebacks
from obsd.codecs.sentry import Envelope, EnvelopeItem
from obsd.errors import ParseError

#: Retry-After when a 429 gives none (what the SDKs assume).
DEFAULT_RETRY_AFTER: Final = 60.0
#: Sentry's data category of each envelope item type (sentry-sdk's table);
#: types not named here count as ``default``.
ITEM_CATEGORIES: Final[Mapping[str, str]] = {
    "event": "error",
    "transaction": "transaction",
    "security": "security",
    "attachment": "attachment",
    "session": "session",
    "sessions": "session",
    "profile": "profile",
    "profile_chunk": "profile_chunk",
    "replay_event": "replay",
    "replay_recording": "replay",
    "replay_video": "replay",
    "client_report": "internal",
    "check_in": "monitor",
    "statsd": "metric_bucket",
    "log": "log_item",
    "span": "span",
    "feedback": "feedback",
    "user_report": "user_report_v2",
}
_KEY_RE: Final = re.compile(r"[0-9A-Za-z_-]{32}")
_EVENT_FIELDS_USED: Final = frozenset(
    (
        events.ID,
        events.KIND,
        events.EVENT,
        events.LEVEL,
        events.TIMESTAMP,
        events.HOST,
        events.TAGS,
        "appname",
        "exception",
        "exc_info",
        "exc_text",
    )
)


@dataclass(frozen=True, slots=True)
class Dsn:
    """An upstream DSN: where to send and with which key."""

    scheme: str
    host: str
    port: int | None
    path: str
    key: str
    secret: str | None
    project_id: int
    text: str

    @property
    def origin(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.scheme}://{self.host}{port}{self.path}"

    def url(self, endpoint: str) -> str:
        """The upstream URL of ``store`` or ``envelope`` for this DSN's project."""
        return f"{self.origin}/api/{self.project_id}/{endpoint}/"

    @property
    def public(self) -> str:
        """The DSN without its secret: what an envelope ``dsn`` header names."""
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.scheme}://{self.key}@{self.host}{port}{self.path}/{self.project_id}"


def parse_dsn(text: str) -> Dsn:
    """Read ``https://<key>[:<secret>]@host[:port][/path]/<project>``.

    Raises:
        ParseError: with what is wrong (never echoing the key).
    """
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https"):
        raise ParseError("a DSN starts with http:// or https://")
    if not parts.username:
        raise ParseError("a DSN names its public key before the @")
    if not _KEY_RE.fullmatch(parts.username):
        raise ParseError("the DSN's public key is not 32 characters of [0-9A-Za-z_-]")
    if not parts.hostname:
        raise ParseError("a DSN names a host")
    try:
        port = parts.port
    except ValueError:
        raise ParseError("the DSN's port is not a number") from None
    path, _, project = parts.path.rstrip("/").rpartition("/")
    if not project.isdigit():
        raise ParseError("a DSN ends with the numeric project id")
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    return Dsn(
        scheme=parts.scheme,
        host=host,
        port=port,
        path=path,
        key=parts.username,
        secret=parts.password or None,
        project_id=int(project),
        text=text,
    )


def auth_header(key: str, client: str | None, secret: str | None = None) -> str:
    """``X-Sentry-Auth`` for the upstream: its key, protocol 7, the client's own name."""
    parts = ["Sentry sentry_key=" + key, "sentry_version=7"]
    if client:
        parts.append("sentry_client=" + client.replace(",", " "))
    if secret:
        parts.append("sentry_secret=" + secret)
    return ", ".join(parts)


# --- bodies and envelopes ---------------------------------------------------


def encode_body(data: bytes, content_encoding: str) -> bytes:
    """Compress ``data`` again with the encoding the client used."""
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        return data
    if encoding in ("gzip", "x-gzip"):
        return gzip.compress(data, mtime=0)
    if encoding in ("deflate", "zlib"):
        return zlib.compress(data)
    if encoding == "br":
        return bytes(brotli.compress(data))
    raise ParseError(f"unsupported content encoding {encoding!r}")


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def encode_envelope(headers: Mapping[str, Any], items: Iterable[EnvelopeItem]) -> bytes:
    """An envelope: the header line, then each item's header (with ``length``) and payload."""
    out = [_json(headers)]
    for item in items:
        out.append(_json({**item.headers, "length": len(item.payload)}))
        out.append(item.payload)
    return b"\n".join(out) + b"\n"


def replace_envelope_header(data: bytes, headers: Mapping[str, Any]) -> bytes:
    """``data`` with its first line replaced by ``headers``; items stay byte for byte."""
    newline = data.find(b"\n")
    rest = b"" if newline < 0 else data[newline:]
    return _json(headers) + rest


def item_category(item_type: str) -> str:
    """The data category Sentry rate-limits an item type under."""
    return ITEM_CATEGORIES.get(item_type, "default")


def envelope_categories(envelope: Envelope) -> list[str]:
    """One category per item, in item order."""
    return [item_category(item.type) for item in envelope.items]


def store_category(payload: Mapping[str, Any]) -> str:
    """The category of a store payload: a transaction, a security report, else an error."""
    kind = payload.get("type")
    if kind == "transaction":
        return "transaction"
    if kind in ("csp", "hpkp", "expectct", "expectstaple", "nel"):
        return "security"
    return "error"


# --- rate limits ------------------------------------------------------------


def parse_retry_after(value: str | None, now: float) -> float:
    """Seconds to wait from a ``Retry-After`` (seconds or an HTTP date); 60 if unreadable."""
    if value is None or not value.strip():
        return DEFAULT_RETRY_AFTER
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(text).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return DEFAULT_RETRY_AFTER
    if not math.isfinite(seconds):
        return DEFAULT_RETRY_AFTER
    return max(0.0, seconds)


def parse_rate_limits(header: str) -> dict[str, float]:
    """``X-Sentry-Rate-Limits`` as {category: seconds}; ``""`` stands for every category.

    The header is ``<seconds>:<cat>;<cat>...:<scope>[:<reason>[:<namespaces>]]``
    limits, comma separated; an empty category list means all categories.  As
    in the SDKs, a limit that cannot be read is skipped, and the longest wait
    named for a category wins.
    """
    limits: dict[str, float] = {}
    for limit in header.split(","):
        parts = limit.strip().split(":")
        if len(parts) < 2:
            continue
        try:
            seconds = float(parts[0])
        except ValueError:
            continue
        if not math.isfinite(seconds) or seconds < 0:
            continue
        categories = [c.strip() for c in parts[1].split(";") if c.strip()] or [""]
        for category in categories:
            limits[category] = max(limits.get(category, 0.0), seconds)
    return limits


def rate_limits_from_answer(
    status: int, rate_limits: str | None, retry_after: str | None, now: float
) -> dict[str, float]:
    """The holds an upstream answer asks for, as {category: seconds}.

    ``X-Sentry-Rate-Limits`` wins on any answer; a 429 without it holds every
    category for ``Retry-After`` (60 s if absent).
    """
    if rate_limits is not None and rate_limits.strip():
        found = parse_rate_limits(rate_limits)
        if found:
            return found
    if status == 429:
        return {"": parse_retry_after(retry_after, now)}
    return {}


# --- log events as Sentry events --------------------------------------------


def _tag_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:200]


def log_event_payload(
    event: Mapping[str, Any],
    *,
    tag_fields: Sequence[str] = (),
    sdk_version: str = "0",
) -> dict[str, Any]:
    """A Sentry event for one obsd log event: what Sentry shows and groups on.

    ``event`` and ``level`` become message and level (through
    ``events.LEVEL_SENTRY``), ``appname`` the logger, ``host`` the server name;
    ``tag_fields`` become tags, a traceback becomes ``exception``, the rest of the
    public fields go to ``extra``.
    """
    level = events.normalise_level(event.get(events.LEVEL), events.ERROR_LEVEL)
    payload: dict[str, Any] = {
        "event_id": _event_id(event.get(events.ID)),
        "level": events.LEVEL_SENTRY[level],
        "platform": "python",
        "logger": str(event.get("appname") or event.get(events.SOURCE) or "obsd"),
        "sdk": {"name": "obsd", "version": sdk_version},
    }
    timestamp = event.get(events.TIMESTAMP)
    if isinstance(timestamp, int | float) and not isinstance(timestamp, bool):
        payload["timestamp"] = float(timestamp)
    host = event.get(events.HOST)
    if isinstance(host, str) and host:
        payload["server_name"] = host
    message = event.get(events.EVENT)
    text = message if isinstance(message, str) else json.dumps(message, default=str)
    payload["logentry"] = {"formatted": text}
    tags: dict[str, str] = {}
    own_tags = event.get(events.TAGS)
    if isinstance(own_tags, Mapping):
        tags.update({str(k): _tag_text(v) for k, v in own_tags.items()})
    for name in tag_fields:
        if name in event and event[name] is not None and not name.startswith("_"):
            tags[name] = _tag_text(event[name])
    if tags:
        payload["tags"] = tags
    values = tracebacks.exception_values(event)
    if values:
        payload["exception"] = {"values": values}
    extra = {
        k: v
        for k, v in event.items()
        if not k.startswith("_") and k not in _EVENT_FIELDS_USED and k not in tag_fields
    }
    if values is None:
        for key in ("exception", "exc_info", "exc_text"):
            if key in event:  # text obsd could not read as a traceback: keep it visible
                extra[key] = event[key]
    if extra:
        payload["extra"] = extra
    return payload


def _event_id(value: Any) -> str:
    if isinstance(value, str):
        candidate = value.replace("-", "").lower()
        if re.fullmatch(r"[0-9a-f]{32}", candidate):
            return candidate
    return events.new_event_id()


def log_event_envelope(payload: Mapping[str, Any], dsn: Dsn, sent_at: str) -> bytes:
    """One-event envelope, authenticated by its ``dsn`` header like the SDKs write it."""
    body = _json(payload)
    headers = {"event_id": payload["event_id"], "dsn": dsn.public, "sent_at": sent_at}
    return encode_envelope(headers, [EnvelopeItem({"type": "event"}, body)])
