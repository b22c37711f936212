"""The built-in structlog processors of the data-plane chain.

They follow structlog's contract ``(logger, method_name, event_dict) ->
event_dict``; ``method_name`` is the event's kind.  No Twisted, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from obsd import events
from obsd.events import new_event_id, normalise_level

EventDict = dict[str, Any]
Processor = Callable[[Any, str, EventDict], Any]


class Normalise:
    """Make every event well-formed: kind, id, timestamps, level, host.

    Runs first.  Inputs give what they know; this fills the rest, so every
    output can rely on ``id kind event level timestamp received_at source host``.
    """

    __slots__ = ("_hostname", "_now")

    def __init__(self, hostname: str, now: Callable[[], float]) -> None:
        self._hostname = hostname
        self._now = now

    def __call__(self, _logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
        now = self._now()
        event_dict[events.KIND] = method_name
        if event_dict.get(events.ID) is None:
            event_dict[events.ID] = new_event_id(now)
        if event_dict.get(events.RECEIVED_AT) is None:
            event_dict[events.RECEIVED_AT] = now
        stamp = event_dict.get(events.TIMESTAMP)
        if stamp.__class__ is not float:
            if isinstance(stamp, int) and not isinstance(stamp, bool):
                event_dict[events.TIMESTAMP] = float(stamp)
            else:
                event_dict[events.TIMESTAMP] = event_dict[events.RECEIVED_AT]
        level = event_dict.get(events.LEVEL)
        if level not in events.LEVEL_RANK:
            event_dict[events.LEVEL] = normalise_level(
                level, events.ERROR_LEVEL if method_name == events.ERROR else events.INFO
            )
        if not event_dict.get(events.HOST):
            event_dict[events.HOST] = self._hostname
        if event_dict.get(events.EVENT) is None:
            event_dict[events.EVENT] = ""
        return event_dict


class GuardedProcessor:
    """Run a user processor; if it raises, count and log it and pass the event on unchanged.

    ``DropEvent`` is not an error: it drops the event, as in structlog.
    """

    __slots__ = ("_count", "_name", "_processor", "_report")

    def __init__(
        self,
        processor: Processor,
        name: str,
        count: Callable[[], None],
        report: Callable[[str, BaseException, EventDict], None],
    ) -> None:
        self._processor = processor
        self._name = name
        self._count = count
        self._report = report

    def __call__(self, logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
        backup = dict(event_dict)
        try:
            result = self._processor(logger, method_name, event_dict)
        except structlog.DropEvent:
            raise
        except Exception as exc:  # noqa: BLE001 - user code may raise anything
            self._count()
            self._report(self._name, exc, backup)
            return backup
        if not isinstance(result, dict):
            self._count()
            problem = TypeError(f"returned {type(result).__name__}, not a dict")
            self._report(self._name, problem, backup)
            return backup
        return result


def finalise(_logger: Any, _method_name: str, event_dict: EventDict) -> Any:
    """The last processor: hand the dict itself to the router (no ``**`` copy)."""
    return (event_dict,), {}
