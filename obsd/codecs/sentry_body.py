"""Sentry request bodies: gzip, deflate, brotli and legacy base64+zlib, bounded.

Decompression stops at the endpoint's limit, so a compression bomb is a 413
after at most ``limit`` bytes of output, never a memory spike.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from typing import Final

import brotli

from obsd.codecs.inflate import InflateError, gunzip, inflate, looks_zlib
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


def _deflate_wbits(body: bytes) -> int:
    # HTTP "deflate" means zlib, but some clients send raw deflate; take both.
    return zlib.MAX_WBITS if looks_zlib(body) else -zlib.MAX_WBITS


def _maybe_legacy(body: bytes, limit: int) -> bytes:
    stripped = body.lstrip()
    if not stripped or stripped[:1] in (b"{", b"["):
        return body
    if looks_zlib(stripped):
        return _inflate(stripped, zlib.MAX_WBITS, limit, "zlib")
    try:
        raw = base64.b64decode(stripped, validate=True)
    except (binascii.Error, ValueError):
        return body  # not ours to judge here: the JSON parser will refuse it
    if looks_zlib(raw):
        return _inflate(raw, zlib.MAX_WBITS, limit, "base64 zlib")
    return body


def _inflate(data: bytes, wbits: int, limit: int, name: str) -> bytes:
    try:
        out, rest = inflate(data, wbits, limit)
    except InflateError as exc:
        raise _inflate_error(exc, limit, name) from None
    if rest.strip(b"\0\r\n\t "):
        raise _bad_body(f"trailing data after {name} stream")
    return out


def _gunzip(body: bytes, limit: int) -> bytes:
    """Every gzip member (RFC 1952 allows several), within ``limit``, in linear time."""
    try:
        out, rest = gunzip(body, limit)
    except InflateError as exc:
        raise _inflate_error(exc, limit, "gzip") from None
    if rest.strip(b"\0"):
        raise _bad_body("trailing data after gzip stream")
    return out


def _inflate_error(exc: InflateError, limit: int, name: str) -> SentryRequestError:
    if exc.too_large:
        return _too_large(limit)
    if exc.cause:
        return _bad_body(f"invalid {name} data: {exc.cause}")
    return _bad_body(f"truncated {name} data")


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
