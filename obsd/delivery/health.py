"""A delivery queue's health: ok, degraded (retrying), or failing (for ``failing_after``).

Kept apart from the queue's sending so the state rules read in one place:
each failure moves a queue to degraded, and to failing once failures have
lasted ``failing_after`` seconds; one success brings it back to ok.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime

from obsd.delivery.contract import DEGRADED, FAILING, OK


class QueueHealth:
    """State, since when, and the failures behind it."""

    def __init__(self, clock: IReactorTime, failing_after: float) -> None:
        self._clock = clock
        self._failing_after = failing_after
        self.state = OK
        self.state_since = clock.seconds()
        self.failures_in_row = 0
        self.failing_since: float | None = None
        self.last_error = ""
        self.last_error_at: float | None = None

    def failed(self, reason: str) -> int:
        """One more failure; the count in a row (the backoff's attempt number)."""
        now = self._clock.seconds()
        self.failures_in_row += 1
        self.last_error = reason
        self.last_error_at = now
        if self.failing_since is None:
            self.failing_since = now
        self._set(FAILING if now - self.failing_since >= self._failing_after else DEGRADED)
        return self.failures_in_row

    def succeeded(self) -> int:
        """Back to ok; how many failures in a row that ended (0: none)."""
        ended, self.failures_in_row = self.failures_in_row, 0
        self.failing_since = None
        self._set(OK)
        return ended

    def report(self) -> dict[str, Any]:
        """The state as ``/status`` shows it (failing once ``failing_after`` has passed)."""
        since = self.failing_since
        if since is not None and self._clock.seconds() - since >= self._failing_after:
            self._set(FAILING)
        return {
            "state": self.state,
            "since": self.state_since,
            "failures_in_row": self.failures_in_row,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
        }

    def _set(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.state_since = self._clock.seconds()
