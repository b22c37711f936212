"""Identical error logs within a window: the first is sent, the rest only counted.

A crash loop logs the same traceback many times a second; Sentry needs it
once, with how many were held back (the next one sent carries the count).
Errors are the same when app, host, level, message and the exception's types,
values and frame positions agree.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime

from obsd import events
from obsd.codecs import tracebacks

#: how many distinct errors are remembered; past it the oldest are forgotten
MAX_REMEMBERED = 10_000


def repeat_key(event: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two error logs the same for deduplication."""
    exc = event.get("exception", event.get("exc_info"))
    exc_key: Any = None
    if exc is not None:
        values = tracebacks.exception_values(event)
        if values:
            exc_key = tuple(
                (
                    v.get("type"),
                    v.get("value"),
                    tuple(
                        (f.get("filename"), f.get("lineno"))
                        for f in v.get("stacktrace", {}).get("frames", ())
                    ),
                )
                for v in values
            )
        else:
            exc_key = str(exc)[:2000]
    return (
        event.get("appname"),
        event.get(events.HOST),
        event.get(events.LEVEL),
        str(event.get(events.EVENT)),
        exc_key,
    )


class Repeats:
    """The errors sent within the window, and how many repeats each has held back."""

    def __init__(self, window: float, clock: IReactorTime) -> None:
        self.window = window
        self._clock = clock
        self._seen: dict[tuple[Any, ...], list[float]] = {}

    def check(self, event: dict[str, Any]) -> int | None:
        """None when ``event`` repeats one sent within the window; else how many were held."""
        if self.window <= 0:
            return 0
        now = self._clock.seconds()
        key = repeat_key(event)
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self.window:
            entry[1] += 1
            return None
        repeats = int(entry[1]) if entry is not None else 0
        self._seen.pop(key, None)
        self._seen[key] = [now, 0]
        if len(self._seen) > MAX_REMEMBERED:
            self._prune(now)
        return repeats

    def _prune(self, now: float) -> None:
        for key in [k for k, (start, _) in self._seen.items() if now - start >= self.window]:
            del self._seen[key]
        while len(self._seen) > MAX_REMEMBERED:
            del self._seen[next(iter(self._seen))]
