"""Graphite plaintext lines and pickle frames read into points, hostile pickles refused."""

from __future__ import annotations

import os
import pickle
import pickletools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from obsd.codecs.graphite_plaintext import (
    GraphiteParseError,
    GraphitePoint,
    parse_path,
    parse_pickle,
    parse_plaintext,
    parse_plaintext_line,
)

NOW = 1_700_000_000.0


class TestPlaintextLine:
    def test_plain_line(self) -> None:
        """A ``path value timestamp`` line becomes one point."""
        assert parse_plaintext_line(b"servers.web1.load 1.5 1699999999\n", NOW) == GraphitePoint(
            "servers.web1.load", 1.5, 1699999999.0, {}
        )

    def test_tagged_name(self) -> None:
        """Tags written into the path are kept as tags."""
        point = parse_plaintext_line(b"disk.used;host=web1;dc=ams 42 1699999999", NOW)
        assert point.name == "disk.used"
        assert point.tags == {"host": "web1", "dc": "ams"}

    @pytest.mark.parametrize("stamp", [b"-1", b"N"])
    def test_now_timestamp(self, stamp: bytes) -> None:
        """A timestamp of -1 (carbon) or N means the time of arrival."""
        assert parse_plaintext_line(b"a.b 1 " + stamp, NOW).timestamp == NOW

    def test_name_cleaned_like_the_output(self) -> None:
        """Names get the Graphite output's cleaning (spaces, slashes, odd characters)."""
        assert parse_plaintext_line(b"a/b.c$d 1 1", NOW).name == "a-b.cd"

    @pytest.mark.parametrize(
        ("line", "reason"),
        [
            (b"a.b 1", "expected 'path value timestamp'"),
            (b"a.b x 1", "value is not a number"),
            (b"a.b nan 1", "value is not finite"),
            (b"a.b 1 soon", "timestamp is not a number"),
            (b"a.b 1 -5", "timestamp is negative"),
            (b"$$$ 1 1", "bad metric name"),
            (b"a..b 1 1", "bad metric name"),
            (b"a.b;novalue 1 1", "bad tag"),
        ],
    )
    def test_bad_lines(self, line: bytes, reason: str) -> None:
        """Each kind of bad line raises GraphiteParseError saying why."""
        with pytest.raises(GraphiteParseError, match=reason):
            parse_plaintext_line(line, NOW)

    def test_many_lines_with_bad_ones(self) -> None:
        """A run of lines gives the good points and each bad line with its reason."""
        points, bad = parse_plaintext(b"a 1 1\nbroken\n\nb 2 2\r\n", NOW)
        assert [p.name for p in points] == ["a", "b"]
        assert [line for line, _ in bad] == [b"broken"]

    def test_path_parse(self) -> None:
        """parse_path returns the clean name and the tags."""
        assert parse_path("x.y;k=v") == ("x.y", {"k": "v"})


class TestPickle:
    def test_carbon_relay_frame(self) -> None:
        """A frame as carbon-relay pickles it gives its points."""
        frame = pickle.dumps([("a.b", (1699999999, 3.0)), ("c;k=v", (1699999998, 4))], protocol=2)
        points, bad = parse_pickle(frame, NOW)
        assert points == [
            GraphitePoint("a.b", 3.0, 1699999999.0, {}),
            GraphitePoint("c", 4.0, 1699999998.0, {"k": "v"}),
        ]
        assert bad == []

    def test_bad_entries_are_reported(self) -> None:
        """Entries of the wrong shape are bad, the others still count."""
        frame = pickle.dumps([("a", (1, 2)), ("b", 3), 7], protocol=2)
        points, bad = parse_pickle(frame, NOW)
        assert [p.name for p in points] == ["a"]
        assert len(bad) == 2

    def test_reduce_of_os_system_refused(self, tmp_path: object) -> None:
        """A pickle whose REDUCE would call os.system is refused before anything runs."""

        class Exploit:
            def __reduce__(self) -> tuple[object, tuple[str]]:
                return (os.system, ("touch /tmp/obsd-pickle-pwned",))

        frame = pickle.dumps([Exploit()], protocol=2)
        assert b"system" in frame
        assert any(op.name == "REDUCE" for op, _, _ in pickletools.genops(frame))
        with pytest.raises(GraphiteParseError) as info:
            parse_pickle(frame, NOW)
        assert info.value.refused_global
        assert "system" in str(info.value)

    def test_not_a_pickle(self) -> None:
        """Bytes that are not a pickle raise GraphiteParseError."""
        with pytest.raises(GraphiteParseError, match="not a pickle"):
            parse_pickle(b"\x80\x02garbage", NOW)

    def test_not_a_list(self) -> None:
        """A pickled dict is not a frame."""
        with pytest.raises(GraphiteParseError, match="not a list"):
            parse_pickle(pickle.dumps({"a": 1}), NOW)


class TestProperties:
    @given(st.binary(max_size=300))
    def test_plaintext_returns_or_raises_its_error(self, data: bytes) -> None:
        """Any bytes: a point, or GraphiteParseError, nothing else."""
        try:
            point = parse_plaintext_line(data, NOW)
        except GraphiteParseError:
            return
        assert point.name

    @given(st.binary(max_size=300))
    def test_pickle_returns_or_raises_its_error(self, data: bytes) -> None:
        """Any bytes as a pickle frame: points, or GraphiteParseError, nothing else."""
        try:
            points, bad = parse_pickle(data, NOW)
        except GraphiteParseError:
            return
        assert all(isinstance(p, GraphitePoint) and p.name for p in points)
        assert all(isinstance(reason, str) for _, reason in bad)

    @given(st.binary(max_size=200).map(lambda b: b"\x80\x02" + b))
    def test_pickle_with_protocol_header(self, data: bytes) -> None:
        """Bytes after a protocol-2 header: points, or GraphiteParseError."""
        try:
            points, bad = parse_pickle(data, NOW)
        except GraphiteParseError:
            return
        assert all(isinstance(p, GraphitePoint) and p.name for p in points)
        assert all(isinstance(reason, str) for _, reason in bad)
