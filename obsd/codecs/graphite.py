"""Graphite's wire formats (plaintext and pickle) and its metric-name rules, without Twisted.

Names are cleaned with Etsy statsd's key rule (``keyNameSanitize``), the
strictest that common tools agree on and the one statsd users already see:
runs of whitespace become ``_``, ``/`` becomes ``-``, and anything other than
``A-Z a-z 0-9 _ - .`` is dropped.  carbon itself only splits lines on
whitespace, but graphite-web cannot query many other characters.  Tags follow
carbon's tagged-series form ``name;k=v`` (carbon ``TaggedSeries``): tag keys
and values are cleaned with the same rule, empty ones dropped, and a bare
DogStatsD tag ``flag`` becomes ``flag=true`` because carbon rejects a tag
without ``=``.
"""

from __future__ import annotations

import math
import pickle
import re
import struct
from collections.abc import Iterable
from typing import Final, NamedTuple


class MetricPoint(NamedTuple):
    """One value under its final Graphite name."""

    name: str
    value: float
    #: Whole seconds since the epoch.
    timestamp: int
    #: ``"k:v"`` or ``"flag"``; sent as ``;k=v`` only when tags become series.
    tags: tuple[str, ...]


_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_.\-]")
_SPACES: Final = re.compile(r"\s+")

#: carbon's pickle receiver refuses frames over 1 MiB; carbon-relay sends 500 points a frame.
PICKLE_POINTS_PER_FRAME: Final = 500
_LENGTH: Final = struct.Struct("!L")


def sanitise_name(name: str) -> str:
    """Clean a metric name (or a tag key or value) with Etsy statsd's key rule."""
    if _UNSAFE.search(name) is None:
        return name
    return _UNSAFE.sub("", _SPACES.sub("_", name).replace("/", "-"))


def _series_tags(tags: Iterable[str]) -> str:
    """``("k:v", "flag")`` as carbon's ``;flag=true;k=v`` (sorted, as carbon stores them)."""
    pairs: dict[str, str] = {}
    for tag in tags:
        key, colon, value = tag.partition(":")
        key = sanitise_name(key)
        value = sanitise_name(value) if colon else "true"
        if key and value:
            pairs[key] = value
    return "".join(f";{key}={pairs[key]}" for key in sorted(pairs))


def graphite_path(
    name: str, tags: tuple[str, ...], prefix: str = "", tags_as_series: bool = False
) -> str:
    """The series path carbon receives: prefixed once, cleaned, with ``;k=v`` tags if asked.

    A name that already starts with ``prefix.`` (a point relayed from another
    obsd) is not prefixed again.  Tags written into the name (``a.b;k=v``) are
    treated like separate tags.
    """
    if ";" in name:
        name, *inline = name.split(";")
        tags = (*tags, *(part.replace("=", ":", 1) for part in inline if part))
    name = sanitise_name(name)
    if prefix:
        prefix = prefix.rstrip(".")
        if name != prefix and not name.startswith(prefix + "."):
            name = f"{prefix}.{name}"
    if tags_as_series and tags:
        return name + _series_tags(tags)
    return name


def format_value(value: float) -> str:
    """A value as text: integers without ``.0``, others in Python's shortest round-trip form."""
    if value == int(value) and abs(value) < 1e16:
        return str(int(value))
    return repr(float(value))


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except TypeError:
        return False


def encode_plaintext(
    points: Iterable[MetricPoint], prefix: str = "", tags_as_series: bool = False
) -> bytes:
    """Points as carbon's line protocol, ``path value timestamp\\n`` each.

    A point is a ``MetricPoint`` or any tuple that starts as one (the
    aggregator's ``StatsdPoint``).

    NaN, infinities and non-numbers are never sent; timestamps are whole
    seconds (carbon truncates, and millisecond stamps break its writes).
    """
    lines = [
        f"{graphite_path(name, tags, prefix, tags_as_series)} {format_value(value)} {int(timestamp)}\n"
        for name, value, timestamp, tags, *_ in points
        if _finite(value)
    ]
    return "".join(lines).encode("utf-8")


def encode_pickle(
    points: Iterable[MetricPoint],
    prefix: str = "",
    tags_as_series: bool = False,
    points_per_frame: int = PICKLE_POINTS_PER_FRAME,
) -> bytes:
    """Points as carbon's pickle protocol: frames of a 4-byte big-endian length + pickle.

    Each frame pickles ``[(path, (timestamp, value)), ...]`` with protocol 2 and
    holds at most ``points_per_frame`` points; non-finite values are skipped.
    """
    batch = [
        (
            graphite_path(name, tags, prefix, tags_as_series),
            (int(timestamp), float(value)),
        )
        for name, value, timestamp, tags, *_ in points
        if _finite(value)
    ]
    frames = []
    for start in range(0, len(batch), points_per_frame):
        body = pickle.dumps(batch[start : start + points_per_frame], protocol=2)
        frames.append(_LENGTH.pack(len(body)) + body)
    return b"".join(frames)
