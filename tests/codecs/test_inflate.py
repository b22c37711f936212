"""Bounded, linear zlib decoding (obsd/codecs/inflate.py), and the inputs that share it."""

from __future__ import annotations

import gzip
import zlib

import pytest

from obsd.codecs import gelf, inflate, otlp, relaywire, sentry, sentry_body
from obsd.codecs.inflate import InflateError
from obsd.errors import ParseError
from tests.fuzz.work import measure

MEMBERS = b"".join(gzip.compress(b"x") for _ in range(5000))


def test_gunzip_joins_every_member() -> None:
    out, rest = inflate.gunzip(gzip.compress(b"ab") + gzip.compress(b"cd") + b"\0\0", 10)
    assert (out, rest) == (b"abcd", b"\0\0")


@pytest.mark.parametrize(
    ("data", "too_large", "cause"),
    [
        (gzip.compress(b"a" * 11), True, ""),
        (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xff\xff\xff", False, "Error -3"),
        (gzip.compress(b"a" * 5)[:-3], False, ""),
    ],
    ids=["over the limit", "invalid", "truncated"],
)
def test_errors_say_which(data: bytes, too_large: bool, cause: str) -> None:
    with pytest.raises(InflateError) as info:
        inflate.gunzip(data, 10)
    assert info.value.too_large is too_large
    assert info.value.cause.startswith(cause) if cause else info.value.cause == ""


def test_raw_deflate_and_zlib() -> None:
    raw = zlib.compressobj(wbits=inflate.RAW_DEFLATE)
    body = raw.compress(b"hello") + raw.flush()
    assert inflate.inflate(body, inflate.RAW_DEFLATE, 10) == (b"hello", b"")
    assert inflate.looks_zlib(zlib.compress(b"x")) and not inflate.looks_zlib(body)


@pytest.mark.parametrize(
    ("decode", "error"),
    [
        (lambda body: relaywire.inflate(body, 10**6), ParseError),
        (lambda body: sentry_body.decode_body(body, "gzip", 10**6), sentry.SentryRequestError),
        (lambda body: otlp.decode_body(body, "gzip", 10**6), otlp.OtlpRequestError),
        (lambda body: gelf.decompress(body, 10**6), ParseError),
    ],
    ids=["relay", "sentry", "otlp", "gelf"],
)
def test_many_tiny_members_are_fed_to_zlib_about_once(decode: object, error: type) -> None:
    """5,000 one-byte members: zlib sees each byte a bounded number of times.

    The relay input used to hand zlib the rest of the body for every member
    (quadratic: 262 MB fed for this 105 KB body); OTLP and GELF read only the
    first member.
    """
    outcome, work = measure(lambda: decode(MEMBERS), error)  # type: ignore[operator]
    assert outcome == b"x" * 5000
    assert work.fed <= 16 * len(MEMBERS)
