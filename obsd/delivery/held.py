"""Records a destination asked to hold back (a rate limit), until their time comes.

A queue parks them here when a ``SendResult`` names them ``held``; they were
taken from the buffer but never acked, so a disk buffer's spool still has
them if obsd dies.  When the earliest one is due they go back to the front of
the buffer.  Past ``max_held`` the longest held is dead-lettered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from obsd.delivery.contract import SendResult
from obsd.ops.telemetry import Counter


class HeldRecords:
    """The held state of one delivery queue."""

    def __init__(
        self,
        clock: IReactorTime,
        max_held: int,
        dropped: Counter,
        *,
        buffer: Callable[[], Any],
        reject: Callable[[bytes, str], None],
        kick: Callable[[], None],
    ) -> None:
        """``buffer()`` is the queue's current buffer (it may change while replaying)."""
        self._clock = clock
        self.max_held = max_held
        self._dropped = dropped
        self._buffer = buffer
        self._reject = reject
        self._kick = kick
        #: (until, record, buffer token) in hold order
        self.items: list[tuple[float, bytes, Any]] = []
        self._call: IDelayedCall | None = None
        #: no timer while the queue drains: everything goes out at once then
        self.draining = False

    def __len__(self) -> int:
        return len(self.items)

    def park(
        self, batch: list[bytes], token: Any, result: SendResult
    ) -> tuple[list[bytes], Any]:
        """Hold the records ``result`` names; the rest of the batch (and token) with
        ``result``'s indices renumbered."""
        held = {index: (until, replacement) for index, until, replacement in result.held}
        rest = [i for i in range(len(batch)) if i not in held]
        for index, (until, replacement) in held.items():
            element = token[index] if token is not None else None
            self.items.append((until, replacement or batch[index], element))
        while len(self.items) > self.max_held:
            _until, record, element = self.items.pop(0)  # the longest held
            self._dropped.inc()
            self._reject(record, "rate-limit hold list full")
            if element is not None:
                self._buffer().ack([element])
        renumber = {old: new for new, old in enumerate(rest)}
        result.retry = [renumber[i] for i in result.retry if i in renumber]
        result.rejected = [(renumber[i], r) for i, r in result.rejected if i in renumber]
        result.held = []
        self.schedule()
        new_token = [token[i] for i in rest] if token is not None else None
        return [batch[i] for i in rest], new_token

    def schedule(self) -> None:
        """Set the timer for the earliest record's time."""
        self.cancel()
        if self.items and not self.draining:
            delay = max(0.0, min(item[0] for item in self.items) - self._clock.seconds())
            self._call = self._clock.callLater(delay, self.release)

    def cancel(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def release(self) -> None:
        """Records whose time has come go back to the front of the buffer."""
        self.cancel()  # when called directly (at drain), not by the timer
        now = self._clock.seconds()
        due = [item for item in self.items if item[0] <= now]
        self.items = [item for item in self.items if item[0] > now]
        if due:
            tokens: Any = [element for _u, _r, element in due]
            self._buffer().give_back(
                [record for _u, record, _e in due], tokens if tokens[0] is not None else None
            )
            self._kick()
        self.schedule()

    def take_all(self) -> list[bytes]:
        """At the end of a drain: every held record, and none held any more."""
        records = [record for _until, record, _element in self.items]
        self.items = []
        self.cancel()
        return records
