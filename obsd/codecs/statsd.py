"""The StatsD line protocol (Etsy statsd plus DogStatsD tags), parsed without Twisted.

A line is ``name:value|type[|@rate][|#tag,k:v]``; one line may carry several
values for the same name (``k:1|c:2|c``) and a datagram several lines.  The
result is a list of ``Sample`` tuples that the aggregator folds into Graphite
points.  This is the hot path of the statsd input, so the common shapes are
handled with ``str`` methods only and no regular expression.

Where this parser deliberately differs from Etsy statsd 0.9 (see
docs/statsd-differences.rst): ``h`` and ``d`` are timers (the DogStatsD
meaning), not counters; unknown types, empty names, non-finite values, hex
literals and zero or negative sample rates are bad lines; so is a name longer
than ``max_name_length`` characters (Etsy has no limit, and each name is kept
in memory for as long as its series lives); ``|@1e-1`` is read as 0.1; and no
input raises anything but ``ParseError`` (Etsy crashes on ``|@ 0.5``).
"""

from __future__ import annotations

from typing import Final, NamedTuple

from obsd.errors import ParseError

#: Metric names (with any ``;k=v`` written into them) longer than this are bad lines.
DEFAULT_MAX_NAME_LENGTH: Final = 1024

COUNTER: Final = "c"
TIMER: Final = "ms"
GAUGE: Final = "g"
SET: Final = "s"

#: Wire type to obsd type; ``h`` (histogram) and ``d`` (distribution) are
#: DogStatsD's names for timer-like samples.
_TYPES: Final = {
    "c": COUNTER,
    "ms": TIMER,
    "g": GAUGE,
    "s": SET,
    "h": TIMER,
    "d": TIMER,
}


class Sample(NamedTuple):
    """One parsed StatsD value, before aggregation."""

    name: str
    #: A number, except for sets, whose members are kept as text.
    value: float | str
    #: One of ``"c"``, ``"ms"``, ``"g"``, ``"s"``.
    type: str
    #: The client's sample rate (``|@0.1``); 1.0 when absent.
    rate: float
    #: A gauge ``+N``/``-N`` adjusts the current value instead of setting it.
    delta: bool
    #: DogStatsD tags as sent: ``"k:v"`` or a bare ``"flag"``.
    tags: tuple[str, ...]


#: Types whose value is a number and that take the packet parser's fast path.
_FAST_TYPES: Final = {"c": COUNTER, "ms": TIMER, "g": GAUGE, "h": TIMER, "d": TIMER}
_NAN: Final = float("nan")

_new_sample = tuple.__new__  # skips NamedTuple's Python-level __new__ on the hot path
_NO_TAGS: Final[tuple[str, ...]] = ()


def _number(text: str, what: str) -> float:
    """Read a finite decimal number the way JavaScript's ``Number`` would, minus hex."""
    try:
        number = float(text)
    except ValueError:
        raise ParseError(f"{what} {text!r} is not a number") from None
    if number - number != 0.0:  # NaN or infinity
        raise ParseError(f"{what} {text!r} is not a finite number")
    if "_" in text or not text.isascii():
        raise ParseError(f"{what} {text!r} is not a plain decimal number")
    return number


def _parse_value(
    name: str, part: str, tags: tuple[str, ...], out: list[Sample]
) -> None:
    """Parse one ``value|type[|@rate]`` group of a line and append its sample."""
    fields = part.split("|")
    if len(fields) < 2:
        raise ParseError(f"value {part!r} has no '|type'")
    text = fields[0]
    kind = _TYPES.get(fields[1].strip())
    if kind is None:
        raise ParseError(f"unknown metric type {fields[1]!r}")
    rate = 1.0
    if len(fields) > 2:
        for extra in fields[2:]:
            if extra[:1] == "@":
                rate = _number(extra[1:], "sample rate")
                if rate <= 0.0:
                    raise ParseError(f"sample rate {extra[1:]!r} is not above zero")
            elif extra[:1] != "T":
                # DogStatsD's timestamp field (T) is ignored.  Its container-id
                # field (|c:id) cannot be told from a second value (k:1|c:2|c).
                raise ParseError(f"unexpected field {extra!r}")
    if kind is SET:
        out.append(_new_sample(Sample, (name, text or "0", SET, rate, False, tags)))
        return
    if not text:
        raise ParseError("empty value")
    value = _number(text, "value")
    if kind is GAUGE:
        delta = text[0] in "+-"
        out.append(_new_sample(Sample, (name, value, GAUGE, rate, delta, tags)))
        return
    if value < 0.0 and kind is TIMER and fields[1].strip() == "ms":
        raise ParseError(f"timer value {text!r} is negative")
    out.append(_new_sample(Sample, (name, value, kind, rate, False, tags)))


