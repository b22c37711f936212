"""Sentry's ingest wire format: the errors Relay answers with, JSON and envelopes.

Pure, and split by job: ``sentry_auth`` (who sent it), ``sentry_body``
(decompression), this module (JSON, envelope framing, the types and errors
they share) and ``sentry_fields`` (obsd's fields from a payload).  The
twisted.web resource calls them in order (``parse_auth``, ``decode_body``,
then ``parse_json`` or ``parse_envelope``, then the ``*_event_fields``
helpers) and turns a ``SentryRequestError`` into the HTTP
status and ``{"detail": ..., "causes": [...]}`` body that Sentry Relay answers
with, so raven and sentry-sdk see the answers they were written against.

Status and ``detail`` (Relay's texts where Relay has one), then when:

* 401 ``missing authorization information``: no auth in any source.
* 401 ``multiple authorization payloads detected``: two sources name
  different keys (or secrets, versions, projects).
* 401 ``bad x-sentry-auth header``: auth header or query without a key, or a
  non-numeric version.
* 401 ``bad envelope authentication header``: an envelope ``dsn`` that is not
  a DSN with key and project id.
* 400 ``bad sentry DSN public key``: key not 32 of ``[0-9A-Za-z_-]``.
* 400 ``unsupported protocol version (N)``: ``sentry_version`` above 7.
* 400 ``bad project path parameter``: ``/api/<id>/`` not a number.
* 400 ``empty request body``: nothing to parse.
* 400 ``invalid request body``: bad, truncated or unknown compression.
* 400 ``invalid JSON data``: JSON unparsable or not an object.
* 400 ``invalid event envelope``: broken envelope framing or headers, or the
  envelope ``dsn`` names another project than the URL.
* 403 ``event submission rejected with_reason: ProjectId``: unknown key, or a
  key of another project than the URL's (``authorize``).
* 413 ``request body exceeded the size limit``: over the limit, as received or
  while decoding.

The first cause, when there is one, is in ``causes``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final

from obsd.codecs import jsonread
from obsd.errors import ParseError

#: The newest protocol version Relay accepts (``sentry_version``).
PROTOCOL_VERSION: Final = 7
#: Relay's defaults: 1 MiB per event, 100 MiB per attachment and per envelope.
MAX_EVENT_BYTES: Final = 1024 * 1024
MAX_ATTACHMENT_BYTES: Final = 100 * 1024 * 1024
MAX_ENVELOPE_BYTES: Final = 100 * 1024 * 1024
#: How many stack frames (innermost) the ``frames`` summary keeps.
MAX_FRAMES: Final = 10
#: Items one envelope may hold (SDKs send a handful: an event, attachments, a session)
MAX_ENVELOPE_ITEMS: Final = 1000
ENVELOPE_CONTENT_TYPE: Final = "application/x-sentry-envelope"

#: Item types the Sentry envelope protocol defines that obsd knows by name;
#: any other type is still parsed and kept whole for forwarding.
KNOWN_ITEM_TYPES: Final = frozenset(
    (
        "event",
        "transaction",
        "attachment",
        "session",
        "sessions",
        "user_report",
        "feedback",
        "client_report",
        "check_in",
        "log",
        "profile",
    )
)

_HEX_ID_RE: Final = re.compile(r"[0-9a-f]{32}")


class SentryRequestError(ParseError):
    """A request Sentry ingest refuses, with the HTTP status and Relay-like detail."""

    def __init__(self, status: int, detail: str, cause: str | None = None) -> None:
        super().__init__(detail if cause is None else f"{detail}: {cause}")
        self.status = status
        self.detail = detail
        self.causes: tuple[str, ...] = () if cause is None else (cause,)

    def body(self) -> dict[str, Any]:
        """The JSON body Relay answers with: ``detail`` and, when known, ``causes``."""
        out: dict[str, Any] = {"detail": self.detail}
        if self.causes:
            out["causes"] = list(self.causes)
        return out


@dataclass(frozen=True, slots=True)
class SentryAuth:
    """Who sent a request: the DSN's public key and what the client said about itself."""

    key: str
    secret: str | None = None
    client: str | None = None
    version: int | None = None
    #: Only an envelope's ``dsn`` carries a project id; header and query auth do not.
    project_id: int | None = None


