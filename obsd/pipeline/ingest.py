"""What inputs hand events to: a structlog BoundLogger whose wrapped logger is the router.

Inputs call ``ingest.log(fields)``, ``.error``, ``.metric`` or ``.sentry``; the
method is the event's kind.  The processor chain normalises and enriches the
dict, user processors may change or drop it, and the last processor hands it to
the router.  Bound context (``source``) wins over what an input passes, so a
sender can never claim another input's name.
"""

from __future__ import annotations

from typing import Any

from structlog import BoundLoggerBase, DropEvent

from obsd import events


class IngestLogger(BoundLoggerBase):
    """A BoundLogger with one explicit method per event kind."""

    def _emit(self, kind: str, fields: dict[str, Any]) -> None:
        event_dict: Any = dict(fields)
        event_dict.update(self._context)
        logger = self._logger
        try:
            for processor in self._processors:
                event_dict = processor(logger, kind, event_dict)
        except DropEvent:
            return
        args, _ = event_dict
        getattr(logger, kind)(*args)

    def emit_many(self, kind: str, batch: list[dict[str, Any]]) -> None:
        """Many events of one kind (one TCP read's lines): the chain runs on each, then
        the router takes the list in one call (``Router.route_many``)."""
        context = self._context
        processors = self._processors
        logger = self._logger
        done = []
        for fields in batch:
            event_dict: Any = dict(fields)
            event_dict.update(context)
            try:
                for processor in processors:
                    event_dict = processor(logger, kind, event_dict)
            except DropEvent:
                continue
            done.append(event_dict[0][0])
        if not done:
            return
        route_many = getattr(logger, "route_many", None)
        if route_many is not None:
            route_many(kind, done)
            return
        one = getattr(logger, kind)  # a logger without a list call (a test's router)
        for event in done:
            one(event)

    def log_many(self, batch: list[dict[str, Any]]) -> None:
        """Many log events in one pass (see ``emit_many``)."""
        self.emit_many(events.LOG, batch)

    def log(self, fields: dict[str, Any]) -> None:
        """A log event (a syslog line, a structlog JSON line)."""
        self._emit(events.LOG, fields)

    def error(self, fields: dict[str, Any]) -> None:
        """An error: a Sentry error or message report."""
        self._emit(events.ERROR, fields)

    def metric(self, fields: dict[str, Any]) -> None:
        """A flushed metric point: ``event`` is its final name, ``value`` its value."""
        self._emit(events.METRIC, fields)

    def statsd_partial(self, fields: dict[str, Any]) -> None:
        """A StatsD agent's partial aggregate of one series for one interval, for central."""
        self._emit(events.STATSD_PARTIAL, fields)

    def sentry(self, fields: dict[str, Any]) -> None:
        """Another Sentry item (transaction, session, attachment...), kept for forwarding."""
        self._emit(events.SENTRY, fields)

    def span(self, fields: dict[str, Any]) -> None:
        """A trace span (OpenTelemetry): name, ids, timing, status."""
        self._emit(events.SPAN, fields)
