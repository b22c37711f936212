"""The ``file`` output: events as JSON lines in a local file, with size rotation.

Needs no server, so it is in the embedded default.  Writes are batched and
small (one batch of lines to the page cache), so they are done directly.
With ``[daemon] workers``, every worker appends to the one file (``O_APPEND``:
each batch is one write, never interleaved); worker 0 rotates it, by the
file's real size, and the others reopen the path once it names a new file.
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
        default_dir = context.shared_dir or context.data_dir
        self.path = Path(config.path) if config.path else Path(default_dir) / "events.jsonl"
        #: only one process rotates the file: the first of ``[daemon] workers``
        self.rotates = context.worker == 0
        #: other processes append too: the file's size is read from the file
        self._many = context.shared_dir is not None
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

    def _follow(self) -> None:
        """A worker that does not rotate: reopen once the path names another file."""
        if self._file is None:
            return
        try:
            moved = os.stat(self.path).st_ino != os.fstat(self._file.fileno()).st_ino
        except FileNotFoundError:
            moved = True
        if moved:
            self._file.close()
            self._file = None

    def send(self, batch: list[bytes]) -> defer.Deferred[SendResult | None]:
        data = b"".join(batch)
        if not self.rotates:
            self._follow()
        handle = self._open()
        size = os.fstat(handle.fileno()).st_size if self._many else self._size
        if self.rotates and size and size + len(data) > self.file_config.max_bytes:
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
