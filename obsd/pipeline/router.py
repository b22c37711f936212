"""The router: the data-plane chain's wrapped logger, which puts events on output queues.

Without ``[[routes]]`` each event goes to every output whose type takes its kind
by default.  With routes, an event goes to the union of the outputs of every
route it matches (skipping outputs that cannot take its kind); an event no
route matches is counted as unrouted.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from obsd import events
from obsd.config.model import RouteConfig
from obsd.ops.telemetry import Telemetry


class Routable(Protocol):
    """What the router needs of an output."""

    name: str

    def accept(self, event: dict[str, Any]) -> None: ...


class Route:
    """One ``[[routes]]`` entry compiled: its match and the outputs it feeds.

    Public so ``obsd tail`` can match events with a route's rules.
    """

    __slots__ = ("event", "kinds", "matched", "min_rank", "outputs", "sources")

    def __init__(
        self, config: RouteConfig, outputs: Sequence[Routable], matched: Any = None
    ) -> None:
        #: counts the events this route matched (the status page's edge rate)
        self.matched = matched
        self.kinds = frozenset(config.match.kind)
        self.sources = frozenset(config.match.source)
        self.min_rank = (
            events.LEVEL_RANK[events.normalise_level(config.match.level)]
            if config.match.level
            else -1
        )
        glob = config.match.event
        self.event = re.compile(fnmatch.translate(glob)).match if glob else None
        self.outputs = outputs

    def matches(self, event: dict[str, Any]) -> bool:
        if self.sources and event.get(events.SOURCE) not in self.sources:
            return False
        level = event.get(events.LEVEL, "")
        if self.min_rank >= 0 and events.LEVEL_RANK.get(level, 1) < self.min_rank:
            return False
        return self.event is None or bool(self.event(str(event.get(events.EVENT, ""))))


class Router:
    """Dispatches each finished event to the outputs its routes name."""

    def __init__(
        self,
        outputs: Mapping[str, Routable],
        routes: Sequence[RouteConfig],
        accepts: Mapping[str, frozenset[str]],
        default_kinds: Mapping[str, frozenset[str]],
        telemetry: Telemetry,
    ) -> None:
        #: called with every event before it is routed (live tail, derived metrics); see
        #: ``obsd.ops.tail.TapSet``.  None when nobody listens: one attribute check per event.
        self.tap: Any = None
        #: kind -> components that take every event of that kind before the outputs
        #: do (central's StatsD merge takes ``statsd_partial``); see ``consume``.
        self._consumers: dict[str, tuple[Callable[[dict[str, Any]], None], ...]] = {}
        #: ``[daemon] workers``: where statsd partials go instead (see ``divert_partials``)
        self._divert: tuple[Routable | None, frozenset[str] | None, frozenset[str]] | None = None
        self._telemetry = telemetry
        self.configure(outputs, routes, accepts, default_kinds)
        self._unrouted = {k: telemetry.counter(f"obsd.router.unrouted.{k}") for k in events.KINDS}
        self._routed_count = telemetry.counter("obsd.router.routed")

    def configure(
        self,
        outputs: Mapping[str, Routable],
        routes: Sequence[RouteConfig],
        accepts: Mapping[str, frozenset[str]],
        default_kinds: Mapping[str, frozenset[str]],
    ) -> None:
        """Route to these outputs by these routes from now on (a reload switches here).

        The tables are built aside and swapped in together, so an event is routed
        by the old tables or by the new ones, never by a mix.
        """
        default: dict[str, tuple[Routable, ...]] = {
            kind: tuple(out for name, out in outputs.items() if kind in default_kinds[name])
            for kind in events.KINDS
        }
        # per kind: the routes that can apply, with only the outputs that take that kind
        table: dict[str, list[Route]] = {kind: [] for kind in events.KINDS}
        for index, route in enumerate(routes):
            matched = self._telemetry.counter(f"obsd.router.route.{index}.matched")
            for kind in events.KINDS:
                if route.match.kind and kind not in route.match.kind:
                    continue
                targets = [outputs[n] for n in route.outputs if n in outputs and kind in accepts[n]]
                if targets:
                    table[kind].append(Route(route, targets, matched))
        self._routed, self._default, self._routes = bool(routes), default, table

    def consume(
        self, kind: str, handler: Callable[[dict[str, Any]], None]
    ) -> Callable[[], None]:
        """Hand every event of ``kind`` to ``handler`` too; returns what stops that.

        A consumed event is not counted as unrouted when no output takes it.
        """
        self._consumers[kind] = (*self._consumers.get(kind, ()), handler)

        def stop() -> None:
            self._consumers[kind] = tuple(h for h in self._consumers.get(kind, ()) if h != handler)

        return stop

    def route(self, event: dict[str, Any]) -> None:
        """Put ``event`` on the queue of every output it is routed to."""
        tap = self.tap
        if tap is not None:
            tap(event)
        kind = event[events.KIND]
        consumers = self._consumers.get(kind)
        if consumers:
            for handler in consumers:
                handler(event)
        if not self._routed:
            targets: Sequence[Routable] = self._default.get(kind, ())
        else:
            matched: dict[int, Routable] = {}
            for route in self._routes.get(kind, ()):
                if route.matches(event):
                    route.matched.inc()
                    for out in route.outputs:
                        matched[id(out)] = out
            targets = list(matched.values())
        if not targets:
            if not consumers:
                self._unrouted[kind].inc()
            return
        self._routed_count.inc()
        for out in targets:
            out.accept(event)

    def route_many(self, kind: str, batch: list[dict[str, Any]]) -> None:
        """Route many events of one kind: by kind alone, each output takes the list in one
        call (``accept_many``); with routes, or for partials, one by one."""
        if self._routed or kind == events.STATSD_PARTIAL:
            route = self.statsd_partial if kind == events.STATSD_PARTIAL else self.route
            for event in batch:
                route(event)
            return
        tap = self.tap
        consumers = self._consumers.get(kind)
        if tap is not None or consumers:
            for event in batch:
                if tap is not None:
                    tap(event)
                for handler in consumers or ():
                    handler(event)
        targets = self._default.get(kind, ())
        if not targets:
            if not consumers:
                self._unrouted[kind].inc(len(batch))
            return
        self._routed_count.inc(len(batch))
        for out in targets:
            accept_many = getattr(out, "accept_many", None)
            if accept_many is not None:
                accept_many(batch)
            else:
                for event in batch:
                    out.accept(event)

    def divert_partials(
        self, target: Routable | None, sources: frozenset[str] | None, keep: frozenset[str]
    ) -> None:
        """Send ``statsd_partial`` events from ``sources`` (None: any but ``keep``) to
        ``target`` only (None: to the consumers only), whatever the routes say.

        ``[daemon] workers``: the workers' partials stay among them; see
        ``obsd.daemon.workers.partials_divert``.
        """
        self._divert = (target, sources, keep)

    def statsd_partial(self, event: dict[str, Any]) -> None:
        """Route a partial, unless it is diverted (other kinds never pay for this)."""
        divert = self._divert
        if divert is not None:
            target, sources, keep = divert
            source = event.get(events.SOURCE)
            if (sources is None or source in sources) and source not in keep:
                if self.tap is not None:
                    self.tap(event)
                for handler in self._consumers.get(events.STATSD_PARTIAL, ()):
                    handler(event)
                if target is not None:
                    self._routed_count.inc()
                    target.accept(event)
                return
        self.route(event)

    # structlog calls the method named after the event's kind
    log = error = metric = sentry = span = route
