"""What carbon receives, read without Twisted: plaintext lines and pickle frames.

A plaintext line is ``path value timestamp`` (carbon's ``MetricLineReceiver``);
a timestamp of ``-1`` means "now", as carbon reads it.  Paths may carry tags in
carbon's tagged-series form ``name;k=v;k2=v2``.  Names, tag keys and values go
through the same cleaning as the Graphite output (``sanitise_name``), so what
comes in is what would go out.

Pickle frames (carbon's port 2004) are read by ``RestrictedUnpickler``: its
``find_class`` refuses every global, so a frame can build only lists, tuples,
dicts, strings, bytes, numbers, booleans and None, and one that names a class or
function (the ``os.system`` trick) is refused before anything runs.

Every problem raises ``GraphiteParseError`` and nothing else.
"""

from __future__ import annotations

import io
import math
import pickle
from typing import Any, Final, NamedTuple

from obsd.codecs.graphite import sanitise_name
from obsd.errors import ParseError

#: carbon's pickle receiver refuses frames longer than this (``MAX_LENGTH``).
MAX_PICKLE_FRAME: Final = 1024 * 1024


class GraphiteParseError(ParseError):
    """A line or pickle frame that is not a Graphite point; the message says why."""

    def __init__(self, reason: str, *, refused_global: bool = False) -> None:
        super().__init__(reason)
        #: the frame named a global (a class or function): a hostile pickle
        self.refused_global = refused_global


class GraphitePoint(NamedTuple):
    """One received point: cleaned name, tags, value and timestamp (epoch seconds)."""

    name: str
    value: float
    timestamp: float
    tags: dict[str, str]


def parse_path(path: str) -> tuple[str, dict[str, str]]:
    """``name;k=v`` as (clean name, {k: v}); raises ``GraphiteParseError``.

    As carbon's ``TaggedSeries.parse``: every tag needs ``=`` and a key; the
    name, keys and values are cleaned like the Graphite output cleans them.
    """
    name, *parts = path.split(";")
    tags: dict[str, str] = {}
    for part in parts:
        key, eq, value = part.partition("=")
        key, value = sanitise_name(key), sanitise_name(value)
        if not eq or not key or not value:
            raise GraphiteParseError(f"bad tag {part[:100]!r}: tags are key=value")
        tags[key] = value
    clean = sanitise_name(name).strip(".")
    if not clean or ".." in clean:
        raise GraphiteParseError(f"bad metric name {name[:100]!r}")
    return clean, tags


def _number(text: Any, what: str) -> float:
    try:
        number = float(text)
    except (TypeError, ValueError, OverflowError):
        raise GraphiteParseError(f"{what} is not a number: {str(text)[:50]!r}") from None
    if not math.isfinite(number):
        raise GraphiteParseError(f"{what} is not finite: {str(text)[:50]!r}")
    return number


def make_point(path: Any, value: Any, timestamp: Any, now: float) -> GraphitePoint:
    """A checked point from its three parts; ``-1`` (or ``N``) as timestamp means ``now``."""
    if isinstance(path, bytes):
        path = path.decode("utf-8", "replace")
    if not isinstance(path, str):
        raise GraphiteParseError(f"metric path is not text: {type(path).__name__}")
    if isinstance(value, bool) or isinstance(timestamp, bool):
        raise GraphiteParseError("value and timestamp are numbers, not booleans")
    name, tags = parse_path(path)
    number = _number(value, "value")
    if timestamp in (b"N", "N"):
        stamp = now
    else:
        stamp = _number(timestamp, "timestamp")
        if stamp == -1:
            stamp = now
        elif stamp < 0:
            raise GraphiteParseError(f"timestamp is negative: {stamp:g}")
    return GraphitePoint(name, number, stamp, tags)


def parse_plaintext_line(line: bytes, now: float) -> GraphitePoint:
    """One ``path value timestamp`` line (surrounding whitespace allowed)."""
    parts = line.split()
    if len(parts) != 3:
        raise GraphiteParseError(
            f"expected 'path value timestamp', got {len(parts)} fields: "
            f"{line[:100].decode('utf-8', 'replace')!r}"
        )
    return make_point(parts[0], parts[1], parts[2], now)


def parse_plaintext(
    data: bytes, now: float
) -> tuple[list[GraphitePoint], list[tuple[bytes, str]]]:
    """Every line of ``data``: the points, and each bad line with its reason."""
    points: list[GraphitePoint] = []
    bad: list[tuple[bytes, str]] = []
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            points.append(parse_plaintext_line(line, now))
        except GraphiteParseError as exc:
            bad.append((line, str(exc)))
    return points, bad


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles containers, strings and numbers only: every global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise GraphiteParseError(
            f"pickle refers to {module[:100]}.{name[:100]}; only lists, tuples, strings "
            "and numbers are accepted",
            refused_global=True,
        )


def parse_pickle(
    frame: bytes, now: float
) -> tuple[list[GraphitePoint], list[tuple[bytes, str]]]:
    """One pickle frame's body: ``[(path, (timestamp, value)), ...]`` as carbon sends it.

    Returns the points and the bad entries; a frame that cannot be read at all
    (not a pickle, a refused global, not a list) raises ``GraphiteParseError``.
    """
    if len(frame) > MAX_PICKLE_FRAME:
        raise GraphiteParseError(f"pickle frame over {MAX_PICKLE_FRAME} bytes")
    try:
        data = RestrictedUnpickler(io.BytesIO(frame), encoding="utf-8").load()
    except GraphiteParseError:
        raise
    except RecursionError:
        raise GraphiteParseError("pickle nests too deeply") from None
    except Exception as exc:  # noqa: BLE001 - the unpickler raises many types on bad bytes
        raise GraphiteParseError(f"not a pickle frame: {type(exc).__name__}: {exc}") from None
    if not isinstance(data, list | tuple):
        raise GraphiteParseError(f"pickle frame holds {type(data).__name__}, not a list")
    points: list[GraphitePoint] = []
    bad: list[tuple[bytes, str]] = []
    for i, entry in enumerate(data):
        try:
            if not (isinstance(entry, list | tuple) and len(entry) == 2):
                raise GraphiteParseError("entries are (path, (timestamp, value))")
            path, datapoint = entry
            if not (isinstance(datapoint, list | tuple) and len(datapoint) == 2):
                raise GraphiteParseError("datapoints are (timestamp, value)")
            points.append(make_point(path, datapoint[1], datapoint[0], now))
        except GraphiteParseError as exc:
            # never repr() the entry: shared references can make that exponential
            bad.append((f"entry {i} ({type(entry).__name__})".encode(), str(exc)))
    return points, bad
