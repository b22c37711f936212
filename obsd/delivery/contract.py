"""What an output and its delivery queue agree on: the context, a send's outcome, backoff.

Outputs import these to write ``send``; the queue (``delivery/queue.py``)
acts on what ``send`` answers.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Protocol

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from obsd.delivery.deadletter import DeadLetterFile
from obsd.delivery.flowcontrol import FlowControl
from obsd.ops.telemetry import Telemetry
from obsd.ops.throttle import ThrottledLogger

OK = "ok"
DEGRADED = "degraded"
FAILING = "failing"


class PermanentError(Exception):
    """A destination refused a whole batch for good: dead-letter it, do not retry."""


@attrs.define
class SendResult:
    """What became of a batch that was answered: indices to retry and to reject.

    Indices not named were delivered.  A sender returns ``None`` when all were.
    """

    retry: list[int] = attrs.field(factory=list)
    rejected: list[tuple[int, str]] = attrs.field(factory=list)
    #: why records are retried, for logs and health
    retry_reason: str = ""
    #: a destination's own "come back after" (Retry-After), overriding backoff
    retry_after: float | None = None
    #: records the destination asks to hold back until a time (a rate limit), with what
    #: to send then (None: the record itself); they stay queued, so a spool keeps them
    held: list[tuple[int, float, bytes | None]] = attrs.field(factory=list)


class Destination(Protocol):
    """Where one queue delivers."""

    key: str

    def send(self, batch: list[bytes]) -> defer.Deferred[SendResult | None]: ...


@attrs.define
class OutputContext:
    """What topology hands every output."""

    clock: IReactorTime
    telemetry: Telemetry
    dead_letter: DeadLetterFile
    flow_control: FlowControl
    throttle: ThrottledLogger
    reactor: Any = None
    data_dir: Any = None
    hostname: str = ""
    random: Callable[[], float] = random.random
    shutdown_timeout: float = 10.0
    #: disk buffers: seconds between writes, fsync or not, and how blocking I/O runs
    sync_interval: float = 1.0
    fsync: bool = False
    run_io: Any = None
    #: the ``[http]`` site's root, for outputs that are scraped (Prometheus)
    http: Any = None
    #: ``[daemon] workers``: this process's index, and ``data_dir`` as configured (the
    #: same for every worker; ``data_dir`` above is this worker's own)
    worker: int = 0
    shared_dir: Any = None


def backoff_delay(
    attempt: int, initial: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, capped.

    ``attempt`` counts failures in a row, from 1.  The fixed half keeps retries
    from hammering a destination; the random half spreads many obsd instances.
    """
    delay = min(cap, initial * 2 ** (attempt - 1))
    return float(delay / 2 + rand() * delay / 2)
