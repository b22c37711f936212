"""The one dead-letter file: events a destination refused for good.

``data_dir/dead-letter.jsonl`` holds one JSON object per line: when, which
output, why, and the event.  Appends are small and bounded (one line per
rejected event, and rejections are rare), so they are written directly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


class DeadLetterFile:
    """Append-only JSON lines of permanently rejected events."""

    def __init__(self, path: Path, now: Callable[[], float] = time.time) -> None:
        self.path = path
        self._now = now
        self._file: IO[str] | None = None
        self.written = 0

    def write(self, output: str, reason: str, event: Any) -> None:
        """Record one rejected event (a dict, or the output's record as text)."""
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        line = json.dumps(
            {"time": self._now(), "output": output, "reason": reason, "event": event},
            default=repr,
            ensure_ascii=False,
        )
        self._file.write(line + "\n")
        self._file.flush()
        self.written += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
