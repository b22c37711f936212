"""The on-disk part of an output's queue: an append-only log of segments.

Pure file I/O, no Twisted: ``obsd.delivery.diskbuffer`` runs every call in a thread, one
at a time.  Each record carries a format version, its sequence number and a
CRC-32, so a flipped byte or a torn write is found, skipped and counted, and
reading resynchronises on the next good record: a damaged spool never stops
obsd from starting, and never has to be deleted by hand.

Layout of a spool directory::

    00000000000000000000.seg   records with seq >= 0, in order
    00000000000000052113.seg   the next segment, named by its first seq
    ack                        the lowest seq not yet delivered (with a CRC)

A record is ``b"OQ" | version (1 byte) | seq (8) | length (4) | crc32 (4) |
payload``; the CRC covers seq, length and payload.
"""

from __future__ import annotations

import itertools
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

MAGIC = b"OQ"
VERSION = 1
_HEADER = struct.Struct(">2sBQII")
HEADER_SIZE = _HEADER.size
_SYNC_MARK = MAGIC + bytes([VERSION])
_ACK = struct.Struct(">QI")
SEGMENT_SUFFIX = ".seg"


def encode_record(seq: int, payload: bytes) -> bytes:
    """One record as it is written to a segment."""
    length = len(payload)
    crc = zlib.crc32(payload, zlib.crc32(struct.pack(">QI", seq, length)))
    return _HEADER.pack(MAGIC, VERSION, seq, length, crc) + payload


def scan(data: bytes, start: int = 0) -> Iterator[tuple[int, int, bytes | None, str]]:
    """Yield ``(offset, seq, payload, problem)`` for each record in ``data``.

    A good record has ``problem == ""``.  A damaged one is yielded once with
    ``payload = None`` and a reason, and reading goes on at the next good
    record (found by its sync mark and checked by its CRC).
    """
    pos = start
    end = len(data)
    while pos < end:
        if end - pos < HEADER_SIZE:
            yield pos, -1, None, f"truncated record header at offset {pos}"
            return
        magic, version, seq, length, crc = _HEADER.unpack_from(data, pos)
        if magic == MAGIC and version == VERSION and pos + HEADER_SIZE + length <= end:
            body = data[pos + HEADER_SIZE : pos + HEADER_SIZE + length]
            if zlib.crc32(body, zlib.crc32(data[pos + 3 : pos + 15])) == crc:
                yield pos, seq, body, ""
                pos += HEADER_SIZE + length
                continue
            reason = f"checksum mismatch in record {seq} at offset {pos}"
        elif magic == MAGIC and version != VERSION:
            reason = f"unknown record format version {version} at offset {pos}"
        elif magic == MAGIC:
            wanted = HEADER_SIZE + length
            reason = f"truncated record at offset {pos} ({end - pos} of {wanted} bytes)"
        else:
            reason = f"no record header at offset {pos}"
        yield pos, -1, None, reason
        pos = _resync(data, pos + 1)


def _resync(data: bytes, pos: int) -> int:
    """The offset of the next record that checks out, or the end of ``data``."""
    while True:
        pos = data.find(_SYNC_MARK, pos)
        if pos < 0:
            return len(data)
        if len(data) - pos >= HEADER_SIZE:
            _magic, _version, _seq, length, crc = _HEADER.unpack_from(data, pos)
            body = data[pos + HEADER_SIZE : pos + HEADER_SIZE + length]
            head_crc = zlib.crc32(data[pos + 3 : pos + 15])
            if len(body) == length and zlib.crc32(body, head_crc) == crc:
                return pos
        pos += 1


