"""Events another obsd already made (over the HTTP relay or Kafka), handed on as they are.

They keep their ``id``, ``timestamp``, ``host`` and ``source``; a metric that
is an agent's own number (``obsd.*``) is named by its host so agents do not
overwrite each other; StatsD partials go on to the merging StatsD input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from obsd import events
from obsd.ops.selfmetrics import name_by_host
from obsd.pipeline.ingest import IngestLogger


def relayed_emitter(ingest: IngestLogger, source: str) -> Callable[[dict[str, Any]], None]:
    """A function that hands one relayed event to ``ingest`` by its kind."""
    emit: dict[Any, Callable[[dict[str, Any]], None]] = {
        events.LOG: ingest.log,
        events.ERROR: ingest.error,
        events.METRIC: ingest.metric,
        events.SENTRY: ingest.sentry,
        events.STATSD_PARTIAL: ingest.statsd_partial,
        events.SPAN: ingest.span,
    }

    def hand_on(event: dict[str, Any]) -> None:
        if not isinstance(event.get(events.SOURCE), str) or not event[events.SOURCE]:
            event[events.SOURCE] = source
        kind = event.get(events.KIND)
        if kind == events.METRIC:
            name_by_host(event)
        method: Callable[[dict[str, Any]], None] = emit.get(kind, ingest.log)
        method(event)

    return hand_on


def relayed_batch_emitter(
    ingest: IngestLogger, source: str
) -> Callable[[list[dict[str, Any]]], None]:
    """A function that hands a relayed batch to ``ingest``: each run of events of one
    kind in one call (``IngestLogger.emit_many``), in the batch's order."""

    def hand_on_many(batch: list[dict[str, Any]]) -> None:
        run: list[dict[str, Any]] = []
        run_kind: Any = None
        for event in batch:
            if not isinstance(event.get(events.SOURCE), str) or not event[events.SOURCE]:
                event[events.SOURCE] = source
            kind = event.get(events.KIND)
            if kind == events.METRIC:
                name_by_host(event)
            if kind not in events.KINDS:
                kind = events.LOG
            if kind != run_kind and run:
                ingest.emit_many(run_kind, run)
                run = []
            run_kind = kind
            run.append(event)
        if run:
            ingest.emit_many(run_kind, run)

    return hand_on_many
