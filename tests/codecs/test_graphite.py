"""Tests for obsd.codecs.graphite: names, plaintext and pickle encodings."""

from __future__ import annotations

import pickle
import struct

import pytest

from obsd.codecs.graphite import (
    MetricPoint,
    encode_pickle,
    encode_plaintext,
    graphite_path,
    sanitise_name,
)


def point(
    name: str,
    value: float,
    timestamp: float = 1_700_000_000,
    tags: tuple[str, ...] = (),
) -> MetricPoint:
    return MetricPoint(name, value, timestamp, tags)  # type: ignore[arg-type]


def frames(data: bytes) -> list[list[tuple[str, tuple[int, float]]]]:
    """Split a pickle-protocol stream into its decoded frames."""
    out = []
    while data:
        (length,) = struct.unpack("!L", data[:4])
        out.append(pickle.loads(data[4 : 4 + length]))
        data = data[4 + length :]
    return out


class TestSanitiseName:
    @pytest.mark.parametrize(
        ("name", "clean"),
        [
            ("stats.app.requests", "stats.app.requests"),
            ("a b", "a_b"),
            ("a \t b", "a_b"),
            ("a/b", "a-b"),
            ("a!b@c#d$", "abcd"),
            ("café.x", "caf.x"),
            ("a;k=v", "akv"),
            ("under_score-dash.0", "under_score-dash.0"),
        ],
    )
    def test_statsd_rule(self, name: str, clean: str) -> None:
        """Names are cleaned with Etsy statsd's key rule."""
        assert sanitise_name(name) == clean


class TestGraphitePath:
    @pytest.mark.parametrize(
        ("name", "prefix", "path"),
        [
            ("a.b", "", "a.b"),
            ("a.b", "obsd", "obsd.a.b"),
            ("a.b", "obsd.", "obsd.a.b"),
            ("obsd.a.b", "obsd", "obsd.a.b"),
            ("obsdx.a", "obsd", "obsd.obsdx.a"),
        ],
    )
    def test_prefix_applied_once(self, name: str, prefix: str, path: str) -> None:
        """The prefix is added once; an already prefixed name is left alone."""
        assert graphite_path(name, (), prefix) == path

    def test_tags_as_series(self) -> None:
        """Tags become sorted ;k=v, a bare flag becomes flag=true, bad characters are dropped."""
        tags = ("z:1", "flag", "a:x y", "empty:", "!:v")
        assert graphite_path("m", tags, tags_as_series=True) == "m;a=x_y;flag=true;z=1"

    def test_inline_tags(self) -> None:
        """Graphite tags written in a relayed name are kept as tags, or dropped with tags."""
        assert graphite_path("m;env=prod", (), tags_as_series=True) == "m;env=prod"
        assert graphite_path("m;env=prod", ()) == "m"


class TestEncodePlaintext:
    def test_lines(self) -> None:
        """Each point is one ``path value timestamp`` line with whole-second timestamps."""
        data = encode_plaintext(
            [point("a", 1.0, 1_700_000_000.9), point("b", 0.25), point("c", -3)]
        )
        assert data == b"a 1 1700000000\nb 0.25 1700000000\nc -3 1700000000\n"

    @pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), "1"])
    def test_non_finite_never_sent(self, value: float) -> None:
        """NaN, infinities and non-numbers are skipped, the rest still sent."""
        data = encode_plaintext([point("bad", value), point("good", 2)])
        assert data == b"good 2 1700000000\n"

    def test_tags(self) -> None:
        """Tags are series tags when asked, dropped otherwise."""
        points = [point("m", 1, tags=("env:prod",))]
        assert (
            encode_plaintext(points, prefix="p", tags_as_series=True)
            == b"p.m;env=prod 1 1700000000\n"
        )
        assert encode_plaintext(points) == b"m 1 1700000000\n"

    def test_large_and_small_values(self) -> None:
        """Values keep full precision."""
        data = encode_plaintext([point("a", 1e20), point("b", 1 / 3)])
        assert data == b"a 1e+20 1700000000\nb 0.3333333333333333 1700000000\n"


class TestEncodePickle:
    def test_carbon_pickle_format(self) -> None:
        """A frame is a 4-byte big-endian length and a protocol-2 pickle of (path, (ts, value)) pairs."""
        data = encode_pickle(
            [point("a", 1, 1_700_000_000.5), point("b", float("nan")), point("c", 2.5)],
            prefix="p",
        )
        assert data[4:6] == b"\x80\x02"
        assert frames(data) == [
            [("p.a", (1_700_000_000, 1.0)), ("p.c", (1_700_000_000, 2.5))]
        ]

    def test_frames_bounded(self) -> None:
        """Large batches are split into frames carbon accepts."""
        data = encode_pickle([point(f"m{i}", i) for i in range(5)], points_per_frame=2)
        assert [len(frame) for frame in frames(data)] == [2, 2, 1]

    def test_empty(self) -> None:
        """No points, no bytes."""
        assert encode_pickle([]) == b""
