"""GELF messages, compression and chunks read into log events, within their bounds."""

from __future__ import annotations

import gzip
import json
import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from obsd.codecs.gelf import (
    ChunkAssembler,
    GelfParseError,
    decompress,
    parse_chunk,
    parse_gelf,
    parse_payload,
)

MESSAGE = {
    "version": "1.1",
    "host": "web1",
    "short_message": "disk full",
    "full_message": "disk full\nsee /var",
    "timestamp": 1764750000.25,
    "level": 3,
    "_user_id": 42,
    "_level": "custom",
    "_id": "nope",
}


def chunks(payload: bytes, size: int, message_id: bytes = b"ABCDEFGH") -> list[bytes]:
    parts = [payload[i : i + size] for i in range(0, len(payload), size)]
    return [b"\x1e\x0f" + message_id + bytes([n, len(parts)]) + p for n, p in enumerate(parts)]


class TestParseGelf:
    def test_fields_mapped(self) -> None:
        """GELF fields land on obsd's event keys; additional fields lose their underscore."""
        fields, dropped_id = parse_gelf(json.dumps(MESSAGE).encode())
        assert fields == {
            "event": "disk full",
            "host": "web1",
            "full_message": "disk full\nsee /var",
            "timestamp": 1764750000.25,
            "level": "error",
            "gelf_version": "1.1",
            "user_id": 42,
            "data_level": "custom",
        }
        assert dropped_id

    @pytest.mark.parametrize(
        ("level", "expected"),
        [(0, "critical"), (1, "critical"), (2, "critical"), (3, "error"), (4, "warning"),
         (5, "info"), (6, "info"), (7, "debug")],
    )
    def test_syslog_levels(self, level: int, expected: str) -> None:
        """Levels are syslog severities, mapped by obsd's table."""
        message = {"host": "h", "short_message": "m", "level": level}
        assert parse_gelf(json.dumps(message).encode())[0]["level"] == expected

    def test_level_defaults_to_alert(self) -> None:
        """Without a level the spec says 1 (alert)."""
        assert parse_gelf(b'{"host":"h","short_message":"m"}')[0]["level"] == "critical"

    def test_graypy_legacy_facility(self) -> None:
        """graypy's top-level facility (GELF 1.0) is kept."""
        fields, _ = parse_gelf(b'{"version":"1.0","host":"h","short_message":"m","facility":"app"}')
        assert fields["facility"] == "app"

    @pytest.mark.parametrize(
        ("data", "reason"),
        [
            (b"not json", "not JSON"),
            (b"[1]", "JSON object"),
            (b'{"short_message":"m"}', "host"),
            (b'{"host":"h"}', "short_message"),
            (b'{"host":"h","short_message":""}', "short_message"),
            (b'{"host":"h","short_message":"m","timestamp":"x"}', "timestamp"),
            (b'{"host":"h","short_message":"m","level":[1]}', "level"),
            (b'{"host":"h","short_message":"m","_a b":1}', "additional field"),
        ],
    )
    def test_bad_messages(self, data: bytes, reason: str) -> None:
        """Each kind of bad message raises GelfParseError saying why."""
        with pytest.raises(GelfParseError, match=reason):
            parse_gelf(data)


class TestDecompress:
    @pytest.mark.parametrize("pack", [zlib.compress, gzip.compress, lambda b: b])
    def test_formats(self, pack: object) -> None:
        """zlib, gzip and plain payloads are told apart by their first bytes."""
        data = json.dumps(MESSAGE).encode()
        assert decompress(pack(data)) == data  # type: ignore[operator]

    @pytest.mark.parametrize("pack", [zlib.compress, gzip.compress])
    def test_bomb_stops_at_limit(self, pack: object) -> None:
        """A compressed bomb is refused once its output passes the limit."""
        bomb = pack(b"{" + b" " * 50_000_000)  # type: ignore[operator]
        assert len(bomb) < 100_000
        with pytest.raises(GelfParseError, match="inflates past") as info:
            decompress(bomb, 1024 * 1024)
        assert info.value.too_large

    def test_truncated(self) -> None:
        """A cut zlib stream is an error, not a partial message."""
        with pytest.raises(GelfParseError, match=r"truncated|invalid"):
            decompress(zlib.compress(b"x" * 1000)[:-6])

    def test_whole_payload(self) -> None:
        """parse_payload decompresses and parses."""
        assert parse_payload(gzip.compress(json.dumps(MESSAGE).encode()))[0]["host"] == "web1"


