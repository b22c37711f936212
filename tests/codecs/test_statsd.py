"""Tests for obsd.codecs.statsd: the StatsD line protocol with DogStatsD tags."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from obsd.codecs.statsd import Sample, parse_statsd_line, parse_statsd_packet
from obsd.errors import ParseError


def sample(
    name: str,
    value: float | str,
    kind: str,
    rate: float = 1.0,
    delta: bool = False,
    tags: tuple[str, ...] = (),
) -> Sample:
    return Sample(name, value, kind, rate, delta, tags)


class TestParseLine:
    @pytest.mark.parametrize(
        ("line", "expected"),
        [
            (b"gorets:1|c", [sample("gorets", 1.0, "c")]),
            (b"gorets:-2.5|c", [sample("gorets", -2.5, "c")]),
            (b"gorets:1e3|c", [sample("gorets", 1000.0, "c")]),
            (b"gorets:1|c|@0.1", [sample("gorets", 1.0, "c", rate=0.1)]),
            (b"glork:320|ms", [sample("glork", 320.0, "ms")]),
            (b"glork:320|ms|@0.5", [sample("glork", 320.0, "ms", rate=0.5)]),
            (b"backlog:-3|h", [sample("backlog", -3.0, "ms")]),
            (b"latency:7|d", [sample("latency", 7.0, "ms")]),
            (b"gaugor:333|g", [sample("gaugor", 333.0, "g")]),
            (b"gaugor:+4|g", [sample("gaugor", 4.0, "g", delta=True)]),
            (b"gaugor:-4|g", [sample("gaugor", -4.0, "g", delta=True)]),
            (b"uniques:765|s", [sample("uniques", "765", "s")]),
            (b"users:alice|s", [sample("users", "alice", "s")]),
            (b"users:|s", [sample("users", "0", "s")]),
            (b"a b/c:1|c", [sample("a b/c", 1.0, "c")]),
        ],
    )
    def test_types(self, line: bytes, expected: list[Sample]) -> None:
        """Each type, sign and sample rate parses to the sample Etsy statsd would aggregate."""
        assert parse_statsd_line(line) == expected

    def test_several_values(self) -> None:
        """Several values on one line share the name and the tags."""
        assert parse_statsd_line(b"k:1|c:2|c|@0.5:3|ms|#env:prod") == [
            sample("k", 1.0, "c", tags=("env:prod",)),
            sample("k", 2.0, "c", rate=0.5, tags=("env:prod",)),
            sample("k", 3.0, "ms", tags=("env:prod",)),
        ]

    @pytest.mark.parametrize(
        ("line", "tags", "rate"),
        [
            (b"c:1|c|#env:prod,flag", ("env:prod", "flag"), 1.0),
            (b"c:1|c|@0.25|#env:prod", ("env:prod",), 0.25),
            (b"c:1|c|#", (), 1.0),
            (b"c:1|c|#a:b:c,,x", ("a:b:c", "x"), 1.0),
            (
                b"c:1|c|#env:prod|c:container|T1700000000",
                ("env:prod|c:container|T1700000000",),
                1.0,
            ),
        ],
    )
    def test_tags(self, line: bytes, tags: tuple[str, ...], rate: float) -> None:
        """DogStatsD tags after ``|#`` are kept as written, empty ones skipped."""
        (parsed,) = parse_statsd_line(line)
        assert (parsed.tags, parsed.rate) == (tags, rate)

    def test_dogstatsd_timestamp_field_ignored(self) -> None:
        """DogStatsD's timestamp field does not make a line bad."""
        assert parse_statsd_line(b"c:1|c|@0.5|T1700000000") == [
            sample("c", 1.0, "c", rate=0.5)
        ]

    def test_carriage_return(self) -> None:
        """A CRLF line end is accepted."""
        assert parse_statsd_line(b"c:1|c\r") == [sample("c", 1.0, "c")]

    def test_space_in_sample_rate(self) -> None:
        """``|@ 0.5`` (which crashes Etsy statsd) is read as 0.5."""
        assert parse_statsd_line(b"c:1|c|@ 0.5") == [sample("c", 1.0, "c", rate=0.5)]

    @pytest.mark.parametrize(
        ("line", "reason"),
        [
            (b"nocolon", "no ':'"),
            (b":1|c", "empty metric name"),
            (b"c:1", "no '|type'"),
            (b"c:|c", "empty value"),
            (b"c:abc|c", "not a number"),
            (b"c:nan|c", "not a finite number"),
            (b"c:inf|g", "not a finite number"),
            (b"c:1_000|c", "plain decimal"),
            (b"c:0x10|c", "not a number"),
            (b"c:\xd9\xa3|c", "plain decimal"),
            (b"c:1|zz", "unknown metric type"),
            (b"t:-1|ms", "negative"),
            (b"c:1|c|@0", "not above zero"),
            (b"c:1|c|@-1", "not above zero"),
            (b"c:1|c|@x", "sample rate 'x' is not a number"),
            (b"c:1|c|extra", "unexpected field"),
            (b"c:1|c:x|c", "not a number"),
            (b"c:1|c\xff", "UTF-8"),
            (b"g:1e999|g", "not a finite number"),
            (b"g:-1e999|g", "not a finite number"),
            (b"c:1|c|@1e-999", "not above zero"),
            (b"x" * 1025 + b":1|c", "metric name longer than 1024 characters"),
        ],
    )
    def test_bad_lines(self, line: bytes, reason: str) -> None:
        """A malformed line raises ParseError that says what is wrong."""
        with pytest.raises(ParseError, match=reason):
            parse_statsd_line(line)


