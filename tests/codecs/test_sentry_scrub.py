"""Secret scrubbing for events bound to non-Sentry outputs."""

from __future__ import annotations

from typing import Any

import pytest

from obsd.codecs.scrub import (
    DEFAULT_SCRUB,
    DEFAULT_SCRUB_KEYS,
    FILTERED,
    Scrubber,
    ScrubRules,
    make_scrubber,
)


@pytest.fixture(name="scrubber")
def _scrubber() -> Scrubber:
    return Scrubber(DEFAULT_SCRUB)


class TestKeys:
    @pytest.mark.parametrize(
        "key",
        [
            "password",
            "db_password",
            "PASSWD",
            "client_secret",
            "access_token",
            "api_key",
            "X-Api-Key",
            "apikey",
            "auth",
            "Authorization",
            "HTTP_AUTHORIZATION",
            "cookie",
            "Set-Cookie",
            "sessionid",
            "credentials",
            "SENTRY_DSN",
        ],
    )
    def test_secret_keys(self, scrubber: Scrubber, key: str) -> None:
        """Keys containing a default pattern, in any case or with dashes, lose their value."""
        assert scrubber.scrub({key: "hunter2"}) == {key: FILTERED}

    @pytest.mark.parametrize("key", ["event", "user_id", "release", "host", "level"])
    def test_ordinary_keys(self, scrubber: Scrubber, key: str) -> None:
        """Keys matching no pattern keep their value."""
        assert scrubber.scrub({key: "hunter2"}) == {key: "hunter2"}

    def test_nested_and_whole_values(self, scrubber: Scrubber) -> None:
        """Scrubbing recurses into dicts and lists; a secret key's dict value goes whole."""
        event = {
            "extra": {
                "request": {"headers": {"Cookie": "a=1", "Accept": "*/*"}},
                "credentials": {"user": "u", "pass": "p"},
                "list": [{"token": "t"}, "plain"],
            }
        }
        assert scrubber.scrub(event) == {
            "extra": {
                "request": {"headers": {"Cookie": FILTERED, "Accept": "*/*"}},
                "credentials": FILTERED,
                "list": [{"token": FILTERED}, "plain"],
            }
        }

    def test_header_pairs(self, scrubber: Scrubber) -> None:
        """``[name, value]`` pairs, as Sentry writes headers, are scrubbed by name."""
        event = {
            "headers": [
                ["Authorization", "Bearer x"],
                ["Accept", "*/*"],
                ("Cookie", "c"),
            ]
        }
        assert scrubber.scrub(event) == {
            "headers": [
                ["Authorization", FILTERED],
                ["Accept", "*/*"],
                ("Cookie", FILTERED),
            ]
        }

    def test_none_stays_none(self, scrubber: Scrubber) -> None:
        """An empty secret stays empty, so it reads as absent rather than filtered."""
        assert scrubber.scrub({"password": None}) == {"password": None}


class TestValues:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (
                "'https://pub:SECRET@o1.ingest.sentry.io/1'",
                "'https://pub:[Filtered]@o1.ingest.sentry.io/1'",
            ),
            ("postgres://app:pw@db:5432/app", "postgres://app:[Filtered]@db:5432/app"),
            ("https://pub@sentry.io/1", "https://pub@sentry.io/1"),
            ("http://host:8080/path", "http://host:8080/path"),
            (
                "Sentry sentry_key=pub, sentry_secret=SECRET",
                "Sentry sentry_key=pub, sentry_secret=[Filtered]",
            ),
            (
                "/login?user=a&password=x&next=/",
                "/login?user=a&password=[Filtered]&next=/",
            ),
            ("nothing to see", "nothing to see"),
        ],
    )
    def test_strings(self, scrubber: Scrubber, text: str, expected: str) -> None:
        """URL passwords and secret ``name=value`` pairs inside strings are replaced."""
        assert scrubber.scrub({"event": text}) == {"event": expected}

    def test_raven_sys_argv(self, scrubber: Scrubber) -> None:
        """raven's extra["sys.argv"] with a DSN secret is scrubbed, the public key kept."""
        event = {
            "extra": {
                "sys.argv": ["'app.py'", "'--dsn'", "'https://pub:SECRET@host/1'"]
            }
        }
        scrubbed = scrubber.scrub(event)
        assert scrubbed["extra"]["sys.argv"][2] == "'https://pub:[Filtered]@host/1'"

    def test_non_strings_untouched(self, scrubber: Scrubber) -> None:
        """Numbers, booleans and bytes pass through unchanged."""
        event = {"value": 1.5, "ok": True, "n": None, "blob": b"password=x"}
        assert scrubber.scrub(event) == event


class TestScrubber:
    def test_original_unchanged(self, scrubber: Scrubber) -> None:
        """The scrubbed copy is new; the event bound for Sentry keeps its data."""
        event: dict[str, Any] = {"extra": {"token": "t", "list": ["https://a:b@h/1"]}}
        scrubber.scrub(event)
        assert event == {"extra": {"token": "t", "list": ["https://a:b@h/1"]}}

    def test_private_keys_untouched(self, scrubber: Scrubber) -> None:
        """Private keys such as _sentry_raw are left for outputs to drop."""
        raw = {"body": b"...", "content_type": "application/json"}
        assert scrubber.scrub({"_sentry_raw": raw})["_sentry_raw"] is raw

    def test_processor_contract(self, scrubber: Scrubber) -> None:
        """The scrubber runs as a structlog-style processor."""
        assert scrubber(None, "error", {"token": "t"}) == {"token": FILTERED}

    def test_extra_keys(self) -> None:
        """Configured patterns add to the defaults."""
        scrubber = make_scrubber(["ssn", "Card-Number"])
        event = {"ssn": "1", "card_number": "4111", "password": "p", "name": "n"}
        assert scrubber.scrub(event) == {
            "ssn": FILTERED,
            "card_number": FILTERED,
            "password": FILTERED,
            "name": "n",
        }

    def test_without_defaults(self) -> None:
        """Defaults can be switched off, leaving only the configured patterns."""
        scrubber = make_scrubber(["ssn"], defaults=False)
        assert scrubber.scrub({"ssn": "1", "password": "p"}) == {
            "ssn": FILTERED,
            "password": "p",
        }

    def test_custom_replacement(self) -> None:
        """The replacement text is configurable, even with regex-special characters."""
        scrubber = Scrubber(ScrubRules(replacement=r"\1***"))
        assert scrubber.scrub({"token": "t", "u": "http://a:b@h/"}) == {
            "token": r"\1***",
            "u": r"http://a:\1***@h/",
        }

    def test_documented_defaults(self) -> None:
        """The documented default key list is the one the default rules use."""
        assert DEFAULT_SCRUB.keys == DEFAULT_SCRUB_KEYS
        assert {"password", "token", "cookie", "dsn", "authorization"} <= set(
            DEFAULT_SCRUB_KEYS
        )
