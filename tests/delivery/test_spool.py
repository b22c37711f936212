"""The spool's file format and segment log: damage is found, skipped and counted, never fatal."""

from __future__ import annotations

from pathlib import Path

from obsd.delivery.spool import HEADER_SIZE, SegmentLog, encode_record, scan


def good(data: bytes) -> list[tuple[int, bytes]]:
    return [(seq, p) for _o, seq, p, problem in scan(data) if not problem and p is not None]


def problems(data: bytes) -> list[str]:
    return [problem for _o, _s, _p, problem in scan(data) if problem]


class TestFormat:
    def test_roundtrip(self) -> None:
        """Records come back with their sequence numbers and payloads."""
        data = b"".join(encode_record(i, f"r{i}".encode()) for i in range(5))
        assert good(data) == [(i, f"r{i}".encode()) for i in range(5)]
        assert problems(data) == []

    def test_flipped_payload_byte_skips_exactly_that_record(self) -> None:
        """A checksum mismatch costs one record; reading goes on after it."""
        records = [encode_record(i, b"x" * 20) for i in range(3)]
        damaged = bytearray(b"".join(records))
        damaged[len(records[0]) + HEADER_SIZE + 5] ^= 0xFF
        assert [s for s, _ in good(bytes(damaged))] == [0, 2]
        assert len(problems(bytes(damaged))) == 1
        assert "checksum mismatch in record 1" in problems(bytes(damaged))[0]

    def test_flipped_length_byte_resynchronises(self) -> None:
        """A damaged header is skipped by finding the next record that checks out."""
        records = [encode_record(i, b"y" * 30) for i in range(3)]
        damaged = bytearray(b"".join(records))
        damaged[len(records[0]) + 11] ^= 0x40  # a byte of record 1's length
        assert [s for s, _ in good(bytes(damaged))] == [0, 2]
        assert len(problems(bytes(damaged))) == 1

    def test_truncated_tail(self) -> None:
        """A torn last write is one problem; the records before it are intact."""
        data = b"".join(encode_record(i, b"z" * 10) for i in range(3))[:-4]
        assert [s for s, _ in good(data)] == [0, 1]
        assert "truncated record" in problems(data)[0]

    def test_unknown_version(self) -> None:
        """A record of another format version is reported as such, not misread."""
        record = bytearray(encode_record(0, b"v"))
        record[2] = 9
        assert "unknown record format version 9" in problems(bytes(record))[0]


class TestSegmentLog:
    def test_append_read_ack_and_reopen(self, tmp_path: Path) -> None:
        """Acked segments are deleted; a reopened log knows its ack and next sequence."""
        log = SegmentLog(tmp_path, segment_bytes=100)
        log.open()
        log.append([(i, b"p" * 40) for i in range(10)])
        records, probs, at_end = log.read(0, 100, 10_000)
        assert [s for s, _ in records] == list(range(10)) and probs == [] and at_end
        before = len(log.segments)
        log.set_ack(6)
        assert len(log.segments) < before
        log.close()
        again = SegmentLog(tmp_path, segment_bytes=100)
        again.open()
        assert (again.ack, again.next_seq) == (6, 10)
        records, _probs, _end = again.read(6, 100, 10_000)
        assert [s for s, _ in records] == [6, 7, 8, 9]

    def test_read_stops_at_count_and_continues(self, tmp_path: Path) -> None:
        """A bounded read resumes where it stopped."""
        log = SegmentLog(tmp_path)
        log.open()
        log.append([(i, b"q") for i in range(5)])
        first, _p, at_end = log.read(0, 3, 10_000)
        assert [s for s, _ in first] == [0, 1, 2] and not at_end
        rest, _p, at_end = log.read(3, 3, 10_000)
        assert [s for s, _ in rest] == [3, 4] and at_end

    def test_damaged_ack_file_replays_everything(self, tmp_path: Path) -> None:
        """An unreadable ack file is reported and the whole spool is replayed."""
        log = SegmentLog(tmp_path)
        log.open()
        log.append([(0, b"a"), (1, b"b")])
        log.set_ack(1)
        log.close()
        (tmp_path / "ack").write_bytes(b"garbage!")
        again = SegmentLog(tmp_path)
        again.open()
        assert again.ack == 0 and again.next_seq == 2
        assert "ack file is damaged" in again.problems[0]
