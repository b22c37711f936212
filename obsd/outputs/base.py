"""The output seam: every output is an ``Output`` with one ``DeliveryQueue`` per destination.

An output only says how to encode an event (``encode``) and how to send a batch
of encoded records to a destination (``send``); ``obsd.delivery.queue`` does
the buffering, batching, retries, health and draining the same way for all.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any, ClassVar

from twisted.internet import defer

from obsd.config.model import OutputConfig
from obsd.delivery.contract import (
    DEGRADED,
    FAILING,
    OK,
    Destination,
    OutputContext,
    PermanentError,
    SendResult,
    backoff_delay,
)
from obsd.delivery.queue import DeliveryQueue
from obsd.twistedtypes import Service

__all__ = [
    "Destination",
    "Output",
    "OutputContext",
    "PermanentError",
    "SendResult",
    "backoff_delay",
    "decode_json_record",
    "public_fields",
]


def public_fields(event: dict[str, Any]) -> dict[str, Any]:
    """The event without private ``_`` keys (what outputs that do not ask see)."""
    return {k: v for k, v in event.items() if not k.startswith("_")}


def decode_json_record(record: bytes) -> Any:
    """Best-effort decoding of a record for the dead-letter file."""
    try:
        return json.loads(record)
    except ValueError:
        return record.decode("utf-8", "replace")


class Output(Service):
    """Base of every output: routes events to its queues, reports health, drains on stop.

    Subclasses set ``type_name`` and implement ``encode``, and either implement
    ``send`` (one destination) or override ``make_destinations`` and
    ``destination_for`` (several, one queue each).
    """

    name: str
    type_name: ClassVar[str] = ""
    #: whether ``encode`` wants private ``_`` keys (Sentry and relay outputs)
    wants_private: ClassVar[bool] = False
    #: seconds ``stopService`` lets the queues drain; None: the daemon's shutdown_timeout
    #: (a reload sets 0 to hand a disk buffer's spool straight to the output's successor)
    drain_timeout: float | None = None

    def __init__(self, name: str, config: OutputConfig, context: OutputContext) -> None:
        self.name = name
        self.config = config
        self.context = context
        self.queues: dict[str, DeliveryQueue] = {
            dest.key: DeliveryQueue(name, dest, config, context, self.decode)
            for dest in self.make_destinations()
        }
        self._single = next(iter(self.queues.values())) if len(self.queues) == 1 else None
        self._encode_errors = context.telemetry.counter(f"obsd.output.{name}.encode_errors")
        self._received = context.telemetry.counter(f"obsd.output.{name}.received")
        for key, queue in self.queues.items():
            suffix = f".{key}" if key else ""
            context.telemetry.gauge(
                f"obsd.output.{name}{suffix}.queued", functools.partial(len, queue)
            )

    # -- what subclasses provide ---------------------------------------------------

    key = ""

    def make_destinations(self) -> Sequence[Destination]:
        """The destinations; by default the output itself is its one destination."""
        return [self]

    def destination_for(self, event: dict[str, Any]) -> str:
        """Which destination's queue an event goes to (several-destination outputs)."""
        return ""

    def encode(self, event: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def decode(self, record: bytes) -> Any:
        """A record as the dead-letter file shows it."""
        return decode_json_record(record)

    def send(self, batch: list[bytes]) -> defer.Deferred[SendResult | None]:
        raise NotImplementedError

    # -- the router's side ----------------------------------------------------------

    def route(self, event: dict[str, Any]) -> tuple[str, bytes] | None:
        """(destination key, record) for an event, or None to skip it (counted by the output).

        Encoding errors raise; ``accept`` dead-letters the event.  Outputs that
        learn the destination while encoding (Graphite's ring) override this.
        """
        record = self.encode(event)
        return ("" if self._single is not None else self.destination_for(event)), record

    def accept(self, event: dict[str, Any]) -> None:
        """Take one routed event: encode it and queue it; dead-letter what cannot be encoded."""
        self._received.inc()
        try:
            routed = self.route(event)
        except Exception as exc:  # noqa: BLE001 - one bad event must not stop the others
            self._encode_failed(event, exc)
            return
        if routed is None:
            return
        key, record = routed
        if self._single is not None:
            self._single.put(record)
        else:
            self.queues[key].put(record)

    def accept_many(self, batch: list[dict[str, Any]]) -> None:
        """Take many routed events: encode each, queue them together (``put_many``).

        An output that takes events its own way (its own ``accept``) gets them one by one.
        """
        if type(self).accept is not Output.accept:
            for event in batch:
                self.accept(event)
            return
        self._received.inc(len(batch))
        route = self.route
        single = self._single
        records: list[bytes] = []
        by_key: dict[str, list[bytes]] = {}
        for event in batch:
            try:
                routed = route(event)
            except Exception as exc:  # noqa: BLE001 - one bad event must not stop the others
                self._encode_failed(event, exc)
                continue
            if routed is None:
                continue
            if single is not None:
                records.append(routed[1])
            else:
                by_key.setdefault(routed[0], []).append(routed[1])
        if single is not None:
            if records:
                single.put_many(records)
            return
        for key, found in by_key.items():
            self.queues[key].put_many(found)

    def _encode_failed(self, event: dict[str, Any], exc: BaseException) -> None:
        """Count, dead-letter and log (throttled) an event the output cannot encode."""
        self._encode_errors.inc()
        self.context.dead_letter.write(self.name, f"cannot encode: {exc!r}", repr(event))
        self.context.throttle.error(
            f"{self.name}:encode",
            "output cannot encode event",
            output=self.name,
            error=repr(exc),
        )

    def health(self) -> dict[str, Any]:
        """The worst state of the queues, and each queue's report."""
        reports = {key or "default": q.health() for key, q in self.queues.items()}
        order = {OK: 0, DEGRADED: 1, FAILING: 2}
        worst = max(reports.values(), key=lambda r: order[r["state"]])
        return {
            "type": self.type_name,
            "state": worst["state"],
            "since": worst["since"],
            "destinations": reports,
        }

    def startService(self) -> None:
        """Open the queues (disk buffers replay what a previous run left)."""
        super().startService()
        for queue in self.queues.values():
            queue.open()

    def stopService(self) -> defer.Deferred[Any]:
        """Drain every queue within the daemon's shutdown deadline, then persist spools."""
        super().stopService()
        timeout = self.drain_timeout
        if timeout is None:
            timeout = self.context.shutdown_timeout
        drains = [q.drain(timeout) for q in self.queues.values()]
        d = defer.gatherResults(drains, consumeErrors=True)
        d.addCallback(lambda _: self.before_close())
        d.addCallback(lambda _: defer.gatherResults([q.close() for q in self.queues.values()]))
        d.addCallback(lambda _: self.after_drain())
        return d

    def before_close(self) -> None:
        """After the drain, before spools close: the last moment to queue records to disk."""

    def wait_durable(self) -> defer.Deferred[Any]:
        """Fires when every event this output has accepted is on disk (disk buffers)."""
        return defer.gatherResults([q.wait_durable() for q in self.queues.values()])

    def after_drain(self) -> None:
        """Release resources (connections, files) once drained."""
