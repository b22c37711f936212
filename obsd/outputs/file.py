"""The ``file`` output: events as JSON lines in a local file, with size rotation.

Needs no server, so it is in the embedded default.  Writes are batched and
small (one batch of lines to the page cache), so they are done directly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

import attrs
from twisted.internet import defer

from obsd import events
from obsd.codecs.jsonline import encode_json_line
from obsd.config.model import OutputConfig
from obsd.config.schema import at_least, setting
from obsd.outputs.base import Output, OutputContext, SendResult

ACCEPTS = frozenset(events.KINDS)
DEFAULT_KINDS = frozenset({events.LOG, events.ERROR, events.METRIC, events.SPAN})
LISTEN_TYPES: frozenset[str] = frozenset()


@attrs.frozen(kw_only=True)
class Config(OutputConfig):
    """``[outputs.file]``."""

    path: str = setting("", help="the file; default data_dir/events.jsonl")
    max_bytes: int = setting(
        100 * 1024 * 1024, check=at_least(1024), help="rotate when the file would pass this size",
        client_sees="the file is rotated (events.jsonl.1, ...) when a write would pass this size",
    )
    keep: int = setting(5, check=at_least(0), help="rotated files kept (.1 ... .N)")
    batch_timeout: float = setting(
        0.2, check=at_least(0), help="seconds before a partial batch is written"
    )


class FileOutput(Output):
    """Append JSON lines; rotate to ``.1`` ... ``.keep`` by size."""

    type_name = "file"

    def __init__(self, name: str, config: Config, context: OutputContext) -> None:
        self.path = Path(config.path) if config.path else Path(context.data_dir) / "events.jsonl"
        self._file: IO[bytes] | None = None
        self._size = 0
        super().__init__(name, config, context)
        self.file_config = config

    def encode(self, event: dict[str, Any]) -> bytes:
        return encode_json_line(event)

    def _open(self) -> IO[bytes]:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("ab")
            self._size = self._file.tell()
        return self._file

    def _rotate(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        keep = self.file_config.keep
        if keep == 0:
            self.path.unlink(missing_ok=True)
            return
        for index in range(keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
        if self.path.exists():
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))

    def send(self, batch: list[bytes]) -> defer.Deferred[SendResult | None]:
        data = b"".join(batch)
        handle = self._open()
        if self._size and self._size + len(data) > self.file_config.max_bytes:
            self._rotate()
            handle = self._open()
        handle.write(data)
        handle.flush()
        self._size += len(data)
        return defer.succeed(None)

    def after_drain(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def build_output(name: str, config: Config, context: OutputContext) -> FileOutput:
    return FileOutput(name, config, context)
