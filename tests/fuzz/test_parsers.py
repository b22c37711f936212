"""Every parser a sender can reach: a result or its one documented error, in linear work.

Inputs are random bytes and near-valid ones built like the real protocol
(StatsD lines, syslog frames, envelopes, gzip members), so the search reaches
past the first check.  ``derandomize`` keeps CI runs repeatable.
"""

from __future__ import annotations

import datetime
import gzip
import json
import zlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from obsd.codecs import (
    gelf,
    graphite_plaintext,
    otlp,
    relaywire,
    sentry,
    sentry_auth,
    sentry_body,
    statsd,
    syslog,
)
from obsd.codecs.framing import FRAMINGS, FramingError, make_framer
from obsd.errors import ParseError
from tests.fuzz.work import assert_linear, measure

FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LIMIT = 64 * 1024


# --- strategies ---------------------------------------------------------------------

names = st.text(st.characters(codec="utf-8", exclude_characters="\n"), max_size=40)
numbers = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "-", "1e999", "nan", "0x10", "1_000", " 1", "1."]),
)
statsd_lines = st.builds(
    lambda name, values, kind, rate, tags: (
        f"{name}:{':'.join(values)}|{kind}{rate}{tags}".encode("utf-8", "surrogatepass")
    ),
    names,
    st.lists(numbers, min_size=1, max_size=3),
    st.sampled_from(["c", "g", "ms", "h", "s", "d", "x", ""]),
    st.sampled_from(["", "|@0.5", "|@0", "|@-1", "|@x", "|@1e-300"]),
    st.sampled_from(["", "|#a:b,c", "|#", "|#" + "t" * 300, "|c:123"]),
)
statsd_packets = st.lists(st.one_of(statsd_lines, st.binary(max_size=60)), max_size=20).map(
    b"\n".join
)

syslog_messages = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda pri, version, rest: b"<%d>%s %s" % (pri, version, rest),
        st.integers(-5, 300),
        st.sampled_from([b"1", b"", b"2", b"01"]),
        st.one_of(
            st.binary(max_size=200),
            st.sampled_from([
                b"2003-10-11T22:14:15.003Z host app 1 ID47 [a b=\"c\"] msg",
                b"- - - - - [x@1 k=\"v\\\"\"][y] \xef\xbb\xbfbody",
                b"Oct 11 22:14:15 host app[12]: text",
                b"2003-13-45T99:99:99Z h a p m - -",
                b"- - - - - [" + b"a" * 500,
            ]),
        ),
    ),
)


def gzip_members(payloads: list[bytes]) -> bytes:
    return b"".join(gzip.compress(p) for p in payloads)


compressed_bodies = st.one_of(
    st.binary(max_size=400),
    st.lists(st.binary(max_size=40), min_size=1, max_size=30).map(gzip_members),
    st.binary(max_size=400).map(zlib.compress),
    st.tuples(st.binary(min_size=1, max_size=300), st.integers(1, 50)).map(
        lambda pair: gzip.compress(pair[0])[: -pair[1]]  # truncated
    ),
    st.integers(1, 4).map(lambda n: gzip.compress(b"\0" * (LIMIT * n))),  # a bomb
)


def envelope(headers: Any, items: list[tuple[Any, bytes, int]]) -> bytes:
    out = [json.dumps(headers).encode() if not isinstance(headers, bytes) else headers]
    for item_headers, payload, skew in items:
        if isinstance(item_headers, dict) and skew >= 0:
            item_headers = {**item_headers, "length": len(payload) + skew - 5}
        out.append(json.dumps(item_headers).encode())
        out.append(payload)
    return b"\n".join(out)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)
envelopes = st.one_of(
    st.binary(max_size=400),
    st.builds(
        envelope,
        st.one_of(st.just({"event_id": "9ec79c33ec9942ab8353589fcb2e04dc"}), json_values,
                  st.binary(max_size=20)),
        st.lists(
            st.tuples(
                st.one_of(st.fixed_dictionaries({"type": st.sampled_from(
                    ["event", "transaction", "attachment", "session", "x"])}), json_values),
                st.binary(max_size=60),
                st.integers(-1, 10),
            ),
            max_size=8,
        ),
    ),
)


# --- the properties -------------------------------------------------------------------


@FUZZ
@given(statsd_packets)
def test_statsd_packets(data: bytes) -> None:
    """A packet's good samples and bad lines; never an exception."""
    (samples, bad), work = measure(lambda: statsd.parse_statsd_packet(data), ParseError)
    assert isinstance(samples, list) and isinstance(bad, list)
    assert_linear(work, len(data), base=200, per_byte=12)


@FUZZ
@given(st.one_of(statsd_lines, st.binary(max_size=200)))
def test_statsd_line(line: bytes) -> None:
    outcome, work = measure(lambda: statsd.parse_statsd_line(line), ParseError)
    assert isinstance(outcome, list | ParseError)
    assert_linear(work, len(line), base=200, per_byte=12)


@FUZZ
@given(st.sampled_from(FRAMINGS), st.lists(syslog_messages, max_size=10), st.data())
def test_syslog_framing(framing: str, messages: list[bytes], data: st.DataObject) -> None:
    """Frames, or ``FramingError`` for a broken octet count; chunks split anywhere."""
    stream = b"".join(
        data.draw(st.sampled_from([b"%d " % len(m) + m, m + b"\n", m + b"\0", b"x" + m]))
        for m in messages
    )
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    framer = make_framer(framing, max_message_size=128)

    def feed() -> list[Any]:
        frames = []
        for chunk in chunks:
            frames += framer.feed(chunk)
        return frames + framer.flush()

    outcome, work = measure(feed, FramingError)
    if isinstance(outcome, list):
        assert all(len(frame.message) <= 128 for frame in outcome)
    assert_linear(work, len(stream), base=300 + 60 * len(chunks), per_byte=2)


