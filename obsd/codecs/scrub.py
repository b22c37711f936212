"""Remove secrets from events before they leave for non-Sentry outputs.

Sentry payloads carry secrets: raven copies ``sys.argv`` into
``extra["sys.argv"]``, so a program given its DSN on the command line ships
``https://pub:SECRET@host/1``; request interfaces carry ``Authorization`` and
``Cookie`` headers.  The Sentry output forwards the raw body it was sent (the
upstream scrubs it as Sentry always does), but Elasticsearch, Graphite and
files are read by more people, so obsd scrubs what goes there.

Default rules (``DEFAULT_SCRUB``), as Sentry's own data scrubber does:

* **Keys.** Any mapping key whose lower-cased name, with ``-`` read as ``_``,
  *contains* one of ``DEFAULT_SCRUB_KEYS`` (password, passwd, secret, token,
  api_key, apikey, auth, authorization, cookie, session, credentials, dsn) has
  its value replaced by ``"[Filtered]"``, whatever the value is (a nested dict
  or list goes whole).  Two-element ``[name, value]`` pairs in lists (how
  Sentry writes headers and tags) count as keys too.  Substring matching
  over-matches (``author``), which is the safe side for secrets.
* **Values.** In every string, a URL's password (``scheme://user:PASSWORD@host``,
  a DSN with its secret or a database URL) becomes ``[Filtered]`` while the
  rest of the URL stays readable, and ``name=value`` pairs whose name is a
  secret key (``sentry_secret=...``, ``password=...``) lose their value.
* Private keys (``_`` prefix, such as ``_sentry_raw``) are left untouched:
  they are not for non-Sentry outputs at all and are dropped there.

Configure extra key patterns with ``ScrubRules(extra_keys=(...))``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

FILTERED: Final = "[Filtered]"

DEFAULT_SCRUB_KEYS: Final = (
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "auth",
    "authorization",
    "cookie",
    "session",
    "credentials",
    "dsn",
)

#: ``scheme://user:PASSWORD@`` in any string (DSNs, database URLs).
_URL_PASSWORD: Final = re.compile(
    r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)(?P<secret>[^\s/@]+)(?P<at>@)"
)


@dataclass(frozen=True, slots=True)
class ScrubRules:
    """What to scrub: key substrings (defaults plus ``extra_keys``) and value patterns."""

    keys: tuple[str, ...] = DEFAULT_SCRUB_KEYS
    extra_keys: tuple[str, ...] = ()
    url_passwords: bool = True
    replacement: str = FILTERED

    def all_keys(self) -> tuple[str, ...]:
        """Every key substring, lower-cased with ``-`` as ``_``."""
        return tuple(_normal(key) for key in (*self.keys, *self.extra_keys) if key)


DEFAULT_SCRUB: Final = ScrubRules()
#: How many key names a ``Scrubber`` remembers the verdict for.
_MAX_KNOWN: Final = 4096


def _normal(name: str) -> str:
    return name.lower().replace("-", "_")


class Scrubber:
    """Return scrubbed copies of events; the original (bound for Sentry) is never changed.

    Usable as a structlog-style processor: ``scrubber(logger, method, event)``.
    """

    __slots__ = ("_keys", "_known", "_pair", "_replacement", "_url")

    def __init__(self, rules: ScrubRules = DEFAULT_SCRUB) -> None:
        self._keys = rules.all_keys()
        self._replacement = rules.replacement
        self._url = rules.url_passwords
        #: key name -> secret?  Events repeat the same few hundred key names, so
        #: the substring test runs once per name (bounded: cleared when it grows).
        self._known: dict[str, bool] = {}
        names = "|".join(
            re.escape(key) for key in sorted(set(self._keys), key=len, reverse=True)
        )
        # name=value inside strings (query strings, auth headers): sentry_secret=..., password=...
        self._pair = (
            re.compile(
                rf"(?P<name>[\w.-]*(?:{names})[\w.-]*=)(?P<value>[^\s,&;]+)",
                re.IGNORECASE,
            )
            if names
            else None
        )

    def __call__(
        self, _logger: Any, _method: str, event: Mapping[str, Any]
    ) -> dict[str, Any]:
        return self.scrub(event)

    def scrub(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``event`` with secret keys and secret-looking values replaced."""
        return self._entries(event, top=True)

    def secret_key(self, name: str) -> bool:
        """Whether a key called ``name`` holds a secret under these rules."""
        known = self._known.get(name)
        if known is None:
            normal = _normal(name)
            known = any(key in normal for key in self._keys)
            if len(self._known) >= _MAX_KNOWN:
                self._known.clear()
            self._known[name] = known
        return known

    def _entries(self, mapping: Mapping[Any, Any], top: bool = False) -> dict[Any, Any]:
        """One mapping's entries, scrubbed: the hot loop, with the common cases inline
        (a known key name, a plain string, a number) and the rest through ``_value``.

        ``top``: the event itself, whose private ``_`` keys are left as they are.
        """
        known = self._known
        replacement = self._replacement
        out: dict[Any, Any] = {}
        for key, value in mapping.items():
            if key.__class__ is str:
                if top and key[:1] == "_":
                    out[key] = value
                    continue
                secret = known.get(key)
                if secret is None:
                    secret = self.secret_key(key)
                if secret and value is not None:
                    out[key] = replacement
                    continue
            elif isinstance(key, str):  # a str subclass
                if top and key.startswith("_"):
                    out[key] = value
                    continue
                if self.secret_key(key) and value is not None:
                    out[key] = replacement
                    continue
            cls = value.__class__
            if cls is str:
                out[key] = self._text(value) if ("=" in value or "://" in value) else value
            elif cls is int or cls is float or cls is bool or value is None:
                out[key] = value
            else:
                out[key] = self._value(value)
        return out

    def _value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._text(value)
        if isinstance(value, Mapping):
            return self._entries(value)
        if isinstance(value, list | tuple):
            items = [self._pair_or_value(item) for item in value]
            return items if isinstance(value, list) else tuple(items)
        return value

    def _pair_or_value(self, item: Any) -> Any:
        if (
            isinstance(item, list | tuple)
            and len(item) == 2
            and isinstance(item[0], str)
            and self.secret_key(item[0])
        ):
            pair = [item[0], self._replacement]
            return pair if isinstance(item, list) else tuple(pair)
        return self._value(item)

    def _text(self, text: str) -> str:
        if self._url and "://" in text:
            text = _URL_PASSWORD.sub(rf"\g<head>{self._escaped}\g<at>", text)
        if self._pair is not None and "=" in text:
            text = self._pair.sub(rf"\g<name>{self._escaped}", text)
        return text

    @property
    def _escaped(self) -> str:
        return self._replacement.replace("\\", "\\\\")


def make_scrubber(extra_keys: Iterable[str] = (), *, defaults: bool = True) -> Scrubber:
    """A ``Scrubber`` for config ``scrub = { keys = [...], defaults = true }``."""
    rules = ScrubRules(
        keys=DEFAULT_SCRUB_KEYS if defaults else (),
        extra_keys=tuple(extra_keys),
    )
    return Scrubber(rules)
