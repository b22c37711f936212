"""GELF (Graylog Extended Log Format) 1.1, read without Twisted.

A GELF message is one JSON object: ``version``, ``host``, ``short_message``,
optional ``full_message``, ``timestamp`` (seconds, with decimals) and ``level``
(a syslog severity, 0 emergency .. 7 debug; 1 when absent, as the spec says),
and ``_additional`` fields.  ``parse_gelf`` maps it onto obsd's event model:
``short_message`` is ``event``, ``host`` is ``host``, the level goes through
``obsd.events``' severity table, and each additional field keeps its name
without the underscore (``_user_id`` becomes ``user_id``; one that would
overwrite a reserved key is kept as ``data_<key>``).  ``_id`` is dropped, as
the spec tells servers to do, and noted in the result.

Over UDP a message may be zlib- or gzip-compressed, and may come in chunks
(``0x1e 0x0f``, an 8-byte message id, sequence number and count, at most 128
chunks).  ``ChunkAssembler`` puts chunks back together, bounded in pending
messages, in bytes held and in time (5 s, as Graylog).  ``decompress`` stops as
soon as the output passes its limit, so a compression bomb costs at most that.

Every problem raises ``GelfParseError`` and nothing else.
"""

from __future__ import annotations

import json
import math
import re
from collections import OrderedDict
from typing import Any, Final

from obsd import events
from obsd.codecs import jsonread
from obsd.codecs.inflate import GZIP, ZLIB, InflateError, gunzip, inflate, looks_zlib
from obsd.errors import ParseError

CHUNK_MAGIC: Final = b"\x1e\x0f"
GZIP_MAGIC: Final = b"\x1f\x8b"
#: the spec's limit on chunks per message
MAX_CHUNKS: Final = 128
#: Graylog drops a message whose chunks have not all arrived within 5 s.
CHUNK_TIMEOUT: Final = 5.0
#: the largest decompressed message obsd takes by default
MAX_MESSAGE_BYTES: Final = 1024 * 1024
_CHUNK_HEADER: Final = 12
_FIELD_NAME: Final = re.compile(r"^[\w.\-]*$")
#: GELF 1.0 fields that some clients (graypy) still send at the top level
_LEGACY_FIELDS: Final = ("facility", "line", "file")


class GelfParseError(ParseError):
    """A datagram, frame or body that is not a GELF message; the message says why."""

    def __init__(self, reason: str, *, too_large: bool = False) -> None:
        super().__init__(reason)
        #: refused for its size (HTTP answers 413), not for its content
        self.too_large = too_large


# --- decompression ----------------------------------------------------------------


def _inflate(data: bytes, wbits: int, limit: int, name: str) -> bytes:
    """Inflate one stream, never holding more than ``limit`` output bytes."""
    try:
        out, _rest = gunzip(data, limit) if wbits == GZIP else inflate(data, wbits, limit)
    except InflateError as exc:
        if exc.too_large:
            raise GelfParseError(
                f"{name} message inflates past {limit} bytes", too_large=True
            ) from None
        if exc.cause:
            raise GelfParseError(f"invalid {name} data: {exc.cause}") from None
        raise GelfParseError(f"truncated {name} data") from None
    return out


def decompress(payload: bytes, limit: int = MAX_MESSAGE_BYTES) -> bytes:
    """A GELF payload as JSON bytes: gzip and zlib are recognised by their first bytes."""
    if payload[:2] == GZIP_MAGIC:
        return _inflate(payload, GZIP, limit, "gzip")
    if looks_zlib(payload):
        return _inflate(payload, ZLIB, limit, "zlib")
    if len(payload) > limit:
        raise GelfParseError(f"message of {len(payload)} bytes, over {limit}", too_large=True)
    return payload


# --- chunks -----------------------------------------------------------------------


def parse_chunk(datagram: bytes) -> tuple[bytes, int, int, bytes]:
    """A chunk's (message id, sequence number, count, data)."""
    if len(datagram) < _CHUNK_HEADER or datagram[:2] != CHUNK_MAGIC:
        raise GelfParseError("not a GELF chunk")
    message_id = datagram[2:10]
    sequence, count = datagram[10], datagram[11]
    if not 0 < count <= MAX_CHUNKS:
        raise GelfParseError(f"chunk count {count} outside 1..{MAX_CHUNKS}")
    if sequence >= count:
        raise GelfParseError(f"chunk {sequence} of a {count}-chunk message")
    return message_id, sequence, count, datagram[_CHUNK_HEADER:]


class _Pending:
    __slots__ = ("count", "first_seen", "parts", "size")

    def __init__(self, count: int, now: float) -> None:
        self.count = count
        self.first_seen = now
        self.parts: dict[int, bytes] = {}
        self.size = 0


