"""The status page: ``/status`` drawn as HTML with a server-rendered SVG picture.

The flow (inputs -> routes -> outputs) is one inline SVG: a node per input and
output with its rate and sparklines of the last 15 minutes (rate; for outputs
also queue depth, in orange), and one arrow per route edge labelled with what
the route matches and its rate.  The page reloads itself with a meta refresh:
no script, no external asset, so it works offline and reads in ``curl``.
Elements carry ``data-*`` attributes so tests (and scrapers) read numbers, not
pixels.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

#: seconds between two reloads of the page
PAGE_REFRESH = 2

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}
h1{font-size:1.4em;margin:0 0 .2em} h2{font-size:1.1em;margin:1.4em 0 .4em}
.meta{color:#666} .card{display:inline-block;vertical-align:top;background:#fff;
border:1px solid #ddd;border-radius:6px;padding:.6em .9em;margin:0 .8em .8em 0;min-width:18em}
.card h3{margin:0 0 .3em;font-size:1em} table{border-collapse:collapse;width:100%}
td{padding:1px 6px;border-bottom:1px solid #eee} td.value,td.rate{text-align:right;
font-variant-numeric:tabular-nums} td.rate{color:#666} .ok{color:#1a7f37}
.degraded{color:#9a6700} .failing{color:#cf222e;font-weight:bold} .err{color:#cf222e;font-size:.9em}
svg.flow{background:#fff;border:1px solid #ddd;border-radius:6px;max-width:100%;height:auto}
svg.flow text{font:12px system-ui,sans-serif;fill:#222} svg.flow .name{font-weight:bold}
svg.flow .small{fill:#666;font-size:11px} svg.flow .rate{font-variant-numeric:tabular-nums}
svg.flow rect.node{fill:#f6f8fa;stroke:#8c959f} svg.flow rect.route{fill:#fff;stroke:#d0d7de}
svg.flow rect.ok{stroke:#1a7f37;stroke-width:2}
svg.flow rect.degraded{stroke:#9a6700;stroke-width:2}
svg.flow rect.failing{stroke:#cf222e;stroke-width:3} svg.flow .feed,svg.flow .edge{fill:none;
stroke:#57606a;stroke-width:1.5} svg.flow .edge{stroke:#0969da;marker-end:url(#arrow)}
svg.flow .spark{fill:none;stroke:#0969da;stroke-width:1.2} svg.flow .spark.queue{stroke:#bc4c00}
"""


def _number(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3f}"


def _metric_rows(kind: str, name: str, part: dict[str, Any]) -> list[str]:
    rows = []
    for counter, value in part["counters"].items():
        full = f"obsd.{kind}.{name}.{counter}"
        rate = part["rates"].get(counter, 0.0)
        rows.append(
            f"<tr><td>{html.escape(counter)}</td>"
            f'<td class="value" data-name="{html.escape(full)}">{_number(value)}</td>'
            f'<td class="rate" data-rate="{html.escape(full)}">{rate:.2f}/s</td></tr>'
        )
    for gauge, value in part.get("gauges", {}).items():
        full = f"obsd.{kind}.{name}.{gauge}"
        rows.append(
            f"<tr><td>{html.escape(gauge)}</td>"
            f'<td class="value" data-name="{html.escape(full)}">{_number(value)}</td>'
            '<td class="rate">gauge</td></tr>'
        )
    return rows


def _card(kind: str, name: str, part: dict[str, Any]) -> str:
    state = part.get("state", "")
    head = f"{html.escape(name)} <small>({html.escape(part['type'])})</small>"
    if state:
        head += f' <span class="{state}" data-state="{html.escape(name)}">{state}</span>'
    rows = "".join(_metric_rows(kind, name, part)) or '<tr><td colspan="3">no numbers yet</td></tr>'
    error = ""
    for listener in part.get("listeners", []):
        up = "ok" if listener["up"] else "failing"
        error += (
            f'<p class="meta">{html.escape(listener["endpoint"])} (port {listener["port"]}) '
            f'<span class="{up}">{"listening" if listener["up"] else "down"}</span></p>'
        )
    if part["last_error"]:
        error = (
            f'<p class="err" data-error="{html.escape(name)}">last error: '
            f"{html.escape(part['last_error'])} (at {part['last_error_at']:.0f})</p>"
        )
    return (
        f'<div class="card" id="{kind}-{html.escape(name)}"><h3>{head}</h3>'
        f"<table>{rows}</table>{error}</div>"
    )


