"""The relay wire format: events as NDJSON, lossless for what obsd events hold.

Pure.  One event is one JSON object on one line, every key kept (private ``_``
keys too: the relay forwards ``_sentry_raw``).  JSON has no bytes, so a
``bytes`` value travels as ``{"$b64": "<base64>"}``; so that a sender's own
dict can never pass for such a tag, every dict key that starts with ``$`` is
sent with one more ``$`` in front (``$b64`` -> ``$$b64``) and loses it again
on decoding.  Floats keep their exact value (``repr`` round-trips), NaN and
infinities included; tuples and sets arrive as lists, other objects as their
``repr``.

The body of a request is gzip (or plain) NDJSON; ``decode_body`` inflates it
with a cap on the inflated size, so a small bomb cannot take the memory.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from obsd.codecs import jsonread
from obsd.codecs.inflate import InflateError, gunzip
from obsd.errors import ParseError

TAG = "$b64"
_TAG_TEXT = '"$'


def _fallback(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {TAG: base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, set | frozenset):
        return list(value)
    return repr(value)



def _escaped(value: Any) -> Any:
    """``value`` with bytes tagged and ``$`` keys escaped (the slow, exact path)."""
    if isinstance(value, dict):
        return {
            ("$" + k if isinstance(k, str) and k[:1] == "$" else k): _escaped(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_escaped(v) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return {TAG: base64.b64encode(bytes(value)).decode("ascii")}
    return value


_tags = [0]  # bytes values tagged by the current fast encode (single-threaded use)


def _counting_fallback(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        _tags[0] += 1
    return _fallback(value)


_encode = json.JSONEncoder(
    ensure_ascii=False, allow_nan=True, separators=(",", ":"), default=_counting_fallback
).encode


def encode_event(event: dict[str, Any]) -> bytes:
    """One event as one NDJSON line (UTF-8, ``\\n``-terminated).

    The fast path encodes directly; only when the text shows a ``"$`` that is
    not one of its own tags (a sender's ``$`` key, or a string holding ``"$``)
    is the event re-encoded with escaping.
    """
    _tags[0] = 0
    text = _encode(event)
    if text.count(_TAG_TEXT) != _tags[0]:
        text = _encode(_escaped(event))
    return text.encode("utf-8", "surrogatepass") + b"\n"


def _hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and TAG in obj:
        value = obj[TAG]
        if isinstance(value, str):
            try:
                return base64.b64decode(value, validate=True)
            except ValueError:
                raise ParseError(f"bad base64 in {TAG} value") from None
    if any(k[:1] == "$" for k in obj):
        return {(k[1:] if k[:2] == "$$" else k): v for k, v in obj.items()}
    return obj


def decode_event(line: bytes) -> dict[str, Any]:
    """One NDJSON line back to the event; ``ParseError`` if it is not one."""
    try:
        text = line.decode("utf-8", "surrogatepass")
        # only a line with a "$ can hold a tag or an escaped key: skip the hook otherwise
        value = json.loads(text, object_hook=_hook) if _TAG_TEXT in text else jsonread.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ParseError(f"not a JSON line: {exc}") from None
    if not isinstance(value, dict):
        raise ParseError(f"expected a JSON object, got {type(value).__name__}")
    return value


def inflate(body: bytes, max_bytes: int) -> bytes:
    """Gunzip ``body`` (one or more gzip members), refusing more than ``max_bytes`` out."""
    try:
        out, rest = gunzip(body, max_bytes)
    except InflateError as exc:
        if exc.too_large:
            raise ParseError(f"inflated body is larger than {max_bytes} bytes") from None
        if exc.cause:
            raise ParseError(f"bad gzip body: {exc.cause}") from None
        raise ParseError("truncated gzip body") from None
    if rest:
        raise ParseError("bad gzip body: trailing data after the last member")
    return out


def decode_body(
    body: bytes, *, gzipped: bool, max_bytes: int, max_events: int
) -> list[dict[str, Any]]:
    """A request body (gzip or plain NDJSON) to its events, all or nothing."""
    text = inflate(body, max_bytes) if gzipped else body
    if len(text) > max_bytes:
        raise ParseError(f"body is larger than {max_bytes} bytes")
    found: list[dict[str, Any]] = []
    for line in text.split(b"\n"):
        if not line.strip():
            continue
        if len(found) >= max_events:
            raise ParseError(f"more than {max_events} events in one request")
        found.append(decode_event(line))
    return found


__all__ = ["decode_body", "decode_event", "encode_event", "inflate"]