@dataclass(frozen=True, slots=True)
class EnvelopeItem:
    """One envelope item: its header and its payload bytes, exactly as received."""

    headers: dict[str, Any]
    payload: bytes

    @property
    def type(self) -> str:
        """The item type (``event``, ``attachment``, ...), ``""`` if absent."""
        value = self.headers.get("type")
        return value if isinstance(value, str) else ""


@dataclass(frozen=True, slots=True)
class Envelope:
    """A parsed envelope; ``items`` keep their payloads whole for forwarding."""

    headers: dict[str, Any]
    items: list[EnvelopeItem] = field(default_factory=list)

    @property
    def dsn(self) -> str | None:
        """The ``dsn`` header, which authenticates the envelope like ``X-Sentry-Auth``."""
        value = self.headers.get("dsn")
        return value if isinstance(value, str) else None

    @property
    def event_id(self) -> str | None:
        """The envelope's ``event_id`` as 32 hex digits, if it has a valid one."""
        return event_id_of(self.headers.get("event_id"))


# --- JSON and envelopes -----------------------------------------------------


def parse_json(data: bytes) -> dict[str, Any]:
    """Parse a JSON object, accepting the NaN and Infinity that Python's json writes.

    Raises:
        SentryRequestError: 400 when empty, malformed, or not an object.
    """
    if not data.strip():
        raise SentryRequestError(400, "empty request body")
    try:
        value = jsonread.loads(data)
    except (ValueError, RecursionError) as exc:
        raise SentryRequestError(400, "invalid JSON data", str(exc)[:200]) from None
    if not isinstance(value, dict):
        raise SentryRequestError(400, "invalid JSON data", "expected a JSON object")
    return value


def parse_envelope(data: bytes, max_items: int = MAX_ENVELOPE_ITEMS) -> Envelope:
    """Split an envelope into its header and items (length-prefixed or newline-ended).

    Raises:
        SentryRequestError: 400 ``invalid event envelope`` with Relay's cause;
            413 when it holds more than ``max_items`` items (parsing stops there,
            so a body of tiny items cannot become millions of events).
    """
    if not data.strip():
        raise SentryRequestError(400, "empty request body")
    header_line, pos = _line(data, 0)
    headers = _json_object(header_line, "invalid envelope header")
    items: list[EnvelopeItem] = []
    end = len(data)
    while pos < end:
        item_line, pos = _line(data, pos)
        if not item_line.strip():
            continue  # a blank line between items, as some SDKs write at the end
        item_headers = _json_object(item_line, "invalid item header")
        if not isinstance(item_headers.get("type"), str):
            raise _bad_envelope("invalid item header")
        length = item_headers.get("length")
        if length is None:
            payload, pos = _line(data, pos)
        else:
            if isinstance(length, bool) or not isinstance(length, int) or length < 0:
                raise _bad_envelope("invalid item header")
            if pos + length > end:
                raise _bad_envelope("unexpected end of file")
            payload = data[pos : pos + length]
            pos += length
            if pos < end:
                if data[pos : pos + 1] != b"\n":
                    raise _bad_envelope("missing newline after header or payload")
                pos += 1
        if len(items) >= max_items:
            raise SentryRequestError(
                413, "request body exceeded the size limit", f"more than {max_items} items"
            )
        items.append(EnvelopeItem(item_headers, payload))
    return Envelope(headers, items)


def _bad_envelope(cause: str) -> SentryRequestError:
    return SentryRequestError(400, "invalid event envelope", cause)


def _line(data: bytes, pos: int) -> tuple[bytes, int]:
    newline = data.find(b"\n", pos)
    if newline < 0:
        return data[pos:], len(data)
    return data[pos:newline], newline + 1


def _json_object(line: bytes, cause: str) -> dict[str, Any]:
    try:
        value = jsonread.loads(line)
    except (ValueError, RecursionError):
        raise _bad_envelope(cause) from None
    if not isinstance(value, dict):
        raise _bad_envelope(cause)
    return value


def event_id_of(value: Any) -> str | None:
    """A valid event id (32 hex digits, dashes dropped, lower case), else None."""
    if not isinstance(value, str):
        return None
    candidate = value.replace("-", "").lower()
    return candidate if _HEX_ID_RE.fullmatch(candidate) else None
