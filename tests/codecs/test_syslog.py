"""Tests for the syslog parser and structured bodies."""

from __future__ import annotations

import base64
import datetime
import zoneinfo
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from obsd.codecs import syslog as syslog_module
from obsd.codecs.structured import parse_tai64n
from obsd.codecs.syslog import parse_syslog

#: 2026-11-24T01:30:00Z
NOW = 1795483800.0


def ts(text: str) -> float:
    """Epoch seconds of an ISO 8601 text."""
    return datetime.datetime.fromisoformat(text).timestamp()


@pytest.fixture(name="parse")
def _parse() -> Any:
    """parse_syslog received at NOW in UTC."""

    def parse(data: bytes, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("received_at", NOW)
        kwargs.setdefault("timezone", datetime.UTC)
        return parse_syslog(data, **kwargs)

    return parse


class TestRfc5424:
    def test_full_message(self, parse: Any) -> None:
        """Every RFC 5424 header field, two SD elements with escapes, BOM and MSG."""
        out = parse(
            b'<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog 42 ID47 [ex@32473 iut="3" q="a\\"b\\]c\\\\d"][two x="1"] \xef\xbb\xbfAn event'
        )
        assert out == {
            "event": "An event",
            "level": "info",
            "timestamp": ts("2003-10-11T22:14:15.003+00:00"),
            "facility": "local4",
            "severity": "notice",
            "host": "mymachine.example.com",
            "appname": "evntslog",
            "procid": "42",
            "msgid": "ID47",
            "sd": {"ex@32473": {"iut": "3", "q": 'a"b]c\\d'}, "two": {"x": "1"}},
            "syslog_format": "rfc5424",
        }

    def test_nilvalues(self, parse: Any) -> None:
        """NILVALUE fields are absent and the timestamp is the time of receipt."""
        out = parse(b"<13>1 - - - - - -")
        assert out == {
            "event": "",
            "level": "info",
            "timestamp": NOW,
            "facility": "user",
            "severity": "notice",
            "syslog_format": "rfc5424",
        }

    @pytest.mark.parametrize(
        ("stamp", "expected"),
        [
            ("2003-08-24T05:14:15.000003-07:00", "2003-08-24T12:14:15.000003+00:00"),
            ("2026-11-23T22:14:15.5+05:30", "2026-11-23T16:44:15.5+00:00"),
            ("2003-10-11T22:14:15.123456789Z", "2003-10-11T22:14:15.123456789+00:00"),
            ("2006-01-02t15:04:05z", "2006-01-02T15:04:05+00:00"),
            ("2016-12-31T23:59:60Z", "2017-01-01T00:00:00+00:00"),
            ("2009-10-16T11:51:56", "2009-10-16T11:51:56+00:00"),
        ],
    )
    def test_timestamps(self, parse: Any, stamp: str, expected: str) -> None:
        """Fractions up to nanoseconds and any offset are normalised to UTC epoch."""
        out = parse(f"<13>1 {stamp} h a - - - x".encode())
        assert out["timestamp"] == pytest.approx(ts(expected), abs=1e-6)

    def test_offsetless_stamp_uses_timezone(self, parse: Any) -> None:
        """An RFC 5424 stamp without offset is read in the configured timezone."""
        zone = zoneinfo.ZoneInfo("Europe/Amsterdam")
        out = parse(b"<13>1 2026-07-01T12:00:00 h a - - - x", timezone=zone)
        assert out["timestamp"] == ts("2026-07-01T10:00:00+00:00")

    def test_impossible_stamp_keeps_raw(self, parse: Any) -> None:
        """A stamp naming a day that does not exist gives receipt time and the line in raw."""
        out = parse(b"<13>1 2018-02-29T22:14:16+01:00 h a - - - x")
        assert (out["timestamp"], out["raw"], out["host"]) == (
            NOW,
            "<13>1 2018-02-29T22:14:16+01:00 h a - - - x",
            "h",
        )

    def test_other_version(self, parse: Any) -> None:
        """A VERSION other than 1 is read as RFC 5424 and kept."""
        out = parse(b"<13>2 - host app - - - hi")
        assert (out["syslog_version"], out["host"], out["event"]) == (2, "host", "hi")

    def test_malformed_sd_stays_in_message(self, parse: Any) -> None:
        """Malformed structured data is not guessed at: it stays in the message."""
        out = parse(b'<13>1 - h a - - [a i=""ok"] text')
        assert "sd" not in out
        assert out["event"] == '[a i=""ok"] text'


class TestRfc3164:
    @pytest.mark.parametrize(
        ("line", "fields"),
        [
            (
                b"<34>Oct 11 22:14:15 mymachine su[42]: 'su root' failed",
                {
                    "host": "mymachine",
                    "appname": "su",
                    "procid": "42",
                    "event": "'su root' failed",
                },
            ),
            (
                b"<13>Nov 24 01:02:03 myprog: from glibc",
                {"appname": "myprog", "event": "from glibc"},
            ),
            (
                b"<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!",
                {"host": "10.0.0.99", "event": "Use the BFG!"},
            ),
            (
                b"<15> openvpn[2499]: PTHREAD support initialized",
                {
                    "appname": "openvpn",
                    "procid": "2499",
                    "event": "PTHREAD support initialized",
                },
            ),
            (
                b"Oct 11 22:14:15 host.example app[123]: no PRI",
                {
                    "host": "host.example",
                    "appname": "app",
                    "procid": "123",
                    "event": "no PRI",
                },
            ),
            (
                b"<0>91: *Oct 07 03:10:04: mydevice.com %CRYPTO-4-X: decaps",
                {
                    "host": "mydevice.com",
                    "appname": "%CRYPTO-4-X",
                    "sd": {"meta": {"sequenceId": "91"}},
                    "event": "decaps",
                },
            ),
            (
                b"<190>Apr 15 2007 21:28:13: %PIX-6-302014: Teardown",
                {"appname": "%PIX-6-302014", "event": "Teardown"},
            ),
        ],
    )
    def test_variants(self, parse: Any, line: bytes, fields: dict[str, Any]) -> None:
        """BSD variants: hostname or not, tag[pid], no PRI, Cisco sequence numbers."""
        out = parse(line)
        assert out["syslog_format"] == "rfc3164"
        assert {key: out.get(key) for key in fields} == fields
        assert not {"host", "appname", "procid", "sd"} - set(fields) & set(out)

    @pytest.mark.parametrize(
        ("line", "expected"),
        [
            (b"<13>Mar  7 19:06:53 h a: x", "2026-03-07T19:06:53+00:00"),
            (b"<13>Dec 20 00:00:00 h a: x", "2026-12-20T00:00:00+00:00"),
            (b"<13>Dec 31 23:59:59 h a: x", "2025-12-31T23:59:59+00:00"),
            (b"<13>Feb 29 12:00:00 h a: x", "2024-02-29T12:00:00+00:00"),
            (b"<13>Apr 15 2007 21:28:13 h a: x", "2007-04-15T21:28:13+00:00"),
            (b"<13>Apr 15 21:28:13 2007 h a: x", "2007-04-15T21:28:13+00:00"),
            (b"<13>Aug 29 02:00:00.156789 h a: x", "2026-08-29T02:00:00.156789+00:00"),
        ],
    )
    def test_nearest_year(self, parse: Any, line: bytes, expected: str) -> None:
        """Year-less stamps get the latest year that is at most 31 days ahead of receipt."""
        assert parse(line)["timestamp"] == pytest.approx(ts(expected), abs=1e-6)

    def test_year_turn(self, parse: Any) -> None:
        """A Jan 1 stamp received on Dec 31 is next year's."""
        received = ts("2026-12-31T23:59:00+00:00")
        out = parse(b"<13>Jan  1 00:00:30 h a: x", received_at=received)
        assert out["timestamp"] == ts("2027-01-01T00:00:30+00:00")

    def test_timezone(self, parse: Any) -> None:
        """RFC 3164 stamps are read in the configured timezone, DST included."""
        zone = zoneinfo.ZoneInfo("America/New_York")
        out = parse(b"<13>Jul  1 12:00:00 h a: x", timezone=zone)
        assert out["timestamp"] == ts("2026-07-01T16:00:00+00:00")


class TestFallback:
    @pytest.mark.parametrize(
        "line",
        [b"This is a message!", b"<192>1 - - - - - -", b"<1900>x", b"<13", b"<>x", b""],
    )
    def test_unparsed_keeps_line(self, parse: Any, line: bytes) -> None:
        """What is not syslog comes out whole as event and raw, as user.notice."""
        out = parse(line)
        text = line.decode()
        assert out == {
            "event": text,
            "raw": text,
            "level": "info",
            "timestamp": NOW,
            "facility": "user",
            "severity": "notice",
            "syslog_format": "unparsed",
        }

    def test_invalid_utf8(self, parse: Any) -> None:
        """Invalid UTF-8 is replaced in text and the bytes kept in base64."""
        line = b"<13>1 - - - - - - caf\xe9"
        out = parse(line)
        assert out["event"] == "caf\ufffd"
        assert base64.b64decode(out["raw_b64"]) == line

    def test_truncated(self, parse: Any) -> None:
        """A message over the limit is cut, flagged and still parsed."""
        out = parse(b"<13>1 - h a - - - " + b"x" * 100, max_message_size=50)
        assert out["truncated"] is True
        assert out["event"] == "x" * (50 - len(b"<13>1 - h a - - - "))
        assert out["host"] == "h"

    def test_cut_does_not_split_utf8(self, parse: Any) -> None:
        """A cut inside a UTF-8 sequence drops the partial character, not the message."""
        line = b"<13>1 - - - - - - " + "é".encode() * 10
        out = parse(line, max_message_size=len(line) - 1)
        assert out["event"] == "é" * 9
        assert "raw_b64" not in out

    def test_framer_truncation_flag(self, parse: Any) -> None:
        """A message a framer already cut is flagged."""
        assert parse(b"<13>1 - - - - - - x", truncated=True)["truncated"] is True

    def test_trailing_newline_and_nul(self, parse: Any) -> None:
        """Trailing LF, CRLF and NUL are transport residue, not message text."""
        assert parse(b"<13>1 - - - - - - x\r\n\0")["event"] == "x"

    def test_internal_error_still_returns(
        self, parse: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Should a bug raise inside the parser, the line still comes out unparsed."""

        def broken(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError

        monkeypatch.setattr(syslog_module, "parse_rfc5424", broken)
        out = parse(b"<13>1 - - - - - - x")
        assert (out["syslog_format"], out["event"]) == (
            "unparsed",
            "<13>1 - - - - - - x",
        )


class TestStructuredBody:
    def test_structlog_json(self, parse: Any) -> None:
        """structlog JSON becomes the event: event, level, timestamp and other keys."""
        out = parse(
            b'<14>{"event": "user.login", "user": "guido", "level": "warn",'
            b' "timestamp": "2026-11-24T01:00:00.5Z"}'
        )
        assert out == {
            "event": "user.login",
            "user": "guido",
            "level": "warning",
            "timestamp": ts("2026-11-24T01:00:00.5+00:00"),
            "facility": "user",
            "severity": "info",
            "syslog_format": "rfc3164",
        }

    def test_collisions_are_prefixed(self, parse: Any) -> None:
        """Reserved keys, private keys and header fields from the body go under data."""
        out = parse(
            b'<14>1 - web1 app - - - {"msg": "m", "host": "evil", "_p": 1,'
            b' "appname": "x", "id": 3, "ok": true}'
        )
        assert out["event"] == "m"
        assert out["host"] == "web1"
        assert out["appname"] == "app"
        assert (
            out["data_host"],
            out["data__p"],
            out["data_appname"],
            out["data_id"],
        ) == (
            "evil",
            1,
            "x",
            3,
        )
        assert out["ok"] is True

    @pytest.mark.parametrize(
        ("stamp", "expected"),
        [
            (b"1795482000", 1795482000.0),
            (b"1795482000.25", 1795482000.25),
            (b"1795482000250", 1795482000.25),
            (b'"2026-11-24 01:00:00"', ts("2026-11-24T01:00:00+00:00")),
        ],
    )
    def test_timestamp_forms(self, parse: Any, stamp: bytes, expected: float) -> None:
        """Epoch seconds or milliseconds and ISO strings become the timestamp."""
        out = parse(b'<14>{"event": "e", "timestamp": ' + stamp + b"}")
        assert out["timestamp"] == pytest.approx(expected)

    def test_unreadable_timestamp_is_kept(self, parse: Any) -> None:
        """A body timestamp obsd cannot read is kept under data.timestamp."""
        out = parse(b'<14>{"event": "e", "timestamp": "yesterday"}')
        assert (out["timestamp"], out["data_timestamp"]) == (NOW, "yesterday")

    def test_cee(self, parse: Any) -> None:
        """An @cee: body is merged like bare JSON."""
        out = parse(
            b'<13>Nov 24 01:00:00 web1 app[1]: @cee: {"msg": "hello", "pid": 7}'
        )
        assert (out["event"], out["pid"], out["procid"]) == ("hello", 7, "1")

    @pytest.mark.parametrize(
        "body", [b"{not json}", b'["a list"]', b"@cee: nope", b'{"a": 1} trailing']
    )
    def test_not_an_object_stays_text(self, parse: Any, body: bytes) -> None:
        """A body that is not a JSON object stays the event text."""
        assert parse(b"<13>1 - - - - - - " + body)["event"] == body.decode()

    def test_tai64n(self, parse: Any) -> None:
        """A svlogd TAI64N label becomes the timestamp, before plain text or JSON."""
        out = parse(b'<13>@400000005270e0d604afce64 {"event": "e"}')
        assert out["event"] == "e"
        assert out["timestamp"] == pytest.approx(1383129292.07863)

    @pytest.mark.parametrize(
        ("label", "expected"),
        [
            ("@400000005270e0d604afce64", 1383129292.07863),
            ("@4000000000000000000000000", None),
            ("@40000000000000000000000x", None),
        ],
    )
    def test_parse_tai64n(self, label: str, expected: float | None) -> None:
        """TAI64N labels are 24 hex digits after @, 2**62 + 10 at the Unix epoch."""
        assert parse_tai64n(label) == (
            expected if expected is None else pytest.approx(expected)
        )


class TestFuzz:
    @settings(max_examples=500, deadline=None)
    @given(data=st.binary(max_size=200), limit=st.integers(min_value=1, max_value=300))
    def test_bytes_never_raise(self, data: bytes, limit: int) -> None:
        """On arbitrary bytes the parser, without its safety net, returns well-formed fields."""
        out = syslog_module._parse(data, NOW, datetime.UTC, limit, False)
        assert isinstance(out["event"], str)
        assert isinstance(out["timestamp"], float)
        assert out["syslog_format"] in ("rfc5424", "rfc3164", "unparsed")

    @settings(max_examples=500, deadline=None)
    @given(
        prefix=st.sampled_from(
            [
                b"<13>1 ",
                b"<13>",
                b"<13>1 2026-11-24T01:00:00Z h a p m ",
                b"<13>Nov 24 01:00:00 ",
            ]
        ),
        rest=st.binary(max_size=120) | st.text(max_size=120).map(str.encode),
    )
    def test_syslog_shaped_never_raise(self, prefix: bytes, rest: bytes) -> None:
        """Lines that start like syslog and go on arbitrarily never make the parser raise."""
        out = syslog_module._parse(prefix + rest, NOW, datetime.UTC, 65536, False)
        assert isinstance(out["event"], str)