class SegmentLog:
    """Append-only segments plus the ack position.  Not thread-safe: one call at a time."""

    def __init__(self, directory: Path, segment_bytes: int = 16 * 1024 * 1024, fsync: bool = False):
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.ack = 0
        self.next_seq = 0
        #: segment first-seq -> size in bytes
        self.segments: dict[int, int] = {}
        self._writer: tuple[int, object] | None = None
        self._cursor: tuple[int, int] | None = None  # (segment, offset) of the next read
        self.problems: list[str] = []

    # -- opening ---------------------------------------------------------------------

    def open(self) -> None:
        """Read the ack position and find the next sequence number.

        Damage found here (an unreadable ack file, a torn tail) is noted in
        ``problems``; records themselves are checked again when they are read.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ack = self._read_ack()
        for path in sorted(self.directory.glob(f"*{SEGMENT_SUFFIX}")):
            try:
                first = int(path.name[: -len(SEGMENT_SUFFIX)])
            except ValueError:
                continue
            self.segments[first] = path.stat().st_size
        last_seq = -1
        if self.segments:
            data = self._path(max(self.segments)).read_bytes()
            for _offset, seq, payload, _problem in scan(data):
                if payload is not None:
                    last_seq = max(last_seq, seq)
            if last_seq < 0:
                last_seq = max(self.segments) - 1
        self.next_seq = max(self.ack, last_seq + 1)
        # segments wholly below the ack are done
        self._delete_acked()

    def _read_ack(self) -> int:
        path = self.directory / "ack"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return 0
        if len(raw) == _ACK.size:
            seq, crc = _ACK.unpack(raw)
            if zlib.crc32(raw[:8]) == crc:
                return int(seq)
        self.problems.append("ack file is damaged; replaying the whole spool (duplicates possible)")
        return 0

    # -- writing ---------------------------------------------------------------------

    def _path(self, first: int) -> Path:
        return self.directory / f"{first:020d}{SEGMENT_SUFFIX}"

    def append(self, records: list[tuple[int, bytes]]) -> int:
        """Write records (in seq order) at the end; returns the bytes written."""
        written = 0
        chunk: list[bytes] = []  # one write per segment, not one per record
        for seq, payload in records:
            if self._writer is None or self.segments.get(self._writer[0], 0) >= self.segment_bytes:
                self._flush_chunk(chunk)
                self._open_segment(seq)
            assert self._writer is not None
            data = encode_record(seq, payload)
            chunk.append(data)
            self.segments[self._writer[0]] += len(data)
            written += len(data)
            self.next_seq = seq + 1
        self._flush_chunk(chunk)
        if self._writer is not None:
            handle = self._writer[1]
            handle.flush()  # type: ignore[attr-defined]
            if self.fsync:
                os.fsync(handle.fileno())  # type: ignore[attr-defined]
        return written

    def _flush_chunk(self, chunk: list[bytes]) -> None:
        if chunk and self._writer is not None:
            self._writer[1].write(b"".join(chunk))  # type: ignore[attr-defined]
            chunk.clear()

    def _open_segment(self, first: int) -> None:
        self._close_writer()
        handle = self._path(first).open("ab")
        self._writer = (first, handle)
        self.segments.setdefault(first, 0)

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer[1].close()  # type: ignore[attr-defined]
            self._writer = None

    # -- reading ---------------------------------------------------------------------

    def read(
        self, from_seq: int, max_count: int, max_bytes: int
    ) -> tuple[list[tuple[int, bytes]], list[str], bool]:
        """Records with seq >= ``from_seq``, in order, the damage skipped on the way,
        and whether the read reached the end of what was written."""
        out: list[tuple[int, bytes]] = []
        problems: list[str] = []
        size = 0
        firsts = sorted(self.segments)
        if self._cursor is None or self._cursor[0] not in self.segments:
            start = max((f for f in firsts if f <= from_seq), default=firsts[0] if firsts else 0)
            self._cursor = (start, 0)
        segment, offset = self._cursor
        for first in (f for f in firsts if f >= segment):
            if first != segment:
                offset = 0
            data = self._path(first).read_bytes()
            for pos, seq, payload, problem in scan(data, offset):
                if payload is None:
                    problems.append(f"{self._path(first).name}: {problem}")
                    continue
                if seq < from_seq:
                    continue
                if len(out) >= max_count or (out and size + len(payload) > max_bytes):
                    self._cursor = (first, pos)
                    return out, problems, False
                out.append((seq, payload))
                size += len(payload)
            self._cursor = (first, len(data))
        return out, problems, True

    # -- acknowledging ---------------------------------------------------------------

    def set_ack(self, seq: int) -> None:
        """Persist the lowest undelivered seq and delete segments wholly below it."""
        if seq == self.ack and (self.directory / "ack").exists():
            return
        self.ack = seq
        raw = struct.pack(">Q", seq)
        tmp = self.directory / "ack.tmp"
        tmp.write_bytes(_ACK.pack(seq, zlib.crc32(raw)))
        if self.fsync:
            with tmp.open("rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, self.directory / "ack")
        self._delete_acked()

    def _delete_acked(self) -> None:
        firsts = sorted(self.segments)
        for first, following in itertools.pairwise(firsts):
            if following <= self.ack:
                if self._writer is not None and self._writer[0] == first:
                    self._close_writer()
                self._path(first).unlink(missing_ok=True)
                del self.segments[first]

    def drop_oldest_segment(self) -> int | None:
        """Delete the oldest segment (for ``drop_oldest``); return the new ack, or None."""
        firsts = sorted(self.segments)
        if len(firsts) < 2:
            return None
        new_ack = max(self.ack, firsts[1])
        self.set_ack(new_ack)
        return new_ack

    @property
    def disk_bytes(self) -> int:
        return sum(self.segments.values())

    def close(self) -> None:
        self._close_writer()
