"""What a memory queue still holds when the shutdown deadline passes, kept on disk.

A memory queue loses nothing on SIGTERM: what it could not deliver within
``shutdown_timeout`` is written to the spool directory a disk buffer of the same
output would use, in the spool's own format (versioned, checksummed records).
At the next start the queue finds it and runs as a disk queue until that backlog
is delivered, so the leftovers go first and keep the disk buffer's rules:
at least once, damage skipped and counted.

Spools nobody reads are found here too: a directory under ``data_dir/spool``
that no configured output owns (the output was removed or renamed) is reported
at start and in ``/status`` with its size, never silently left behind.

Pure file I/O, no Twisted: callers run these functions in a thread.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from obsd.delivery.spool import SEGMENT_SUFFIX, SegmentLog

SPOOL_DIR = "spool"


def spool_directory(data_dir: Path | str, output: str, destination: str = "") -> Path:
    """Where the spool of one output's queue (one destination) lives."""
    directory = Path(data_dir) / SPOOL_DIR / output
    if destination:
        directory = directory / "".join(
            c if c.isalnum() or c in "-._" else "_" for c in destination
        )
    return directory


def has_records(directory: Path) -> bool:
    """Whether a spool directory holds any written segment (cheap: names and sizes only)."""
    try:
        return any(p.stat().st_size > 0 for p in directory.glob(f"*{SEGMENT_SUFFIX}"))
    except OSError:
        return False


def write_records(
    directory: Path, records: Iterable[bytes], segment_bytes: int, fsync: bool = True
) -> int:
    """Append ``records`` to the spool in ``directory`` after what it holds; returns the count.

    Raises ``OSError`` when they cannot all be written (disk full, no permission).
    """
    log = SegmentLog(directory, segment_bytes, fsync)
    log.open()
    try:
        first = log.next_seq
        batch = [(first + i, record) for i, record in enumerate(records)]
        if batch:
            log.append(batch)
        return len(batch)
    finally:
        log.close()


def remove_spool(directory: Path) -> None:
    """Delete a spool directory whose records are all delivered (segments, ack, the folder)."""
    for path in directory.iterdir():
        if path.is_file():
            path.unlink(missing_ok=True)
    directory.rmdir()


def spool_sizes(data_dir: Path | str) -> dict[Path, int]:
    """Every spool directory under ``data_dir/spool`` that holds segments, with its bytes."""
    root = Path(data_dir) / SPOOL_DIR
    sizes: dict[Path, int] = {}
    if not root.is_dir():
        return sizes
    for segment in root.rglob(f"*{SEGMENT_SUFFIX}"):
        try:
            size = segment.stat().st_size
        except OSError:
            continue
        sizes[segment.parent] = sizes.get(segment.parent, 0) + size
    return sizes


def find_orphans(data_dir: Path | str, owned: Iterable[Path]) -> dict[Path, int]:
    """Spool directories with data that none of the ``owned`` directories is, with their bytes."""
    mine = {Path(p) for p in owned}
    return {path: size for path, size in spool_sizes(data_dir).items() if path not in mine and size}
