"""The flow document and its picture: a node per input and output, an arrow per route."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

from obsd.ops.flow import accepted_counter, build_flow, route_label
from obsd.ops.statuspage import render_flow, sparkline

INPUTS = {
    "syslog": {"type": "syslog", "counters": {"received": 40, "refused": 0}, "errors": 0},
    "statsd": {"type": "statsd", "counters": {"metrics_received": 9}, "errors": 2},
}
OUTPUTS = {
    "file": {"type": "file", "state": "ok", "gauges": {"queued": 3}, "errors": 0},
    "es": {"type": "elasticsearch", "state": "failing", "gauges": {"queued": 70}, "errors": 5},
}
COUNTERS = {
    "obsd.input.syslog.received": 40, "obsd.input.statsd.metrics_received": 9,
    "obsd.output.file.sent": 30, "obsd.output.es.sent": 1,
}
RATES = {
    "obsd.input.syslog.received": 4.0, "obsd.input.statsd.metrics_received": 0.5,
    "obsd.output.file.sent": 3.0, "obsd.output.file.received": 3.5,
    "obsd.output.es.received": 1.25, "obsd.router.route.0.matched": 2.0,
    "obsd.router.route.1.matched": 0.75,
}


def flow(routes: list[tuple[dict[str, Any], list[str]]]) -> dict[str, Any]:
    kinds = {"file": ["error", "log", "metric"], "es": ["error", "log"]}
    return build_flow(10.0, 60.0, INPUTS, OUTPUTS, routes, kinds, COUNTERS, RATES,
                      {"obsd.output.es.queued": 64})


class TestBuildFlow:
    def test_default_routing_is_an_edge_per_output(self) -> None:
        """Without routes each output has one edge: its default kinds at its received rate."""
        doc = flow([])
        assert [(e["route"], e["output"], e["label"], e["rate"]) for e in doc["edges"]] == [
            ("default", "file", "kind=error,log,metric", 3.5),
            ("default", "es", "kind=error,log", 1.25),
        ]

    def test_routes_are_edges_at_their_matched_rate(self) -> None:
        """Each route and output it names is one edge, at the rate the route matched."""
        doc = flow([({"kind": ["log"], "event": ""}, ["file", "es"]),
                    ({"kind": [], "source": ["statsd"]}, ["file", "gone"])])
        assert [(e["route"], e["output"], e["label"], e["rate"]) for e in doc["edges"]] == [
            ("0", "file", "kind=log", 2.0),
            ("0", "es", "kind=log", 2.0),
            ("1", "file", "source=statsd", 0.75),
        ]

    def test_nodes_carry_totals_rates_and_sampled_queues(self) -> None:
        """Inputs show what they accepted; outputs what they sent and their queue at the sample."""
        doc = flow([])
        assert doc["inputs"] == [
            {"name": "syslog", "type": "syslog", "counter": "received", "total": 40,
             "rate": 4.0, "errors": 0},
            {"name": "statsd", "type": "statsd", "counter": "metrics_received", "total": 9,
             "rate": 0.5, "errors": 2},
        ]
        queued = {n["name"]: n["queued"] for n in doc["outputs"]}
        assert queued == {"file": 3, "es": 64}  # es from the sample, file live
        assert (doc["at"], doc["window"]) == (10.0, 60.0)

    def test_accepted_counter_and_labels(self) -> None:
        """The accepted counter is picked by name; a route without conditions is everything."""
        assert accepted_counter({"events": 1, "requests": 2}) == "events"
        assert accepted_counter({"connections": 1}) is None
        assert route_label({"kind": [], "level": ""}) == "everything"
        assert route_label({"level": "warning", "event": "user.*"}) == "level=warning event=user.*"


class Svg(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def having(self, attr: str) -> list[str]:
        return [a[attr] for _t, a in self.tags if attr in a]


class TestPicture:
    def test_a_node_per_component_and_an_arrow_per_edge(self) -> None:
        """The SVG has the inputs, outputs and route arrows of the flow, with their rates."""
        doc = flow([({"kind": ["log"]}, ["file", "es"]), ({"source": ["statsd"]}, ["file"])])
        svg = render_flow(doc, {"output.es.queued": [0, 10, 64]})
        parsed = Svg()
        parsed.feed(svg)
        assert svg.startswith("<svg") and svg.endswith("</svg>")
        assert parsed.having("data-node") == ["input.syslog", "input.statsd", "output.file",
                                              "output.es"]
        assert parsed.having("data-edge") == ["0:file", "0:es", "1:file"]
        assert 'data-edge-rate="1:file">0.75/s<' in svg
        assert 'data-node-rate="input.syslog">4.00/s<' in svg
        assert 'data-node-queued="output.es">queue 64<' in svg
        assert 'class="node failing"' in svg
        assert "http" not in svg.replace("http://www.w3.org/2000/svg", "")  # nothing external

    def test_names_are_escaped(self) -> None:
        """A component name cannot inject markup."""
        doc = build_flow(0, 0, {"<b>": {"type": "syslog", "counters": {}}}, {}, [], {}, {}, {})
        assert "<b>" not in render_flow(doc, {})

    def test_sparkline_scales_into_its_box(self) -> None:
        """The highest value touches the top, zero the bottom; no values is a flat line."""
        line = sparkline([0, 5, 10], 0, 0, 100, 20, "s")
        assert 'points="0.0,20.0 50.0,10.0 100.0,0.0"' in line
        assert 'points="0.0,20.0"' in sparkline([], 0, 0, 100, 20, "s")
