"""Tests for the RFC 6587 framers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from obsd.codecs.framing import (
    AutoFramer,
    Frame,
    Framer,
    FramingError,
    NewlineFramer,
    NulFramer,
    OctetCountingFramer,
    make_framer,
)
from obsd.errors import ParseError


def feed_all(framer: Framer, chunks: list[bytes]) -> list[Frame]:
    """Feed every chunk, then flush, and return every frame."""
    out: list[Frame] = []
    for chunk in chunks:
        out.extend(framer.feed(chunk))
    out.extend(framer.flush())
    return out


def splits(data: bytes) -> list[list[bytes]]:
    """The stream whole, byte by byte, and cut at every point."""
    ways = [[data], [data[i : i + 1] for i in range(len(data))]]
    ways.extend([data[:i], data[i:]] for i in range(1, len(data)))
    return ways


def ends_at_lf_before_nul(stream: bytes, chunks: list[bytes]) -> bool:
    """Whether some chunk ends right after an LF that comes before the first NUL."""
    end = 0
    for chunk in chunks:
        end += len(chunk)
        if end <= stream.find(b"\0") and stream[end - 1 : end] == b"\n":
            return True
    return False


def messages(frames: list[Frame]) -> list[bytes]:
    """The message bytes of untruncated frames."""
    assert not any(frame.truncated for frame in frames)
    return [frame.message for frame in frames]


LF_STREAM = b"<13>1 - - - - - - one\r\n<13>two\n\n<13>three"
NUL_STREAM = b"<11>boom\nTraceback (most recent call last):\n  x\0<14>next\0"
OCTET_STREAM = b"9 <13>a b c13 <13>two\nlines"


class TestNewlineFramer:
    @pytest.mark.parametrize("chunks", splits(LF_STREAM))
    def test_any_split(self, chunks: list[bytes]) -> None:
        """Messages come out the same wherever the stream is cut; CR and empty lines go."""
        assert messages(feed_all(NewlineFramer(), chunks)) == [
            b"<13>1 - - - - - - one",
            b"<13>two",
            b"<13>three",
        ]

    def test_long_line_is_cut_and_flagged(self) -> None:
        """A line longer than the limit is cut to it, flagged, and the next line is intact."""
        framer = NewlineFramer(max_message_size=8)
        assert framer.feed(b"0123456789abc\nok\n") == [
            Frame(b"01234567", True),
            Frame(b"ok"),
        ]

    def test_long_line_in_pieces_is_not_buffered(self) -> None:
        """An endless line is cut once the limit is passed and its rest is discarded."""
        framer = NewlineFramer(max_message_size=8)
        assert framer.feed(b"01234") == []
        assert framer.feed(b"56789") == [Frame(b"0123456789"[:8], True)]
        assert framer.feed(b"x" * 100) == []
        assert framer.feed(b"yy\nnext\n") == [Frame(b"next")]


class TestNulFramer:
    @pytest.mark.parametrize("chunks", splits(NUL_STREAM))
    def test_traceback_stays_one_message(self, chunks: list[bytes]) -> None:
        """LFs inside a NUL-terminated message (a traceback) stay in it."""
        assert messages(feed_all(NulFramer(), chunks)) == [
            b"<11>boom\nTraceback (most recent call last):\n  x",
            b"<14>next",
        ]


class TestOctetCountingFramer:
    @pytest.mark.parametrize("chunks", splits(OCTET_STREAM))
    def test_any_split(self, chunks: list[bytes]) -> None:
        """Octet-counted messages, LFs included, come out wherever the stream is cut."""
        assert messages(feed_all(OctetCountingFramer(), chunks)) == [
            b"<13>a b c",
            b"<13>two\nlines",
        ]

    @pytest.mark.parametrize(
        "chunks",
        [
            [b"20 <13>0123456789abcdef6 <13>ok"],
            [b"20 <13>01", b"23456789abcdef", b"6 <13>ok"],
        ],
    )
    def test_long_message_is_cut_and_flagged(self, chunks: list[bytes]) -> None:
        """A count above the limit gives the first bytes, flagged, and the rest is skipped."""
        assert feed_all(OctetCountingFramer(max_message_size=8), chunks) == [
            Frame(b"<13>0123", True),
            Frame(b"<13>ok"),
        ]

    @pytest.mark.parametrize(
        "data", [b"abc <13>x", b"12x4 <13>", b"12345678901 ", b" 5 <13>x"]
    )
    def test_garbage_count_raises(self, data: bytes) -> None:
        """A count that is not digits raises ParseError so that the connection is closed."""
        with pytest.raises(ParseError):
            OctetCountingFramer().feed(data)

    def test_error_carries_the_messages_before_it(self) -> None:
        """The messages a chunk completed before a broken count come with the error."""
        with pytest.raises(FramingError) as info:
            OctetCountingFramer().feed(b"6 <13>ab7 <13>cde12x <13>")
        assert info.value.frames == [Frame(b"<13>ab"), Frame(b"<13>cde")]

    def test_cut_short_at_close(self) -> None:
        """A message the close cut short is returned, flagged."""
        framer = OctetCountingFramer()
        assert framer.feed(b"10 <13>ab") == []
        assert framer.flush() == [Frame(b"<13>ab", True)]


class TestAutoFramer:
    @pytest.mark.parametrize(
        ("stream", "kind"),
        [
            (OCTET_STREAM, OctetCountingFramer),
            (NUL_STREAM, NulFramer),
            (b"<13>one\n<13>two\n", NewlineFramer),
            (b"122 - - - - - -\n<13>next\n", NewlineFramer),
        ],
    )
    def test_detects(self, stream: bytes, kind: type) -> None:
        """The framing is chosen from the start of the stream, however it is cut.

        Except one cut: a first chunk that ends right after an LF looks LF-framed
        (waiting for more would stall a quiet LF sender), see the next test.
        """
        for chunks in splits(stream):
            if kind is NulFramer and ends_at_lf_before_nul(stream, chunks):
                continue
            framer = AutoFramer()
            frames = feed_all(framer, chunks)
            assert isinstance(framer.framer, kind), chunks
            assert frames == feed_all(kind(), [stream])

    def test_digits_line_is_not_an_octet_count(self) -> None:
        """An LF-framed line starting with digits and a space is a message (rsyslog swallows it)."""
        frames = feed_all(AutoFramer(), [b"122 - - - - - -\n<13>next\n"])
        assert messages(frames) == [b"122 - - - - - -", b"<13>next"]

    def test_waits_for_lf_or_nul(self) -> None:
        """A chunk ending mid-message after an LF is held until the framing is clear."""
        framer = AutoFramer()
        assert framer.feed(b"<11>boom\nTraceback") == []
        assert framer.framer is None
        assert framer.feed(b"\n  x\0") == [Frame(b"<11>boom\nTraceback\n  x")]
        assert isinstance(framer.framer, NulFramer)

    def test_chunk_ending_at_lf_means_lf(self) -> None:
        """A first chunk ending with LF decides LF framing, the one ambiguous cut."""
        framer = AutoFramer()
        assert framer.feed(b"<11>boom\n") == [Frame(b"<11>boom")]
        assert isinstance(framer.framer, NewlineFramer)

    def test_undecided_at_close(self) -> None:
        """What is left undecided at close is read as LF-framed."""
        framer = AutoFramer()
        assert framer.feed(b"<13>no end") == []
        assert framer.flush() == [Frame(b"<13>no end")]

    def test_undecided_is_bounded(self) -> None:
        """Without LF or NUL the framer decides once the limit is passed."""
        framer = AutoFramer(max_message_size=8)
        assert framer.feed(b"<13>0123456789") == [Frame(b"<13>0123", True)]


class TestMakeFramer:
    @pytest.mark.parametrize(
        ("name", "kind"),
        [
            ("auto", AutoFramer),
            ("octet", OctetCountingFramer),
            ("lf", NewlineFramer),
            ("nul", NulFramer),
        ],
    )
    def test_names(self, name: str, kind: type) -> None:
        """Each ``framing`` config value gives its framer."""
        assert isinstance(make_framer(name), kind)

    def test_unknown(self) -> None:
        """An unknown name is refused."""
        with pytest.raises(ValueError, match="unknown framing"):
            make_framer("crlf")


class TestFuzz:
    @settings(max_examples=300, deadline=None)
    @given(
        name=st.sampled_from(["auto", "octet", "lf", "nul"]),
        chunks=st.lists(st.binary(max_size=64), max_size=8),
    )
    def test_never_raises_unexpectedly(self, name: str, chunks: list[bytes]) -> None:
        """On arbitrary bytes a framer returns bounded frames or raises only ParseError."""
        framer = make_framer(name, max_message_size=32)
        try:
            frames = feed_all(framer, chunks)
        except ParseError:
            return
        assert all(len(frame.message) <= 32 for frame in frames)
        if name == "lf":
            assert all(b"\n" not in frame.message for frame in frames)
