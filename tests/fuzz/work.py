"""Counting a parser's work, not timing it: Python lines run inside ``obsd/`` and
bytes handed to zlib.

A parser that is linear in its input runs a number of lines proportional to
the input; the stalls of issue 14 were a Python loop per byte or per member,
and zlib being handed the rest of a body once per gzip member (each call
copying it).  Both are counted here, deterministically, so a property test can
bound them by ``base + per_byte * len(input)`` with no clock involved.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import obsd

OBSD_DIR = str(Path(obsd.__file__).parent)


class Work:
    """What one call cost: ``lines`` run in obsd, ``fed`` bytes given to zlib."""

    def __init__(self) -> None:
        self.lines = 0
        self.fed = 0

    def _local(self, frame: Any, event: str, arg: Any) -> Any:
        if event == "line":
            self.lines += 1
        return self._local

    def _global(self, frame: Any, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename.startswith(OBSD_DIR):
            return self._local
        return None


_decompressobj = zlib.decompressobj


class _CountingInflater:
    def __init__(self, work: Work, wbits: int) -> None:
        self._inner = _decompressobj(wbits)
        self._work = work

    def decompress(self, data: Any, max_length: int = 0) -> bytes:
        self._work.fed += len(data)
        return self._inner.decompress(data, max_length)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@contextmanager
def _counting_zlib(work: Work) -> Iterator[None]:
    """Every ``zlib.decompressobj`` made meanwhile, by any module, counts what it is fed."""
    zlib.decompressobj = lambda wbits=zlib.MAX_WBITS: _CountingInflater(work, wbits)  # type: ignore[assignment]
    try:
        yield
    finally:
        zlib.decompressobj = _decompressobj


def measure(call: Callable[[], Any], expected: type[BaseException]) -> tuple[Any, Work]:
    """Run ``call``; its result (or the ``expected`` error it raised) and its work.

    Any other exception propagates: a parser raised something it does not document.
    """
    work = Work()
    previous = sys.gettrace()
    with _counting_zlib(work):
        sys.settrace(work._global)
        try:
            outcome = call()
        except expected as exc:
            outcome = exc
        finally:
            sys.settrace(previous)
    return outcome, work


def assert_linear(work: Work, size: int, *, base: int, per_byte: float) -> None:
    """Lines run and bytes fed to zlib grow at most linearly with the input."""
    assert work.lines <= base + per_byte * size, (work.lines, size)
    # a gzip member may be fed up to 256 bytes past its end (the first input step)
    assert work.fed <= 16 * size + 4096, (work.fed, size)
