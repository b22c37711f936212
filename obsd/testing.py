"""Fakes shipped for tests of obsd and of user processors.

``make_output_context(clock)`` gives an output everything it needs with an
injected clock; ``CapturingOutput`` records what the router gave it and lets a
test script each send's result.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.task import Clock

from obsd.config.model import OutputConfig
from obsd.delivery.deadletter import DeadLetterFile
from obsd.delivery.flowcontrol import FlowControl
from obsd.ops.telemetry import Telemetry
from obsd.ops.throttle import ThrottledLogger
from obsd.outputs.base import Output, OutputContext, SendResult, decode_json_record


class ListLog:
    """A logger double that records (level, event, fields)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def _log(self, level: str) -> Callable[..., None]:
        def log(event: str, **fields: Any) -> None:
            self.lines.append((level, event, fields))

        return log

    def __getattr__(self, level: str) -> Callable[..., None]:
        return self._log(level)


def make_output_context(
    clock: Clock, tmp_path: Path, *, rand: Callable[[], float] = lambda: 0.5, **kw: Any
) -> OutputContext:
    """An OutputContext on ``clock`` writing its dead letters under ``tmp_path``."""
    return OutputContext(
        clock=clock,
        telemetry=kw.pop("telemetry", Telemetry()),
        dead_letter=DeadLetterFile(tmp_path / "dead-letter.jsonl", now=clock.seconds),
        flow_control=kw.pop("flow_control", FlowControl()),
        throttle=ThrottledLogger(ListLog(), clock, 10.0),
        reactor=clock,
        data_dir=tmp_path,
        hostname="testhost",
        random=rand,
        run_io=kw.pop("run_io", run_now),
        **kw,
    )


def run_now(job: Callable[[], Any]) -> defer.Deferred[Any]:
    """Run blocking I/O at once, in the test's thread (the daemon uses a thread pool)."""
    return defer.maybeDeferred(job)


@attrs.frozen(kw_only=True)
class CapturingConfig(OutputConfig):
    """Config of the capturing output (the usual queue settings)."""


class CapturingOutput(Output):
    """Records every batch it is asked to send; ``results`` scripts the answers.

    Each entry of ``results`` answers one send: ``None`` (delivered), a
    ``SendResult``, an exception (the send fails), or a ``Deferred`` the test
    fires later.  When ``results`` is empty, sends succeed.
    """

    type_name = "capture"

    def __init__(self, name: str = "capture", config: OutputConfig | None = None,
                 context: OutputContext | None = None) -> None:
        assert context is not None
        self.sent: list[list[bytes]] = []
        self.results: list[Any] = []
        super().__init__(name, config or CapturingConfig(type="capture"), context)

    def encode(self, event: dict[str, Any]) -> bytes:
        from obsd.codecs.jsonline import encode_json_line

        return encode_json_line(event)

    def send(self, batch: list[bytes]) -> defer.Deferred[SendResult | None]:
        self.sent.append(list(batch))
        if not self.results:
            return defer.succeed(None)
        result = self.results.pop(0)
        if isinstance(result, defer.Deferred):
            return result
        if isinstance(result, BaseException):
            return defer.fail(result)
        return defer.succeed(result)

    @property
    def delivered(self) -> list[Any]:
        return [decode_json_record(r) for batch in self.sent for r in batch]