class ChunkAssembler:
    """Chunked messages put back together, bounded in messages, bytes and time.

    ``add`` returns the whole payload once its last chunk arrives.  A message
    still incomplete after ``timeout`` seconds is dropped by ``expire``; when a
    new message would pass ``max_pending`` or ``max_bytes``, the oldest pending
    ones are dropped first.  Each dropped message counts in ``incomplete``.
    """

    def __init__(
        self,
        max_pending: int = 1000,
        max_bytes: int = 64 * 1024 * 1024,
        timeout: float = CHUNK_TIMEOUT,
    ) -> None:
        self.max_pending = max_pending
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._pending: OrderedDict[bytes, _Pending] = OrderedDict()
        self.bytes = 0
        #: messages dropped before all their chunks came (timeout or a bound)
        self.incomplete = 0
        #: chunks that repeated one already held, or disagreed on the count
        self.bad_chunks = 0

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, datagram: bytes, now: float) -> bytes | None:
        """Hold one chunk; the reassembled payload when it completes a message."""
        message_id, sequence, count, data = parse_chunk(datagram)
        if count == 1:
            return data
        pending = self._pending.get(message_id)
        if pending is not None and now - pending.first_seen > self.timeout:
            self._drop(message_id)
            pending = None
        if pending is None:
            pending = _Pending(count, now)
            self._pending[message_id] = pending
        elif pending.count != count or sequence in pending.parts:
            self.bad_chunks += 1
            return None
        pending.parts[sequence] = data
        pending.size += len(data)
        self.bytes += len(data)
        if len(pending.parts) == pending.count:
            self._pending.pop(message_id)
            self.bytes -= pending.size
            return b"".join(pending.parts[i] for i in range(pending.count))
        self._make_room(message_id)
        return None

    def _make_room(self, keep: bytes) -> None:
        while (len(self._pending) > self.max_pending or self.bytes > self.max_bytes) and (
            self._pending
        ):
            oldest = next(iter(self._pending))
            self._drop(oldest)
            if oldest == keep:
                break

    def _drop(self, message_id: bytes) -> None:
        pending = self._pending.pop(message_id)
        self.bytes -= pending.size
        self.incomplete += 1

    def expire(self, now: float) -> int:
        """Drop messages older than ``timeout``; how many were dropped."""
        dropped = 0
        while self._pending:
            message_id, pending = next(iter(self._pending.items()))
            if now - pending.first_seen <= self.timeout:
                break
            self._drop(message_id)
            dropped += 1
        return dropped


# --- messages ---------------------------------------------------------------------


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = jsonread.loads(data)
    except (ValueError, RecursionError) as exc:
        raise GelfParseError(f"not JSON: {str(exc)[:200]}") from None
    if not isinstance(value, dict):
        raise GelfParseError(f"a GELF message is a JSON object, not {type(value).__name__}")
    return value


def _level(value: Any) -> str:
    if isinstance(value, bool):
        raise GelfParseError("level is a syslog severity number, not a boolean")
    if isinstance(value, int) and 0 <= value <= 7:
        return events.SYSLOG_SEVERITY_LEVELS[value]
    if isinstance(value, int | float | str):
        return events.normalise_level(value, events.INFO)
    raise GelfParseError(f"level is a syslog severity number, not {type(value).__name__}")


def _field_value(value: Any) -> Any:
    """Strings and numbers as they are (the spec's types); anything else as JSON text."""
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return value
    return json.dumps(value, separators=(",", ":"), default=str)


def parse_gelf(data: bytes) -> tuple[dict[str, Any], bool]:
    """One GELF JSON message as (event fields, whether an ``_id`` field was dropped)."""
    message = _json_object(data)
    host = message.get("host")
    if not isinstance(host, str) or not host.strip():
        raise GelfParseError("GELF needs a non-empty string 'host'")
    short = message.get("short_message")
    if not isinstance(short, str) or not short.strip():
        raise GelfParseError("GELF needs a non-empty string 'short_message'")
    fields: dict[str, Any] = {events.EVENT: short, events.HOST: host}
    full = message.get("full_message")
    if isinstance(full, str) and full:
        fields["full_message"] = full
    stamp = message.get("timestamp")
    if stamp is not None:
        if isinstance(stamp, bool) or not isinstance(stamp, int | float):
            raise GelfParseError("timestamp is seconds since the epoch as a number")
        if not math.isfinite(stamp) or stamp < 0:
            raise GelfParseError(f"timestamp {stamp!r} is not a time")
        fields[events.TIMESTAMP] = float(stamp)
    fields[events.LEVEL] = _level(message.get("level", 1))
    version = message.get("version")
    if isinstance(version, str):
        fields["gelf_version"] = version
    extra: dict[str, Any] = {}
    for name in _LEGACY_FIELDS:
        if name in message:
            extra[name] = _field_value(message[name])
    dropped_id = False
    for key, value in message.items():
        if not key.startswith("_"):
            continue
        if key == "_id":
            dropped_id = True
            continue
        name = key[1:]
        if not name or not _FIELD_NAME.match(name):
            raise GelfParseError(f"additional field name {key[:100]!r} is not [\\w.-]+")
        extra[name] = _field_value(value)
    events.keep_reserved_safe(extra, fields)
    return fields, dropped_id


def parse_payload(payload: bytes, limit: int = MAX_MESSAGE_BYTES) -> tuple[dict[str, Any], bool]:
    """A whole (unchunked) payload, compressed or not, as ``parse_gelf`` gives it."""
    return parse_gelf(decompress(payload, limit))

