"""The relay wire format: lossless NDJSON (bytes as base64, ``$`` keys escaped), bounded gzip."""

from __future__ import annotations

import gzip
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from obsd.codecs.relaywire import decode_body, decode_event, encode_event, inflate
from obsd.errors import ParseError

keys = st.one_of(st.text(max_size=8), st.sampled_from(["$b64", "$$b64", "$", "$x", "id"]))
leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
    st.text(), st.binary(max_size=16), st.sampled_from(['"$b64"', "say \"$5\"", "$b64"]),
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)


class TestRoundTrip:
    @given(st.dictionaries(keys, values, max_size=6))
    def test_any_event_comes_back_equal(self, event: dict[str, Any]) -> None:
        """Whatever dicts, lists, bytes and ``$`` keys an event holds, decoding gives it back."""
        line = encode_event(event)
        assert line.endswith(b"\n")
        assert line.count(b"\n") == 1
        assert decode_event(line) == event

    def test_bytes_are_base64_tagged(self) -> None:
        """A bytes value is sent as a $b64 tag."""
        assert encode_event({"_sentry_raw": b"\xff"}) == b'{"_sentry_raw":{"$b64":"/w=="}}\n'

    def test_a_senders_tag_lookalike_stays_a_dict(self) -> None:
        """A sender's own {"$b64": "..."} dict is escaped, not decoded as bytes."""
        event = {"data": {"$b64": "AAAA"}}
        assert decode_event(encode_event(event)) == event

    def test_float_timestamps_are_exact(self) -> None:
        """Floats (time stamps) keep every bit; NaN and infinities survive too."""
        event = {"timestamp": 1700000000.123456789, "v": math.inf}
        got = decode_event(encode_event(event))
        assert got["timestamp"] == event["timestamp"]
        assert got["v"] == math.inf

    def test_tuples_and_sets_become_lists(self) -> None:
        """Tuples and sets arrive as lists; unknown objects as their repr."""
        got = decode_event(encode_event({"t": (1, 2), "s": {3}, "o": object}))
        assert got["t"] == [1, 2]
        assert got["s"] == [3]
        assert got["o"] == repr(object)


class TestDecode:
    @pytest.mark.parametrize(("line", "why"), [
        (b"[1]", "object"),
        (b"{", "JSON"),
        (b'{"x": {"$b64": "!!"}}', "base64"),
        (b"\xff", "JSON"),
    ])
    def test_bad_lines(self, line: bytes, why: str) -> None:
        """Lines that are not JSON objects raise ParseError."""
        with pytest.raises(ParseError, match=why):
            decode_event(line)

    def test_body_skips_blank_lines(self) -> None:
        """Blank lines in a body are ignored."""
        body = b'{"a":1}\n\n{"b":2}\n'
        assert decode_body(body, gzipped=False, max_bytes=100, max_events=5) == [{"a": 1}, {"b": 2}]

    def test_gzip_bomb_is_refused(self) -> None:
        """A small gzip body that inflates past max_bytes is refused without inflating it all."""
        bomb = gzip.compress(b"\0" * 10_000_000)
        assert len(bomb) < 20_000
        with pytest.raises(ParseError, match="larger"):
            inflate(bomb, 1_000_000)

    def test_multi_member_gzip(self) -> None:
        """Concatenated gzip members inflate to their joined contents."""
        assert inflate(gzip.compress(b"a") + gzip.compress(b"b"), 10) == b"ab"

    @pytest.mark.parametrize("data", [gzip.compress(b"abcdef")[:-4], b"nope"])
    def test_truncated_or_not_gzip(self, data: bytes) -> None:
        """A cut or foreign body raises ParseError."""
        with pytest.raises(ParseError):
            inflate(data, 100)
