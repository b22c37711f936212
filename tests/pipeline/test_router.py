"""Routing: by kind, source, level and event glob; fan-out; unrouted counting."""

from __future__ import annotations

from typing import Any

import pytest

from obsd.config.model import RouteConfig, RouteMatch
from obsd.ops.telemetry import Telemetry
from obsd.pipeline.router import Router

ALL = frozenset({"log", "error", "metric", "sentry"})


class Sink:
    def __init__(self, name: str) -> None:
        self.name = name
        self.got: list[dict[str, Any]] = []

    def accept(self, event: dict[str, Any]) -> None:
        self.got.append(event)


@pytest.fixture(name="sinks")
def _sinks() -> dict[str, Sink]:
    return {n: Sink(n) for n in ("es", "graphite", "sentry")}


def router(sinks: dict[str, Sink], routes: list[RouteConfig], tel: Telemetry | None = None) -> Router:
    accepts = {"es": ALL, "graphite": frozenset({"metric"}), "sentry": frozenset({"error", "sentry", "log"})}
    defaults = {"es": frozenset({"log", "error"}), "graphite": frozenset({"metric"}),
                "sentry": frozenset({"error", "sentry"})}
    return Router(sinks, routes, accepts, defaults, tel or Telemetry())


def ev(kind: str = "log", level: str = "info", source: str = "syslog", event: str = "x") -> dict[str, Any]:
    return {"kind": kind, "level": level, "source": source, "event": event}


def got(sinks: dict[str, Sink]) -> dict[str, int]:
    return {n: len(s.got) for n, s in sinks.items()}


class TestDefaultRouting:
    def test_each_kind_goes_to_outputs_taking_it_by_default(self, sinks: dict[str, Sink]) -> None:
        """Without routes, kinds go to the outputs whose type takes them by default."""
        r = router(sinks, [])
        r.log(ev("log"))
        r.error(ev("error"))
        r.metric(ev("metric"))
        assert got(sinks) == {"es": 2, "graphite": 1, "sentry": 1}

    def test_sentry_takes_logs_only_through_a_route(self, sinks: dict[str, Sink]) -> None:
        """A log reaches the sentry output only when a route sends it there."""
        r = router(sinks, [])
        r.log(ev("log", level="error"))
        assert got(sinks)["sentry"] == 0
        r = router(sinks, [RouteConfig(match=RouteMatch(kind=["log"], level="error"), outputs=["sentry"])])
        r.log(ev("log", level="error"))
        assert got(sinks)["sentry"] == 1


class TestRoutes:
    @pytest.mark.parametrize(
        ("match", "event", "routed"),
        [
            (RouteMatch(kind=["log"]), ev("log"), True),
            (RouteMatch(kind=["log"]), ev("error"), False),
            (RouteMatch(source=["syslog"]), ev(source="syslog"), True),
            (RouteMatch(source=["syslog"]), ev(source="sentry"), False),
            (RouteMatch(level="warning"), ev(level="warning"), True),
            (RouteMatch(level="warning"), ev(level="critical"), True),
            (RouteMatch(level="warning"), ev(level="info"), False),
            (RouteMatch(level="warn"), ev(level="error"), True),
            (RouteMatch(event="user.*"), ev(event="user.login"), True),
            (RouteMatch(event="user.*"), ev(event="admin.login"), False),
            (RouteMatch(kind=["log"], level="error", event="db.*"), ev(level="error", event="db.down"), True),
            (RouteMatch(kind=["log"], level="error", event="db.*"), ev(level="info", event="db.down"), False),
        ],
    )
    def test_match(self, sinks: dict[str, Sink], match: RouteMatch, event: dict[str, Any], routed: bool) -> None:
        """Every condition of a route must hold for an event to be routed by it."""
        r = router(sinks, [RouteConfig(match=match, outputs=["es"])])
        getattr(r, event["kind"])(event)
        assert got(sinks)["es"] == int(routed)

    def test_fan_out_is_the_union_without_duplicates(self, sinks: dict[str, Sink]) -> None:
        """An event matching several routes goes once to each output they name."""
        routes = [
            RouteConfig(match=RouteMatch(kind=["error"]), outputs=["es", "sentry"]),
            RouteConfig(match=RouteMatch(level="error"), outputs=["es"]),
        ]
        r = router(sinks, routes)
        r.error(ev("error", level="error"))
        assert got(sinks) == {"es": 1, "graphite": 0, "sentry": 1}

    def test_route_skips_outputs_that_cannot_take_the_kind(self, sinks: dict[str, Sink]) -> None:
        """A kind-less route naming graphite gives it metrics only."""
        r = router(sinks, [RouteConfig(outputs=["graphite", "es"])])
        r.log(ev("log"))
        r.metric(ev("metric"))
        assert got(sinks) == {"es": 2, "graphite": 1, "sentry": 0}

    def test_unrouted_events_are_counted(self, sinks: dict[str, Sink]) -> None:
        """Events no route matches are counted per kind and go nowhere."""
        tel = Telemetry()
        r = router(sinks, [RouteConfig(match=RouteMatch(kind=["error"]), outputs=["es"])], tel)
        r.log(ev("log"))
        r.log(ev("log"))
        r.metric(ev("metric"))
        assert got(sinks) == {"es": 0, "graphite": 0, "sentry": 0}
        assert tel.value("obsd.router.unrouted.log") == 2
        assert tel.value("obsd.router.unrouted.metric") == 1


