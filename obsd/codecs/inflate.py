"""Bounded, linear-time zlib decoding, shared by every input that takes compressed bodies.

Two promises every caller needs: output never passes ``limit`` (a compression
bomb costs at most ``limit`` bytes), and the work is linear in the input, even
for a gzip body of many tiny members (RFC 1952 allows any number): the input is
fed to zlib in growing steps from a ``memoryview``, so zlib's ``unused_data``
is never a copy of the rest of the body.

Errors are ``InflateError``; each codec turns them into its own answer (413 for
``too_large``, 400 otherwise).
"""

from __future__ import annotations

import zlib
from typing import Final

GZIP: Final = 16 + zlib.MAX_WBITS
ZLIB: Final = zlib.MAX_WBITS
RAW_DEFLATE: Final = -zlib.MAX_WBITS
GZIP_MAGIC: Final = b"\x1f\x8b"

#: output asked of zlib per call
_OUT_STEP: Final = 64 * 1024
#: input fed to zlib per step: small first, so a body of many tiny gzip members
#: costs each one a few hundred bytes, doubling so a large member is fed in few calls
_FIRST_STEP: Final = 256
_MAX_STEP: Final = 1024 * 1024


class InflateError(ValueError):
    """Compressed data that is over the limit (``too_large``), invalid or truncated."""

    def __init__(self, message: str, *, too_large: bool = False, cause: str = "") -> None:
        super().__init__(message)
        self.too_large = too_large
        #: zlib's own words, for ``invalid`` data
        self.cause = cause


def looks_zlib(data: bytes) -> bool:
    """Whether ``data`` starts with a zlib header (RFC 1950)."""
    return len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0


def inflate_at(
    view: memoryview, start: int, wbits: int, limit: int, used: int = 0
) -> tuple[bytes, int]:
    """Inflate the stream at ``start``: its output and the offset just after it.

    Never holds more than ``limit - used`` output bytes.

    Raises:
        InflateError: over the limit, invalid, or truncated data.
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
            out += inflater.decompress(pending, min(room + 1, _OUT_STEP))
            if used + len(out) > limit:
                raise InflateError(f"inflates past {limit} bytes", too_large=True)
            pending = inflater.unconsumed_tail
            if inflater.eof:
                break
    except zlib.error as exc:
        raise InflateError("invalid data", cause=str(exc)) from None
    if not inflater.eof:
        raise InflateError("truncated data")
    return bytes(out), pos - len(inflater.unused_data)


def inflate(data: bytes, wbits: int, limit: int) -> tuple[bytes, bytes]:
    """One stream within ``limit``: its output, and whatever followed the stream."""
    out, end = inflate_at(memoryview(data), 0, wbits, limit)
    return out, data[end:]


def gunzip(body: bytes, limit: int) -> tuple[bytes, bytes]:
    """Every gzip member of ``body`` within ``limit``: the output, and what followed the last.

    Each member is read in place and the output joined once, so many tiny
    members cost what one big one does.
    """
    view = memoryview(body)
    parts: list[bytes] = []
    used = 0
    offset = 0
    while True:
        part, offset = inflate_at(view, offset, GZIP, limit, used)
        parts.append(part)
        used += len(part)
        if offset >= len(body) or body[offset : offset + 2] != GZIP_MAGIC:
            break
    return b"".join(parts), body[offset:]