# -- the picture ---------------------------------------------------------------------

_ROW = 64
_NODE_H = 54
_WIDTH = 960
_INPUT_X, _INPUT_W = 10, 210
_BUS_X = 260
_ROUTE_X, _ROUTE_W = 300, 250
_OUTPUT_X, _OUTPUT_W = 620, 320


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _rate(value: float) -> str:
    """A rate as the page and ``obsd top`` print it."""
    return f"{value:.2f}/s"


def _ys(count: int, height: int) -> list[int]:
    """Top edges of ``count`` boxes spread down a column of ``height``."""
    top = (height - count * _ROW) // 2 + (_ROW - _NODE_H) // 2
    return [top + i * _ROW for i in range(count)]


def sparkline(values: Sequence[float], x: float, y: float, w: float, h: float,
              series: str, extra: str = "") -> str:
    """A polyline of ``values`` scaled into the box (flat at the bottom when empty)."""
    if not values:
        values = [0.0]
    top = max(max(values), 1e-9)
    step = w / max(len(values) - 1, 1)
    points = " ".join(
        f"{x + i * step:.1f},{y + h - (v / top) * h if top > 0 else y + h:.1f}"
        for i, v in enumerate(values)
    )
    cls = f"spark {extra}".strip()
    return f'<polyline class="{cls}" data-series="{_esc(series)}" points="{points}"/>'


