"""A toy output written by following ARCHITECTURE's "Add an output" steps, nothing else.

``tests/daemon/test_toy_output.py`` registers it and checks that the loader
builds it and the router feeds it.  It keeps every batch it is sent in
``SENT`` (a test's stand-in for a destination).
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet import defer

from obsd import events
from obsd.config.model import OutputConfig
from obsd.config.schema import setting
from obsd.outputs.base import Output, OutputContext, SendResult

ACCEPTS = frozenset({events.LOG, events.ERROR})
DEFAULT_KINDS = frozenset({events.LOG})

#: batches "delivered", by output name
SENT: dict[str, list[list[bytes]]] = {}


@attrs.frozen(kw_only=True)
class Config(OutputConfig):
    """``[outputs.toy]``."""

    prefix: str = setting("toy", help="put before every event's name")


class ToyOutput(Output):
    """Encodes ``prefix:event`` and keeps each batch."""

    type_name = "toy"

    def encode(self, event: dict[str, Any]) -> bytes:
        assert isinstance(self.config, Config)
        return f"{self.config.prefix}:{event[events.EVENT]}".encode()

    def send(self, batch: list[bytes]) -> defer.Deferred[SendResult | None]:
        SENT.setdefault(self.name, []).append(list(batch))
        return defer.succeed(None)


def build_output(name: str, config: Config, context: OutputContext) -> ToyOutput:
    return ToyOutput(name, config, context)