class TestDivertedPartials:
    """``[daemon] workers``: the workers' statsd partials stay among them."""

    def partial_router(self, sinks: dict[str, Sink]) -> Router:
        accepts = {"relay": frozenset({"statsd_partial", "log"})}
        defaults = {"relay": frozenset({"statsd_partial", "log"})}
        return Router({"relay": sinks["es"]}, [], accepts, defaults, Telemetry())

    def test_a_later_worker_sends_partials_to_worker_0_only(self, sinks: dict[str, Sink]) -> None:
        """Every partial goes to the private relay, except an agent-mode input's."""
        r = self.partial_router(sinks)
        to_worker_0 = Sink("workers")
        r.divert_partials(to_worker_0, None, frozenset({"agent_statsd"}))
        r.statsd_partial(ev("statsd_partial", source="statsd"))
        r.statsd_partial(ev("statsd_partial", source="relay-from-an-agent"))
        r.statsd_partial(ev("statsd_partial", source="agent_statsd"))
        r.log(ev("log", source="statsd"))
        assert [e["source"] for e in to_worker_0.got] == ["statsd", "relay-from-an-agent"]
        assert [(e["kind"], e["source"]) for e in sinks["es"].got] == [
            ("statsd_partial", "agent_statsd"), ("log", "statsd")
        ]

    def test_worker_0_hands_the_workers_partials_to_the_merge_only(
        self, sinks: dict[str, Sink]
    ) -> None:
        """Never to an output that carries partials on (an agent's relay to central)."""
        r = self.partial_router(sinks)
        merged: list[dict[str, Any]] = []
        r.consume("statsd_partial", merged.append)
        r.divert_partials(None, frozenset({"statsd"}), frozenset())
        r.statsd_partial(ev("statsd_partial", source="statsd"))
        r.statsd_partial(ev("statsd_partial", source="other"))
        assert [e["source"] for e in merged] == ["statsd", "other"]
        assert [e["source"] for e in sinks["es"].got] == ["other"]


class BatchSink(Sink):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.calls: list[int] = []

    def accept_many(self, batch: list[dict[str, Any]]) -> None:
        self.calls.append(len(batch))
        self.got.extend(batch)


class TestRouteMany:
    """One TCP read's events routed in one call."""

    def test_by_kind_each_output_takes_the_list_at_once(self) -> None:
        sinks = {"es": BatchSink("es"), "graphite": BatchSink("graphite"), "sentry": Sink("sentry")}
        tel = Telemetry()
        r = router(sinks, [], tel)  # type: ignore[arg-type]
        seen: list[str] = []
        r.tap = lambda e: seen.append(e["event"])
        r.route_many("error", [ev("error", event="a"), ev("error", event="b")])
        assert sinks["es"].calls == [2]  # type: ignore[attr-defined]
        assert [e["event"] for e in sinks["sentry"].got] == ["a", "b"]  # one by one
        assert sinks["graphite"].got == []
        assert seen == ["a", "b"]
        assert tel.value("obsd.router.routed") == 2
        r.route_many("span", [ev("span"), ev("span")])
        assert tel.value("obsd.router.unrouted.span") == 2

    def test_with_routes_each_event_is_matched_on_its_own(self, sinks: dict[str, Sink]) -> None:
        routes = [RouteConfig(match=RouteMatch(level="error"), outputs=["sentry"])]
        r = router(sinks, routes)
        r.route_many("log", [ev("log", level="info"), ev("log", level="error", event="bad")])
        assert [e["event"] for e in sinks["sentry"].got] == ["bad"]
        assert sinks["es"].got == []