def render_flow(flow: Mapping[str, Any], history: Mapping[str, Sequence[float]]) -> str:
    """The flow picture as inline SVG."""
    inputs, edges, outputs = flow["inputs"], flow["edges"], flow["outputs"]
    rows = max(len(inputs), len(edges), len(outputs), 1)
    height = rows * _ROW + 20
    parts = [
        f'<svg class="flow" xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" '
        f'height="{height}" viewBox="0 0 {_WIDTH} {height}" role="img" '
        'aria-label="inputs, routes and outputs with their rates">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0L10,5L0,10z" fill="#0969da"/></marker></defs>',
    ]
    in_y = dict(zip([n["name"] for n in inputs], _ys(len(inputs), height), strict=True))
    out_y = dict(zip([n["name"] for n in outputs], _ys(len(outputs), height), strict=True))
    edge_y = _ys(len(edges), height)
    mid = _NODE_H // 2
    spans = [*in_y.values(), *edge_y]
    if spans:
        parts.append(f'<line class="feed" x1="{_BUS_X}" y1="{min(spans) + mid}" '
                     f'x2="{_BUS_X}" y2="{max(spans) + mid}"/>')
    for node in inputs:
        y = in_y[node["name"]]
        name = node["name"]
        parts.append(
            f'<g class="node input" data-node="input.{_esc(name)}">'
            f'<rect class="node" x="{_INPUT_X}" y="{y}" width="{_INPUT_W}" '
            f'height="{_NODE_H}" rx="6"/>'
            f'<text class="name" x="{_INPUT_X + 8}" y="{y + 17}">{_esc(name)}</text>'
            f'<text class="small" x="{_INPUT_X + 8}" y="{y + 32}">{_esc(node["type"])}</text>'
            f'<text class="rate" x="{_INPUT_X + 8}" y="{y + 47}" '
            f'data-node-rate="input.{_esc(name)}">{_rate(node["rate"])}</text>'
            + sparkline(history.get(f"input.{name}.rate", ()), _INPUT_X + 110, y + 8, 92, 38,
                        f"input.{name}.rate")
            + "</g>"
        )
        parts.append(f'<line class="feed" x1="{_INPUT_X + _INPUT_W}" y1="{y + mid}" '
                     f'x2="{_BUS_X}" y2="{y + mid}"/>')
    for y, edge in zip(edge_y, edges, strict=True):
        key = f"{edge['route']}:{edge['output']}"
        target = out_y.get(edge["output"], y) + mid
        parts.append(
            f'<line class="feed" x1="{_BUS_X}" y1="{y + mid}" x2="{_ROUTE_X}" y2="{y + mid}"/>'
            f'<g class="route" data-route="{_esc(edge["route"])}">'
            f'<rect class="route" x="{_ROUTE_X}" y="{y + 6}" width="{_ROUTE_W}" '
            f'height="{_NODE_H - 12}" rx="4"/>'
            f'<text class="small" x="{_ROUTE_X + 8}" y="{y + 24}">'
            f'{_esc(edge["label"][:38])}</text>'
            f'<text class="rate" x="{_ROUTE_X + 8}" y="{y + 40}" data-edge-rate="{_esc(key)}">'
            f'{_rate(edge["rate"])}</text></g>'
            f'<path class="edge" data-edge="{_esc(key)}" d="M{_ROUTE_X + _ROUTE_W},{y + mid} '
            f'C{_ROUTE_X + _ROUTE_W + 40},{y + mid} {_OUTPUT_X - 40},{target} '
            f'{_OUTPUT_X - 2},{target}"/>'
        )
    for node in outputs:
        y = out_y[node["name"]]
        name = node["name"]
        parts.append(
            f'<g class="node output" data-node="output.{_esc(name)}">'
            f'<rect class="node {_esc(node["state"])}" x="{_OUTPUT_X}" y="{y}" '
            f'width="{_OUTPUT_W}" height="{_NODE_H}" rx="6"/>'
            f'<text class="name" x="{_OUTPUT_X + 8}" y="{y + 17}">{_esc(name)}</text>'
            f'<text class="small" x="{_OUTPUT_X + 8}" y="{y + 32}">{_esc(node["type"])} '
            f'{_esc(node["state"])}</text>'
            f'<text class="rate" x="{_OUTPUT_X + 8}" y="{y + 47}" '
            f'data-node-rate="output.{_esc(name)}">{_rate(node["rate"])}</text>'
            f'<text class="rate small" x="{_OUTPUT_X + 84}" y="{y + 47}" '
            f'data-node-queued="output.{_esc(name)}">queue {_number(node["queued"])}</text>'
            + sparkline(history.get(f"output.{name}.rate", ()), _OUTPUT_X + 170, y + 6, 140, 20,
                        f"output.{name}.rate")
            + sparkline(history.get(f"output.{name}.queued", ()), _OUTPUT_X + 170, y + 30, 140,
                        18, f"output.{name}.queued", "queue")
            + "</g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def render_page(doc: dict[str, Any]) -> bytes:
    """The status document as a self-refreshing HTML page."""
    ready = "ok" if doc["ready"] else "failing"
    parts = [
        '<!DOCTYPE html><html><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{PAGE_REFRESH}">',
        f"<title>obsd status</title><style>{_STYLE}</style></head><body>",
        f'<h1>obsd <span class="{ready}" id="ready">{ready}</span></h1>',
        f'<p class="meta">up <span id="uptime">{doc["uptime"]:.0f}</span> s; '
        f"rates per second over the last {doc['rate_span']:.0f} s; "
        '<a href="/status">/status</a> <a href="/metrics">/metrics</a> '
        '<a href="/readyz">/readyz</a></p>',
    ]
    flow = doc.get("flow")
    if flow is not None:
        series = doc.get("history", {}).get("series", {})
        minutes = doc.get("history", {}).get("capacity", 0) * doc.get("history", {}).get(
            "interval", 0) / 60
        parts.append(
            f'<h2>flow <small class="meta" data-flow-at="{flow["at"]}">rates over the last '
            f'{flow["window"]:.0f} s; lines: the last {minutes:.0f} minutes</small></h2>'
        )
        parts.append(render_flow(flow, series))
    parts.append("<h2>inputs</h2>")
    parts += [_card("input", n, p) for n, p in doc["inputs"].items()] or ["<p>none</p>"]
    parts.append("<h2>outputs</h2>")
    parts += [_card("output", n, p) for n, p in doc["outputs"].items()] or ["<p>none</p>"]
    if doc["errors"]:
        parts.append("<h2>last problems</h2><table>")
        for component, noted in doc["errors"].items():
            parts.append(
                f'<tr><td>{html.escape(component)}</td><td class="err">'
                f'{html.escape(noted["message"])}</td><td class="rate">at {noted["at"]:.0f}, '
                f'{noted["count"]} so far</td></tr>'
            )
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "".join(parts).encode()


