"""The ``console`` output: events rendered by structlog's ConsoleRenderer on stdout.

For people watching a terminal: coloured on a TTY, plain otherwise.  It writes
to the real stdout (``sys.__stdout__``), which twistd does not redirect.
"""

from __future__ import annotations

import sys
from typing import IO, Any

import attrs
import structlog
from twisted.internet import defer

from obsd import events
from obsd.codecs.jsonline import rfc3339
from obsd.config.model import OutputConfig
from obsd.config.schema import setting
from obsd.outputs.base import Output, OutputContext, SendResult, public_fields

ACCEPTS = frozenset(events.KINDS)
DEFAULT_KINDS = frozenset({events.LOG, events.ERROR})
LISTEN_TYPES: frozenset[str] = frozenset()


@attrs.frozen(kw_only=True)
class Config(OutputConfig):
    """``[outputs.console]``."""

    colors: str = setting("auto", help="auto (on a TTY), always or never")
    batch_timeout: float = setting(0.05, help="seconds before a partial batch is printed")


class ConsoleOutput(Output):
    """Render each event as one console line."""

    type_name = "console"

    def __init__(
        self, name: str, config: Config, context: OutputContext, stream: IO[str] | None = None
    ) -> None:
        self.stream: IO[str] = stream or sys.__stdout__ or sys.stdout
        isatty = getattr(self.stream, "isatty", lambda: False)()
        colors = config.colors == "always" or (config.colors == "auto" and isatty)
        self._render = structlog.dev.ConsoleRenderer(colors=colors)
        super().__init__(name, config, context)

    def encode(self, event: dict[str, Any]) -> bytes:
        doc = public_fields(event)
        stamp = doc.get(events.TIMESTAMP)
        if isinstance(stamp, int | float):
            doc[events.TIMESTAMP] = rfc3339(stamp)
        line = self._render(None, doc.get(events.LEVEL, "info"), doc)
        return (line + "\n").encode("utf-8", "replace")

    def send(self, batch: list[bytes]) -> defer.Deferred[SendResult | None]:
        self.stream.write(b"".join(batch).decode("utf-8", "replace"))
        self.stream.flush()
        return defer.succeed(None)


def build_output(name: str, config: Config, context: OutputContext) -> ConsoleOutput:
    return ConsoleOutput(name, config, context)
