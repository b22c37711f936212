"""Deferred helpers with trial's semantics, and small fakes shared by tests."""

from __future__ import annotations

from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

T = TypeVar("T")


def success_result_of(d: Deferred[T]) -> T:
    """The result of a Deferred that has already succeeded."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, f"{d!r} has no result yet"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]  # type: ignore[no-any-return]


def failure_result_of(d: Deferred[Any], *types: type[BaseException]) -> Failure:
    """The Failure of a Deferred that has already failed (with one of ``types``)."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, f"{d!r} has no result yet"
    assert isinstance(results[0], Failure), f"{d!r} succeeded with {results[0]!r}"
    if types:
        assert results[0].check(*types), f"unexpected failure {results[0]!r}"
    return results[0]


def assert_no_result(d: Deferred[Any]) -> None:
    """Assert a Deferred has not fired yet (without consuming a later result)."""
    results: list[Any] = []
    d.addBoth(lambda r: results.append(r) or r)
    assert not results, f"{d!r} fired with {results[0]!r}"
