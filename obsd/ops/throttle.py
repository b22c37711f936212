"""One throttled-logging helper for every part that logs bad input or failures.

The first occurrence of a kind of problem is logged at once; further ones in the
same interval are only counted, and when the interval ends one line says
"N more like this" with one example.  A flood of bad lines costs a few log
lines per interval, never one per line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime


class _Window:
    __slots__ = ("call", "event", "example", "level", "suppressed")

    def __init__(self, event: str, level: str) -> None:
        self.event = event
        self.level = level
        self.suppressed = 0
        self.example: dict[str, Any] = {}
        self.call: IDelayedCall | None = None


class ThrottledLogger:
    """Rate-limit log lines by key, with an injected clock."""

    def __init__(self, log: Any, clock: IReactorTime, interval: float = 10.0) -> None:
        self._log = log
        self._clock = clock
        self._interval = interval
        self._windows: dict[str, _Window] = {}
        #: called with (level, key, event, fields) for every report, throttled or not
        self.on_report: Callable[[str, str, str, dict[str, Any]], None] | None = None

    def warning(self, key: str, event: str, **fields: Any) -> None:
        """Log a warning for ``key`` unless one was logged this interval."""
        self._report("warning", key, event, fields)

    def error(self, key: str, event: str, **fields: Any) -> None:
        """Log an error for ``key`` unless one was logged this interval."""
        self._report("error", key, event, fields)

    def _report(self, level: str, key: str, event: str, fields: dict[str, Any]) -> None:
        if self.on_report is not None:
            self.on_report(level, key, event, fields)
        window = self._windows.get(key)
        if window is not None:
            window.suppressed += 1
            window.example = fields
            return
        getattr(self._log, level)(event, **fields)
        window = self._windows[key] = _Window(event, level)
        window.call = self._clock.callLater(self._interval, self._close, key)

    def _close(self, key: str) -> None:
        window = self._windows.pop(key)
        window.call = None
        if window.suppressed:
            self._summarise(window)
            # keep throttling: the storm may still be going on
            window.suppressed = 0
            self._windows[key] = window
            window.call = self._clock.callLater(self._interval, self._close, key)

    def _summarise(self, window: _Window) -> None:
        getattr(self._log, window.level)(
            window.event,
            more_like_this=window.suppressed,
            summary=f"{window.suppressed} more like this in the last {self._interval:g} s",
            **{f"e.g. {k}" if k in ("event",) else k: v for k, v in window.example.items()},
        )

    def stop(self) -> None:
        """Cancel pending windows and log what they held back."""
        for window in self._windows.values():
            if window.call is not None and window.call.active():
                window.call.cancel()
            if window.suppressed:
                self._summarise(window)
        self._windows.clear()
