"""Safety nets that trial would give us, rebuilt for pytest (see style.md section 9).

- any Twisted log event carrying a failure fails the test (after ``gc.collect()``,
  so "Unhandled error in Deferred" surfaces);
- a test that leaves delayed calls on the global reactor fails (code bypassed
  the injected clock);
- structlog is reset after each test.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher


@pytest.fixture(name="clock")
def _clock() -> Clock:
    """A fresh ``Clock`` at 0: unit tests drive time with it, never the reactor's."""
    return Clock()


@pytest.fixture(autouse=True)
def _fail_on_logged_failures(request: pytest.FixtureRequest) -> Iterator[None]:
    failures: list[Any] = []

    def observer(event: dict[str, Any]) -> None:
        if "log_failure" in event:
            failures.append(event["log_failure"])

    globalLogPublisher.addObserver(observer)
    try:
        yield
        gc.collect()
    finally:
        globalLogPublisher.removeObserver(observer)
    if failures and "allow_logged_failures" not in request.keywords:
        pytest.fail("Twisted logged failures:\n" + "\n".join(f.getTraceback() for f in failures))


@pytest.fixture(autouse=True)
def _no_delayed_calls_on_global_reactor(request: pytest.FixtureRequest) -> Iterator[None]:
    from twisted.internet import reactor

    before = set(reactor.getDelayedCalls())  # type: ignore[attr-defined]
    yield
    if request.node.get_closest_marker("integration"):
        return
    left = [c for c in reactor.getDelayedCalls() if c not in before and c.active()]  # type: ignore[attr-defined]
    for call in left:
        call.cancel()
    assert not left, f"delayed calls left on the global reactor: {left}"


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()
