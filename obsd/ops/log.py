"""obsd's OWN log lines (never the data plane): structlog in, twistd's observer out.

``configure_logging`` sets structlog up once, at ``makeService``; each call on a
``get_logger()`` logger becomes one Twisted log event carrying the structlog
dict, and ``ObsdLogObserver`` (installed as twistd's log observer) writes it as
one JSON line, or console-rendered on a TTY.  Twisted's own events (twistd
start-up, listener messages, unhandled errors) go through the same observer, so
every line in the log has one shape, also when daemonised.  Twisted's
per-connection chatter ("Starting factory <_HTTP11ClientFactory ...>",
"Stopping protocol ...": one pair per outgoing HTTP connection or UDP port) is
demoted to debug, and the observer drops Twisted's events below the configured
level, so an info log says what obsd does, not what its libraries do.
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from typing import IO, Any

import structlog
from structlog.typing import EventDict
from twisted.logger import (
    ILogObserver,
    LogLevel,
    formatEvent,
    globalLogPublisher,
)
from zope.interface import implementer

_LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warning": LogLevel.warn,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
    "exception": LogLevel.error,
    "critical": LogLevel.critical,
}
_PY_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
#: Twisted's lifecycle lines for every factory and protocol: debug, not info
_CHATTER = ("Starting factory ", "Stopping factory ", "Starting protocol ", "Stopping protocol ")
_TWISTED_LEVEL_NAMES = {
    LogLevel.debug: "debug",
    LogLevel.info: "info",
    LogLevel.warn: "warning",
    LogLevel.error: "error",
    LogLevel.critical: "critical",
}


class TwistedEmitter:
    """structlog's wrapped logger for own logs: hands each event to Twisted's publisher."""

    def _emit(self, obsd_event: dict[str, Any]) -> None:
        level = _LEVELS.get(obsd_event.get("level", "info"), LogLevel.info)
        globalLogPublisher(
            {
                "log_namespace": obsd_event.get("logger", "obsd"),
                "log_level": level,
                "log_format": "{obsd_event[event]}",
                "log_time": time.time(),
                "log_system": "obsd",
                "obsd_event": obsd_event,
            }
        )

    def msg(self, obsd_event: dict[str, Any]) -> None:
        self._emit(obsd_event)

    debug = info = warning = warn = error = critical = exception = msg


def _to_twisted(_logger: Any, _method: str, event_dict: EventDict) -> tuple[Any, ...]:
    return (event_dict,), {}


def configure_logging(level: str = "info") -> None:
    """Configure structlog for obsd's own log lines (process-wide, once)."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _to_twisted,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_PY_LEVELS[level]),
        logger_factory=lambda *args: TwistedEmitter(),
        cache_logger_on_first_use=False,
    )



def get_logger(name: str) -> Any:
    """A logger for obsd's own lines, named after the component."""
    return structlog.get_logger().bind(logger=name)


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return repr(value)


def render_json(event: dict[str, Any]) -> str:
    """One JSON line for an own-log event."""
    return json.dumps(event, default=_json_default, sort_keys=False)


@implementer(ILogObserver)
class ObsdLogObserver:
    """Write every log event as one JSON line (or console-rendered) to ``stream``."""

    def __init__(self, stream: IO[str], fmt: str = "auto", level: str = "info") -> None:
        self._stream = stream
        self._min_level = _PY_LEVELS.get(level, 20)
        if fmt == "auto":
            isatty = getattr(stream, "isatty", None)
            fmt = "console" if isatty is not None and isatty() else "json"
        self._console = (
            structlog.dev.ConsoleRenderer(colors=True) if fmt == "console" else None
        )

    def __call__(self, event: dict[str, Any]) -> None:
        raw = event.get("obsd_raw_line")
        if raw is not None:  # a worker's line, already rendered (``[daemon] workers``)
            self._stream.write(raw + "\n")
            self._stream.flush()
            return
        obsd_event = event.get("obsd_event")
        if obsd_event is None:
            obsd_event = self._from_twisted(event)
            if _PY_LEVELS.get(obsd_event["level"], 20) < self._min_level:
                return
        else:  # event, level, timestamp first: what a reader scans for
            obsd_event = {
                "event": obsd_event.get("event"),
                "level": obsd_event.get("level"),
                "timestamp": obsd_event.get("timestamp"),
                **obsd_event,
            }
        if self._console is not None:
            line = self._console(None, obsd_event.get("level", "info"), obsd_event)
        else:
            line = render_json(obsd_event)
        self._stream.write(line + "\n")
        self._stream.flush()

    @staticmethod
    def _from_twisted(event: dict[str, Any]) -> dict[str, Any]:
        level = event.get("log_level", LogLevel.info)
        stamp = datetime.datetime.fromtimestamp(event.get("log_time", time.time()), datetime.UTC)
        text = formatEvent(event) or ""
        out: dict[str, Any] = {
            "event": text,
            "level": "debug"
            if text.startswith(_CHATTER)
            else _TWISTED_LEVEL_NAMES.get(level, "info"),
            "timestamp": stamp.isoformat().replace("+00:00", "Z"),
            "logger": event.get("log_namespace", "twisted"),
        }
        failure = event.get("log_failure")
        if failure is not None:
            out["exception"] = failure.getTraceback()
        return out


def make_observer(options: Any = None, fmt: str = "auto", level: str = "info") -> ObsdLogObserver:
    """The observer twistd installs: stdout with ``-n``, else twistd's log file.

    ``options`` is twistd's ServerOptions (``nodaemon``, ``logfile``); without them
    it writes to stdout.  Usable as ``twistd --logger obsd.ops.log.make_observer``.
    """
    stream: IO[str] = sys.stdout
    if options is not None:
        logfile = options.get("logfile") or ""
        if logfile != "-" and not (not logfile and options.get("nodaemon")):
            from twisted.python import logfile as twisted_logfile

            stream = twisted_logfile.LogFile.fromFullPath(
                logfile or "twistd.log",
                rotateLength=options.get("rotatelength") or 1_000_000,
                maxRotatedFiles=options.get("maxrotatedfiles"),
            )
    return ObsdLogObserver(stream, fmt, level)
