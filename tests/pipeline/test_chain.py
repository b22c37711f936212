"""The data-plane chain: normalisation, user processors, drops, and errors that lose nothing."""

from __future__ import annotations

from typing import Any

import pytest
import structlog

from obsd.pipeline import build_chain
from obsd.pipeline.ingest import IngestLogger


class Collect:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def route(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    log = error = metric = sentry = route


def add_user(_logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    event["user"] = "guido"
    event["seen_as"] = method
    return event


def drop_debug(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    if event["level"] == "debug":
        raise structlog.DropEvent
    return event


def explode(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    event["half_done"] = True
    raise RuntimeError("boom")


@pytest.fixture(name="errors")
def _errors() -> list[tuple[str, str]]:
    return []


def make(procs: list[Any], errors: list[tuple[str, str]]) -> tuple[IngestLogger, Collect]:
    sink = Collect()
    chain = build_chain(
        "thishost",
        lambda: 1000.0,
        [(p.__name__, p) for p in procs],
        lambda: None,
        lambda name, exc, event: errors.append((name, repr(exc))),
    )
    return IngestLogger(sink, chain, {"source": "syslog"}), sink


class TestNormalise:
    def test_fills_every_reserved_key(self, errors: list[tuple[str, str]]) -> None:
        """An event with only a message comes out with id, kind, level, times, source, host."""
        ingest, sink = make([], errors)
        ingest.log({"event": "hello"})
        (event,) = sink.events
        assert event["kind"] == "log" and event["level"] == "info"
        assert event["timestamp"] == event["received_at"] == 1000.0
        assert event["source"] == "syslog" and event["host"] == "thishost"
        assert len(event["id"]) == 32

    def test_keeps_what_the_input_knows(self, errors: list[tuple[str, str]]) -> None:
        """Given id, timestamp, level spelling and host are kept, the level normalised."""
        ingest, sink = make([], errors)
        ingest.error({"event": "x", "id": "a" * 32, "timestamp": 5, "level": "fatal", "host": "web1"})
        (event,) = sink.events
        assert (event["id"], event["timestamp"], event["level"], event["host"]) == (
            "a" * 32, 5.0, "critical", "web1")

    def test_bound_source_wins_over_sender(self, errors: list[tuple[str, str]]) -> None:
        """An input cannot be impersonated by a sender-provided source."""
        ingest, sink = make([], errors)
        ingest.log({"event": "x", "source": "evil"})
        assert sink.events[0]["source"] == "syslog"


class TestUserProcessors:
    def test_runs_with_kind_as_method_name(self, errors: list[tuple[str, str]]) -> None:
        """A user processor sees the normalised event and the kind as method_name."""
        ingest, sink = make([add_user], errors)
        ingest.metric({"event": "m", "value": 1.0})
        assert sink.events[0]["user"] == "guido" and sink.events[0]["seen_as"] == "metric"

    def test_can_drop(self, errors: list[tuple[str, str]]) -> None:
        """DropEvent from a user processor drops the event."""
        ingest, sink = make([drop_debug], errors)
        ingest.log({"event": "a", "level": "debug"})
        ingest.log({"event": "b", "level": "info"})
        assert [e["event"] for e in sink.events] == ["b"]

    def test_raising_processor_loses_nothing(self, errors: list[tuple[str, str]]) -> None:
        """A processor that raises is reported and the event goes on unchanged."""
        ingest, sink = make([explode, add_user], errors)
        ingest.log({"event": "a"})
        (event,) = sink.events
        assert "half_done" not in event and event["user"] == "guido"
        assert errors == [("explode", "RuntimeError('boom')")]


class TestMany:
    def test_the_chain_runs_on_each_and_drops_stay_dropped(
        self, errors: list[tuple[str, str]]
    ) -> None:
        """``log_many``: every event normalised and processed; a dropped one is left out."""
        ingest, sink = make([add_user, drop_debug], errors)
        ingest.log_many([{"event": "a"}, {"event": "b", "level": "debug"}, {"event": "c"}])
        assert [(e["event"], e["user"], e["kind"]) for e in sink.events] == [
            ("a", "guido", "log"), ("c", "guido", "log")
        ]
        assert {e["source"] for e in sink.events} == {"syslog"}
