"""Prometheus remote-write 1.0 messages, encoded by hand (no Twisted, no generated classes).

The spec's ``WriteRequest`` needs four tiny messages::

    WriteRequest { repeated TimeSeries timeseries = 1; }
    TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2; }
    Label        { string name = 1; string value = 2; }
    Sample       { double value = 1; int64 timestamp = 2; }  // ms since the epoch

Prometheus publishes no Python package for them; writing the few bytes here
is smaller than generating and shipping classes.  One encoded series is a
whole ``timeseries`` field, so a batch of them joined is a ``WriteRequest``;
the body is then snappy-compressed (block format) by ``cramjam``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final

import cramjam

_DOUBLE: Final = struct.Struct("<d")
HEADERS: Final = {
    b"Content-Type": [b"application/x-protobuf"],
    b"Content-Encoding": [b"snappy"],
    b"X-Prometheus-Remote-Write-Version": [b"0.1.0"],
}


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return bytes((tag << 3 | 2,)) + _varint(len(payload)) + payload


def encode_series(
    name: str, labels: Iterable[tuple[str, str]], value: float, timestamp_ms: int
) -> bytes:
    """One ``timeseries`` field of a WriteRequest: labels sorted by name, one sample."""
    pairs = sorted({"__name__": name, **dict(labels)}.items())
    body = b"".join(
        _field(1, _field(1, k.encode()) + _field(2, v.encode())) for k, v in pairs if v
    )
    if timestamp_ms < 0:
        raise ValueError(f"timestamp before 1970: {timestamp_ms}")
    sample = b"\x09" + _DOUBLE.pack(value) + b"\x10" + _varint(timestamp_ms)
    return _field(1, body + _field(2, sample))


def compress(write_request: bytes) -> bytes:
    """Snappy block format, as the spec asks (not the framed format)."""
    return bytes(cramjam.snappy.compress_raw(write_request))


def decompress(body: bytes) -> bytes:
    return bytes(cramjam.snappy.decompress_raw(body))
