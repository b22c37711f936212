"""The data-plane processor chain: obsd's normalisation, then the user's processors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from obsd.pipeline.processors import GuardedProcessor, Normalise, Processor, finalise


def build_chain(
    hostname: str,
    now: Callable[[], float],
    user_processors: list[tuple[str, Processor]],
    count_error: Callable[[], None],
    report_error: Callable[[str, BaseException, dict[str, Any]], None],
) -> list[Any]:
    """The chain every input's events run through, in order."""
    chain: list[Any] = [Normalise(hostname, now)]
    chain.extend(
        GuardedProcessor(proc, name, count_error, report_error) for name, proc in user_processors
    )
    chain.append(finalise)
    return chain


__all__ = ["build_chain"]