class TestChunks:
    def test_reassembled_in_any_order(self) -> None:
        """Chunks arriving out of order give the whole payload on the last one."""
        payload = zlib.compress(json.dumps({**MESSAGE, "_pad": "x" * 5000}).encode() + b" " * 3)
        parts = chunks(payload, 100)
        assembler = ChunkAssembler()
        results = [assembler.add(p, 0.0) for p in reversed(parts)]
        assert results[:-1] == [None] * (len(parts) - 1)
        assert results[-1] == payload
        assert len(assembler) == 0 and assembler.bytes == 0

    def test_timeout_counts_incomplete(self) -> None:
        """A set missing a chunk after the timeout is dropped and counted."""
        assembler = ChunkAssembler(timeout=5.0)
        assembler.add(chunks(b"x" * 300, 100)[0], 0.0)
        assert assembler.expire(4.9) == 0
        assert assembler.expire(5.1) == 1
        assert assembler.incomplete == 1 and len(assembler) == 0 and assembler.bytes == 0

    def test_max_pending_drops_oldest(self) -> None:
        """Past max_pending the oldest incomplete message goes first, counted."""
        assembler = ChunkAssembler(max_pending=2)
        for i in range(3):
            assembler.add(chunks(b"x" * 300, 100, message_id=bytes([i]) * 8)[0], 0.0)
        assert len(assembler) == 2 and assembler.incomplete == 1

    def test_max_bytes(self) -> None:
        """Past max_bytes incomplete messages are dropped until it fits."""
        assembler = ChunkAssembler(max_bytes=1500)
        for i in range(3):
            assembler.add(chunks(b"x" * 2000, 1000, message_id=bytes([i]) * 8)[0], 0.0)
        assert assembler.bytes <= 1500
        assert assembler.incomplete == 2

    def test_duplicate_chunk_counted(self) -> None:
        """A repeated chunk is counted and ignored."""
        assembler = ChunkAssembler()
        first = chunks(b"x" * 300, 100)[0]
        assembler.add(first, 0.0)
        assembler.add(first, 0.0)
        assert assembler.bad_chunks == 1

    @pytest.mark.parametrize(
        ("datagram", "reason"),
        [
            (b"\x1e\x0fABCDEFGH\x00", "not a GELF chunk"),
            (b"\x1e\x0fABCDEFGH\x00\x00", "chunk count 0"),
            (b"\x1e\x0fABCDEFGH\x00\x81", "chunk count 129"),
            (b"\x1e\x0fABCDEFGH\x05\x03", "chunk 5 of a 3-chunk"),
        ],
    )
    def test_bad_chunks(self, datagram: bytes, reason: str) -> None:
        """Malformed chunk headers raise GelfParseError."""
        with pytest.raises(GelfParseError, match=reason):
            parse_chunk(datagram)

    def test_graypy_chunks(self) -> None:
        """graypy's own chunker produces chunks the assembler puts back together."""
        from graypy.handler import GELFWarningChunker

        pad = "".join(f"{i * 7919 % 10007:x}" for i in range(5000))  # compresses poorly
        payload = zlib.compress(json.dumps({**MESSAGE, "_pad": pad}).encode())
        assembler = ChunkAssembler()
        parts = list(GELFWarningChunker(chunk_size=1000).chunk_message(payload))
        assert len(parts) > 1
        results = [assembler.add(p, 0.0) for p in parts]
        assert results[-1] == payload
        assert struct.unpack("!B", parts[0][11:12])[0] == len(parts)


class TestProperties:
    @given(st.binary(max_size=400))
    def test_payload_returns_or_raises_its_error(self, data: bytes) -> None:
        """Any bytes as a payload: event fields, or GelfParseError, nothing else."""
        try:
            fields, _ = parse_payload(data, 4096)
        except GelfParseError:
            return
        assert isinstance(fields["event"], str) and fields["host"]

    @given(st.dictionaries(st.text(max_size=10), st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                    max_size=3),
        max_leaves=10), max_size=8))
    def test_json_objects_return_or_raise(self, message: dict[str, object]) -> None:
        """Any JSON object: event fields, or GelfParseError."""
        try:
            fields, _ = parse_gelf(json.dumps(message).encode())
        except GelfParseError:
            return
        assert fields["level"] in ("debug", "info", "warning", "error", "critical")

    @given(st.binary(max_size=100))
    def test_chunks_return_or_raise(self, data: bytes) -> None:
        """Any datagram after the chunk magic: held, a payload, or GelfParseError."""
        assembler = ChunkAssembler()
        try:
            result = assembler.add(b"\x1e\x0f" + data, 0.0)
        except GelfParseError:
            return
        assert result is None or isinstance(result, bytes)
