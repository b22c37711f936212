"""The flow the status page draws and ``obsd top`` prints: inputs -> routes -> outputs.

``build_flow`` turns one moment's counters, rates and gauges into nodes (one
per input and output) and route edges: without ``[[routes]]``, one edge per
output (the kinds it takes by default, at the rate it receives); with routes,
one edge per route and output it names, at the rate the route matches (the
router counts ``obsd.router.route.N.matched``).  Every number comes from the
same ``/status`` document, so the page, ``obsd top`` and ``/status`` agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: the counter that says how much an input accepted, first match wins
ACCEPTED_COUNTERS = ("received", "events", "metrics_received", "accepted")


def accepted_counter(counters: Mapping[str, float]) -> str | None:
    """The name of the counter an input counts accepted events with."""
    return next((c for c in ACCEPTED_COUNTERS if c in counters), None)


def route_counter(index: int) -> str:
    """The router's count of events route ``index`` matched."""
    return f"obsd.router.route.{index}.matched"


def route_label(match: Mapping[str, Any]) -> str:
    """``kind=log source=syslog`` for a route's conditions, ``everything`` for none."""
    parts = []
    for key, value in match.items():
        if value:
            shown = ",".join(value) if isinstance(value, list | tuple) else str(value)
            parts.append(f"{key}={shown}")
    return " ".join(parts) or "everything"


def build_flow(
    at: float | None,
    window: float,
    inputs: Mapping[str, Mapping[str, Any]],
    outputs: Mapping[str, Mapping[str, Any]],
    routes: Sequence[tuple[Mapping[str, Any], Sequence[str]]],
    default_kinds: Mapping[str, Sequence[str]],
    counters: Mapping[str, float],
    rates: Mapping[str, float],
    gauges: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The flow document (``/status``'s ``flow``).

    ``inputs``/``outputs`` are ``/status``'s sections (``counters``, ``gauges``,
    ``state``); ``rates`` are per-second rates over the sampler's window up to
    ``at``, keyed by full counter name; ``gauges`` are the queue depths as of
    ``at`` (the sections' live values when not given); ``routes`` are
    ``(match, outputs)`` pairs.  Rates and queue depths change only at a sample,
    so every reader between two samples sees the same picture.
    """
    nodes_in = []
    for name, part in inputs.items():
        counter = accepted_counter(part["counters"])
        full = f"obsd.input.{name}.{counter}"
        nodes_in.append(
            {
                "name": name,
                "type": part["type"],
                "counter": counter,
                "total": counters.get(full, 0) if counter else 0,
                "rate": rates.get(full, 0.0) if counter else 0.0,
                "errors": part.get("errors", 0),
            }
        )
    nodes_out = []
    for name, part in outputs.items():
        nodes_out.append(
            {
                "name": name,
                "type": part["type"],
                "state": part.get("state", ""),
                "sent": counters.get(f"obsd.output.{name}.sent", 0),
                "rate": rates.get(f"obsd.output.{name}.sent", 0.0),
                "queued": (gauges or {}).get(
                    f"obsd.output.{name}.queued", part.get("gauges", {}).get("queued", 0)
                ),
                "errors": part.get("errors", 0),
            }
        )
    edges = []
    if not routes:
        for name in outputs:
            kinds = ",".join(sorted(default_kinds.get(name, ())))
            edges.append(
                {
                    "route": "default",
                    "output": name,
                    "label": f"kind={kinds}" if kinds else "default",
                    "rate": rates.get(f"obsd.output.{name}.received", 0.0),
                }
            )
    for index, (match, targets) in enumerate(routes):
        for name in targets:
            if name in outputs:
                edges.append(
                    {
                        "route": str(index),
                        "output": name,
                        "label": route_label(match),
                        "rate": rates.get(route_counter(index), 0.0),
                    }
                )
    return {"at": at, "window": window, "inputs": nodes_in, "outputs": nodes_out, "edges": edges}


def history_values(flow: Mapping[str, Any]) -> dict[str, float]:
    """The series the history keeps, from one flow document."""
    values: dict[str, float] = {}
    for node in flow["inputs"]:
        values[f"input.{node['name']}.rate"] = node["rate"]
    for node in flow["outputs"]:
        values[f"output.{node['name']}.rate"] = node["rate"]
        values[f"output.{node['name']}.queued"] = node["queued"]
    return values
