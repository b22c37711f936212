"""Sentry request bodies: gzip, deflate, brotli and legacy base64+zlib, bounded.

Decompression stops at the endpoint's limit, so a compression bomb is a 413
after at most ``limit`` bytes of output, never a memory spike.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from typing import Final

import brotli  # type: ignore[import-untyped]

from obsd.codecs.sentry import SentryRequestError

_INFLATE_CHUNK: Final = 64 * 1024


def decode_body(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding`` (identity, deflate, gzip, br) within ``limit`` bytes.

    The limit holds for the body as received and for every decoded byte:
    decompression stops as soon as the output passes it, so a compression bomb
    costs at most ``limit`` bytes of memory.  A body with no encoding that is
    not JSON may be raven's older base64-of-zlib or bare zlib form.

    Raises:
        SentryRequestError: 413 over the limit; 400 for bad or truncated data.
    """
    if len(body) > limit:
        raise _too_large(limit)
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return _maybe_legacy(body, limit)
    if encoding in ("deflate", "zlib"):
        return _inflate(body, _deflate_wbits(body), limit, "deflate")
    if encoding in ("gzip", "x-gzip"):
        return _gunzip(body, limit)
    if encoding == "br":
        return _unbrotli(body, limit)
    raise SentryRequestError(
        400, "invalid request body", f"unsupported content encoding {encoding!r}"
    )


def _too_large(limit: int) -> SentryRequestError:
    return SentryRequestError(
        413, "request body exceeded the size limit", f"limit is {limit} bytes"
    )


def _bad_body(cause: str) -> SentryRequestError:
    return SentryRequestError(400, "invalid request body", cause)


def _looks_zlib(data: bytes) -> bool:
    return len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0


def _deflate_wbits(body: bytes) -> int:
    # HTTP "deflate" means zlib, but some clients send raw deflate; take both.
    return zlib.MAX_WBITS if _looks_zlib(body) else -zlib.MAX_WBITS


def _maybe_legacy(body: bytes, limit: int) -> bytes:
    stripped = body.lstrip()
    if not stripped or stripped[:1] in (b"{", b"["):
        return body
    if _looks_zlib(stripped):
        return _inflate(stripped, zlib.MAX_WBITS, limit, "zlib")
    try:
        raw = base64.b64decode(stripped, validate=True)
    except (binascii.Error, ValueError):
        return body  # not ours to judge here: the JSON parser will refuse it
    if _looks_zlib(raw):
        return _inflate(raw, zlib.MAX_WBITS, limit, "base64 zlib")
    return body


def _inflate(data: bytes, wbits: int, limit: int, name: str) -> bytes:
    out, end = _inflate_at(memoryview(data), 0, wbits, limit, name)
    if data[end:].strip(b"\0\r\n\t "):
        raise _bad_body(f"trailing data after {name} stream")
    return out


#: input fed to zlib per step: small first, so a body of many tiny gzip members
#: costs each one a few hundred bytes, doubling so a large member is fed in few calls
_FIRST_STEP: Final = 256
_MAX_STEP: Final = 1024 * 1024


def _inflate_at(
    view: memoryview, start: int, wbits: int, limit: int, name: str, used: int = 0
) -> tuple[bytes, int]:
    """Inflate the stream at ``start``; its output and the offset just after it.

    Never holds more than ``limit - used`` output bytes, and never copies the
    rest of the body: zlib's ``unused_data`` is at most the last input step.
    """
    inflater = zlib.decompressobj(wbits)
    out = bytearray()
    pos = start
    step = _FIRST_STEP
    pending: bytes | memoryview = b""
    try:
        while True:
            if not pending:
                if pos >= len(view):
                    break
                pending = view[pos : pos + step]
                pos += len(pending)
                step = min(step * 2, _MAX_STEP)
            room = limit - used - len(out)
            chunk = inflater.decompress(pending, min(room + 1, _INFLATE_CHUNK))
            out += chunk
            if used + len(out) > limit:
                raise _too_large(limit)
            pending = inflater.unconsumed_tail
            if inflater.eof:
                break
    except zlib.error as exc:
        raise _bad_body(f"invalid {name} data: {exc}") from None
    if not inflater.eof:
        raise _bad_body(f"truncated {name} data")
    return bytes(out), pos - len(inflater.unused_data)


def _gunzip(body: bytes, limit: int) -> bytes:
    """Inflate every gzip member (RFC 1952 allows several), within ``limit``, in linear time.

    Each member is read in place (no copy of the rest of the body per member)
    and the output is joined once, so many tiny members cost what one big one does.
    """
    view = memoryview(body)
    parts: list[bytes] = []
    used = 0
    offset = 0
    while True:
        part, offset = _inflate_at(view, offset, 16 + zlib.MAX_WBITS, limit, "gzip", used)
        parts.append(part)
        used += len(part)
        if offset >= len(body) or body[offset : offset + 2] != b"\x1f\x8b":
            break
    if body[offset:].strip(b"\0"):
        raise _bad_body("trailing data after gzip stream")
    return b"".join(parts)


def _unbrotli(body: bytes, limit: int) -> bytes:
    """Decode brotli in bounded steps: the first call takes all input, later ones drain."""
    decompressor = brotli.Decompressor()
    out = bytearray()
    pending = body
    try:
        while True:
            room = min(limit + 1 - len(out), _INFLATE_CHUNK)
            chunk = decompressor.process(pending, output_buffer_limit=room)
            out += chunk
            if len(out) > limit:
                raise _too_large(limit)
            if decompressor.is_finished() or (not chunk and not pending):
                break
            pending = b""
    except brotli.error as exc:
        raise _bad_body(f"invalid br data: {exc}") from None
    if not decompressor.is_finished():
        raise _bad_body("truncated br data")
    return bytes(out)