@FUZZ
@given(syslog_messages)
def test_syslog_messages(data: bytes) -> None:
    """Any message becomes fields (unreadable ones keep their bytes in ``raw``)."""
    fields, work = measure(
        lambda: syslog.parse_syslog(data, received_at=0.0, timezone=datetime.UTC),
        ParseError,
    )
    assert isinstance(fields, dict) and "event" in fields
    assert_linear(work, len(data), base=600, per_byte=6)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["x-sentry-auth", "authorization", "X-Sentry-Auth", "other"]),
        st.one_of(
            st.text(max_size=120),
            st.builds(lambda k, v: f"Sentry sentry_key={k}, sentry_version={v}",
                      st.text(max_size=40), st.text(max_size=5)),
        ),
        max_size=3,
    ),
    st.dictionaries(st.sampled_from(["sentry_key", "sentry_version", "x"]),
                    st.lists(st.text(max_size=40), max_size=2), max_size=3),
    st.one_of(st.none(), st.text(max_size=80),
              st.builds(lambda k: f"https://{k}@sentry.example/42", st.text(max_size=40))),
)
def test_sentry_auth(headers: dict[str, str], query: dict[str, list[str]], dsn: str | None) -> None:
    outcome, work = measure(
        lambda: sentry_auth.parse_auth(headers, query, dsn), sentry.SentryRequestError
    )
    assert isinstance(outcome, sentry.SentryAuth | sentry.SentryRequestError)
    size = sum(len(k) + len(v) for k, v in headers.items()) + len(dsn or "") + sum(
        len(k) + sum(map(len, v)) for k, v in query.items()
    )
    assert_linear(work, size, base=400, per_byte=10)


@FUZZ
@given(compressed_bodies, st.sampled_from([None, "", "gzip", "deflate", "br", "x-gzip", "zstd"]))
def test_sentry_bodies(body: bytes, encoding: str | None) -> None:
    """Decoded bytes within the limit, or 413/400; many members cost one pass."""
    outcome, work = measure(
        lambda: sentry_body.decode_body(body, encoding, LIMIT), sentry.SentryRequestError
    )
    if isinstance(outcome, bytes):
        assert len(outcome) <= LIMIT
    else:
        assert outcome.status in (400, 413)
    assert_linear(work, len(body), base=400 + LIMIT // 1000, per_byte=2)


@FUZZ
@given(envelopes)
def test_sentry_envelopes(data: bytes) -> None:
    outcome, work = measure(lambda: sentry.parse_envelope(data, max_items=5),
                            sentry.SentryRequestError)
    if isinstance(outcome, sentry.Envelope):
        assert len(outcome.items) <= 5
    else:
        assert outcome.status in (400, 413)
    assert_linear(work, len(data), base=300, per_byte=4)


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=400),
        st.lists(st.one_of(json_values.map(json.dumps), st.text(max_size=30)), max_size=8).map(
            lambda lines: "\n".join(lines).encode()
        ),
    ),
    st.booleans(),
)
def test_relay_bodies(body: bytes, gzipped: bool) -> None:
    wire = gzip_members([body[i : i + 16] for i in range(0, len(body), 16)]) if gzipped else body
    outcome, work = measure(
        lambda: relaywire.decode_body(wire, gzipped=gzipped, max_bytes=LIMIT, max_events=5),
        ParseError,
    )
    assert isinstance(outcome, list | ParseError)
    assert_linear(work, len(wire), base=300, per_byte=4)


@FUZZ
@given(st.one_of(compressed_bodies, json_values.map(lambda v: json.dumps(v).encode())))
def test_gelf_payloads(payload: bytes) -> None:
    outcome, work = measure(lambda: gelf.parse_payload(payload, LIMIT), ParseError)
    assert isinstance(outcome, tuple | ParseError)
    assert_linear(work, len(payload), base=400 + LIMIT // 1000, per_byte=2)


@FUZZ
@given(st.one_of(st.binary(max_size=200), st.binary(max_size=200).map(lambda b: b"\x1e\x0f" + b)))
def test_gelf_chunks(datagram: bytes) -> None:
    outcome, work = measure(lambda: gelf.parse_chunk(datagram), ParseError)
    assert isinstance(outcome, tuple | ParseError)
    assert_linear(work, len(datagram), base=100, per_byte=1)


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=200),
        st.builds(lambda p, v, t: f"{p} {v} {t}".encode("utf-8", "surrogatepass"),
                  names, numbers, numbers),
    )
)
def test_graphite_lines(data: bytes) -> None:
    (points, bad), work = measure(lambda: graphite_plaintext.parse_plaintext(data, 0.0), ParseError)
    assert isinstance(points, list) and isinstance(bad, list)
    assert_linear(work, len(data), base=200, per_byte=12)


@FUZZ
@given(compressed_bodies, st.sampled_from([None, "gzip", "deflate", "identity", "br"]),
       st.sampled_from(sorted(otlp.REQUESTS)), st.sampled_from([otlp.JSON, otlp.PROTOBUF]))
def test_otlp_bodies(body: bytes, encoding: str | None, signal: str, media: str) -> None:
    def decode() -> Any:
        return otlp.parse_request(signal, otlp.decode_body(body, encoding, LIMIT), media)

    outcome, work = measure(decode, otlp.OtlpRequestError)
    if isinstance(outcome, otlp.OtlpRequestError):
        assert outcome.status in (400, 413, 415)
    assert_linear(work, len(body), base=400 + LIMIT // 1000, per_byte=2)
