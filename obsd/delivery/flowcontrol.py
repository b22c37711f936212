"""Backpressure from output queues to inputs.

A queue past its high watermark marks itself congested; while any queue is,
stream inputs' transports are paused (Twisted producers: the kernel's buffers
then push back on the senders) and HTTP inputs answer 503 with ``Retry-After``.
When every queue is back under its low watermark, reading resumes.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IPushProducer


class FlowControl:
    """Collects congestion reports and pauses or resumes registered producers."""

    def __init__(self, retry_after: int = 5) -> None:
        self._congested: set[str] = set()
        self._producers: set[IPushProducer] = set()
        #: the seconds an HTTP input puts in ``Retry-After`` while congested
        self.retry_after = retry_after
        self.pauses = 0

    @property
    def congested(self) -> bool:
        return bool(self._congested)

    def congested_queues(self) -> list[str]:
        return sorted(self._congested)

    def report(self, queue: str, congested: bool) -> None:
        """A queue says whether it is past its high watermark."""
        was = bool(self._congested)
        if congested:
            self._congested.add(queue)
        else:
            self._congested.discard(queue)
        now = bool(self._congested)
        if now and not was:
            self.pauses += 1
            for producer in list(self._producers):
                producer.pauseProducing()
        elif was and not now:
            for producer in list(self._producers):
                producer.resumeProducing()

    def register(self, producer: Any) -> None:
        """A stream input's transport joins; paused at once while congested."""
        self._producers.add(producer)
        if self._congested:
            producer.pauseProducing()

    def unregister(self, producer: Any) -> None:
        self._producers.discard(producer)