def _parse_line_into(
    line: str, out: list[Sample], bad: list[str], max_name: int = DEFAULT_MAX_NAME_LENGTH
) -> None:
    """Append a line's good samples to ``out`` and one reason per bad value to ``bad``."""
    tags = _NO_TAGS
    cut = line.find("|#")
    if cut >= 0:
        tag_text = line[cut + 2 :]
        line = line[:cut]
        if tag_text:
            tags = tuple(tag for tag in tag_text.split(",") if tag)
    name, colon, rest = line.partition(":")
    if not colon:
        bad.append("no ':' between name and value")
        return
    if not name:
        bad.append("empty metric name")
        return
    if len(name) > max_name:
        bad.append(f"metric name longer than {max_name} characters")
        return
    if ":" not in rest:
        try:
            _parse_value(name, rest, tags, out)
        except ParseError as error:
            bad.append(str(error))
        return
    for part in rest.split(":"):
        try:
            _parse_value(name, part, tags, out)
        except ParseError as error:
            bad.append(str(error))


def parse_statsd_line(line: bytes, max_name_length: int = DEFAULT_MAX_NAME_LENGTH) -> list[Sample]:
    """Parse one StatsD line (without its newline) into samples.

    Raises:
        ParseError: the line, or any value on it, is malformed; the message says why.
    """
    out: list[Sample] = []
    bad: list[str] = []
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("line is not valid UTF-8") from None
    _parse_line_into(text.rstrip("\r"), out, bad, max_name_length)
    if bad:
        raise ParseError("; ".join(bad))
    return out


def parse_statsd_packet_into(
    data: bytes,
    out: list[Sample],
    bad: list[tuple[bytes, str]],
    max_name_length: int = DEFAULT_MAX_NAME_LENGTH,
) -> int:
    """Parse a datagram or a chunk of newline-separated lines; never raises.

    Good samples go to ``out``, one ``(line, reason)`` per bad value to ``bad``.
    Returns the number of non-empty lines seen (Etsy's ``metrics_received``).
    """
    lines = 0
    reasons: list[str] = []
    for raw in data.split(b"\n"):
        if not raw:
            continue
        lines += 1
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            bad.append((raw, "line is not valid UTF-8"))
            continue
        if text[-1] == "\r":
            text = text[:-1]
        # Fast path for the common ``name:number|c|ms|g``; anything else, or
        # anything doubtful, goes through the full parser below.
        name, _, rest = text.partition(":")
        value_text, _, type_text = rest.partition("|")
        kind = _FAST_TYPES.get(type_text)
        if kind is not None and name and len(name) <= max_name_length and "|" not in name:
            try:
                value = float(value_text)
            except ValueError:
                value = _NAN
            if (
                value - value == 0.0
                and (value >= 0.0 or kind is not TIMER)
                and "_" not in value_text
                and value_text.isascii()
            ):
                delta = kind is GAUGE and value_text[0] in "+-"
                out.append(
                    _new_sample(Sample, (name, value, kind, 1.0, delta, _NO_TAGS))
                )
                continue
        try:
            _parse_line_into(text, out, reasons, max_name_length)
        except Exception as error:  # noqa: BLE001 - a bad line must never cost the others
            reasons.append(f"unparseable line ({error.__class__.__name__})")
        if reasons:
            bad.extend((raw, reason) for reason in reasons)
            reasons.clear()
    return lines


def parse_statsd_packet(
    data: bytes, max_name_length: int = DEFAULT_MAX_NAME_LENGTH
) -> tuple[list[Sample], list[tuple[bytes, str]]]:
    """Parse newline-separated StatsD lines: the good samples and ``(bad line, reason)`` pairs.

    A bad value never costs the good ones beside it, on the same line or on
    others.  Never raises.
    """
    out: list[Sample] = []
    bad: list[tuple[bytes, str]] = []
    parse_statsd_packet_into(data, out, bad, max_name_length)
    return out, bad