class TestNameLength:
    @pytest.mark.parametrize("line", [b"abcdef:1|c", b"abcdef:1|c|#env:x", b"abc;e=x:1|c"])
    def test_long_names_are_bad_lines_on_every_path(self, line: bytes) -> None:
        """A name over the limit is one bad line, on the fast path and the full parser alike."""
        samples, bad = parse_statsd_packet(line + b"\nabcde:1|c", max_name_length=5)
        assert [s.name for s in samples] == ["abcde"]
        assert bad == [(line, "metric name longer than 5 characters")]


class TestParsePacket:
    def test_lines_and_empty_lines(self) -> None:
        """Lines split on newlines; empty lines and CRLF ends are fine."""
        samples, bad = parse_statsd_packet(b"a:1|c\r\n\n\nb:2|ms\n")
        assert (samples, bad) == ([sample("a", 1.0, "c"), sample("b", 2.0, "ms")], [])

    def test_bad_lines_do_not_cost_good_ones(self) -> None:
        """Good samples beside bad ones, on the same line or others, are all kept."""
        samples, bad = parse_statsd_packet(
            b"a:1|c\nbroken\nk:1|c:x|c:2|c\nb:1|zz\nc:3|g"
        )
        assert [s.name for s in samples] == ["a", "k", "k", "c"]
        assert [line for line, _ in bad] == [b"broken", b"k:1|c:x|c:2|c", b"b:1|zz"]
        assert all(reason for _, reason in bad)

    @pytest.mark.parametrize(
        "data",
        [
            b"",
            b"\n",
            b"\xff\xfe",
            b"|" * 100,
            b":" * 100,
            b"a:" + b"|" * 50,
            b"x:1|c|@ 0.5",
            b"#|#|#",
            b"\x00:\x00|c",
        ],
    )
    def test_never_raises(self, data: bytes) -> None:
        """Any input gives samples and bad lines, never an exception."""
        samples, bad = parse_statsd_packet(data)
        assert isinstance(samples, list)
        assert isinstance(bad, list)


class TestFastPathAgrees:
    @given(
        st.text(alphabet="ab.:|@#,+-_ 019eE\r", max_size=24)
        | st.from_regex(
            r"[a-z.]{1,8}:[-+]?[0-9.]{1,6}\|(c|ms|g|h|d|s)(\|@0\.[1-9])?",
            fullmatch=True,
        )
    )
    @settings(max_examples=400, deadline=None)
    def test_packet_matches_line(self, line: str) -> None:
        """The packet parser's fast path gives exactly what the full line parser gives."""
        data = line.encode()
        samples, bad = parse_statsd_packet(data)
        if not data.strip(b"\r"):
            return
        if "\n" in line:
            return
        try:
            expected = parse_statsd_line(data)
        except ParseError:
            assert bad
        else:
            assert (samples, bad) == (expected, [])
