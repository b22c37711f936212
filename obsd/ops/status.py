"""What the people who run obsd look at: ``/healthz``, ``/readyz``, ``/status`` and ``/``.

``/status`` is a scales-like JSON tree: per input and output its counters, their
rates per second over a sliding window, its last error and when, and (outputs)
their health.  ``/`` renders the same numbers as a small HTML page that reloads
itself (a meta refresh: no JavaScript at all), so it reads in any browser and in
``curl``.  Rates come from a ``RateSampler`` that copies the counters every few
seconds on the injected clock and keeps a fixed number of copies, never an
unbounded history.
"""

from __future__ import annotations

import html
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

from twisted.application.service import IService, Service
from twisted.internet.task import LoopingCall
from twisted.web.resource import Resource
from twisted.web.server import Request

from obsd.net.listeners import ListenerService
from obsd.net.web import JsonResource
from obsd.ops.selfmetrics import as_tree
from obsd.ops.telemetry import Telemetry

#: seconds between two copies of the counters, and how far back rates look
SAMPLE_INTERVAL = 5.0
RATE_WINDOW = 60.0
#: seconds between two reloads of the HTML page
PAGE_REFRESH = 2


class RateSampler(Service):
    """Copies the counters on a clock; rates are per second over the kept window."""

    def __init__(
        self,
        telemetry: Telemetry,
        clock: Any,
        interval: float = SAMPLE_INTERVAL,
        window: float = RATE_WINDOW,
    ) -> None:
        self.telemetry = telemetry
        self.clock = clock
        self.interval = interval
        keep = max(2, int(window / interval) + 1)
        self._samples: deque[tuple[float, dict[str, int]]] = deque(maxlen=keep)
        self._loop: LoopingCall | None = None

    @property
    def window(self) -> float:
        """Seconds the kept copies span when the window is full."""
        return self.interval * ((self._samples.maxlen or 2) - 1)

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self.sample)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def sample(self) -> None:
        """Copy every counter now (the oldest copy falls off the window)."""
        self._samples.append((self.clock.seconds(), self.telemetry.counters()))

    def span(self) -> float:
        """Seconds the rates cover now (less than the window while it fills)."""
        if not self._samples:
            return 0.0
        return float(self.clock.seconds() - self._samples[0][0])

    def rates(self) -> dict[str, float]:
        """Per-second change of each counter from the oldest kept copy to now."""
        now = self.clock.seconds()
        current = self.telemetry.counters()
        if not self._samples:
            return dict.fromkeys(current, 0.0)
        then, old = self._samples[0]
        elapsed = now - then
        if elapsed <= 0:
            return dict.fromkeys(current, 0.0)
        return {name: (value - old.get(name, 0)) / elapsed for name, value in current.items()}


class ErrorRecorder:
    """The throttle's hook: remember each component's last problem, and when.

    A report names its component with an ``input=`` or ``output=`` field, or
    with a key that starts with the component's name (``input:NAME:...`` or
    ``NAME:...``); reports that name none are kept under ``obsd``.
    """

    def __init__(
        self, telemetry: Telemetry, clock: Any, inputs: Any = (), outputs: Any = ()
    ) -> None:
        self.telemetry = telemetry
        self.clock = clock
        self.inputs = frozenset(inputs)
        self.outputs = frozenset(outputs)

    def component(self, key: str, fields: dict[str, Any]) -> str:
        """``input.NAME``, ``output.NAME`` or ``obsd`` for one report."""
        if isinstance(fields.get("input"), str):
            return f"input.{fields['input']}"
        if isinstance(fields.get("output"), str):
            return f"output.{fields['output']}"
        parts = key.split(":")
        if parts[0] == "input" and len(parts) > 1:
            parts = parts[1:]
        head = parts[0].split("/")[0]
        if head in self.inputs:
            return f"input.{head}"
        if head in self.outputs:
            return f"output.{head}"
        return "obsd"

    def __call__(self, level: str, key: str, event: str, fields: dict[str, Any]) -> None:
        detail = fields.get("reason") or fields.get("error")
        message = f"{event}: {detail}" if detail else event
        self.telemetry.note_error(self.component(key, fields), message, self.clock.seconds())


def _listeners(service: Any) -> Iterator[ListenerService]:
    """Every listening service under ``service``, depth first."""
    for child in service:
        if isinstance(child, ListenerService):
            yield child
        elif hasattr(child, "__iter__"):
            yield from _listeners(child)


def _section(values: Mapping[str, float], prefix: str) -> dict[str, float]:
    return {name[len(prefix) :]: v for name, v in values.items() if name.startswith(prefix)}


def _error_fields(telemetry: Telemetry, component: str) -> dict[str, Any]:
    noted = telemetry.errors().get(component)
    if noted is None:
        return {"last_error": "", "last_error_at": None, "errors": 0}
    return {"last_error": noted.message, "last_error_at": noted.when, "errors": noted.count}


class StatusReport:
    """Builds the ``/status`` and ``/readyz`` documents for one running service."""

    def __init__(self, service: Any, sampler: RateSampler) -> None:
        self.service = service
        self.sampler = sampler
        self.started = service.reactor.seconds()

    def listeners(self) -> list[dict[str, Any]]:
        """Every listener: whose, where, and whether it is bound."""
        found = []
        for svc in _listeners(self.service):
            host = svc.port.getHost() if svc.port is not None else None
            found.append(
                {
                    "owner": svc.owner,
                    "endpoint": svc.listener.description,
                    "up": svc.port is not None,
                    "port": getattr(host, "port", None),
                }
            )
        return found

    def readiness(self) -> dict[str, Any]:
        """Ready when every listener is bound and no output is failing past its threshold."""
        outputs = {name: out.health() for name, out in self.service.outputs.items()}
        failing = [n for n, h in outputs.items() if h["state"] == "failing"]
        down = [f"{li['owner']} {li['endpoint']}" for li in self.listeners() if not li["up"]]
        if not self.service.running:
            down = []  # not started yet: nothing could be bound
        reasons = [f"output {n} failing" for n in failing] + [f"listener {d} down" for d in down]
        return {
            "status": "failing" if reasons else "ok",
            "reasons": reasons,
            "failing": failing,
            "listeners_down": down,
            "outputs": outputs,
        }

    def status(self) -> dict[str, Any]:
        """The whole scales-like tree: uptime, inputs, outputs, every metric."""
        service = self.service
        telemetry: Telemetry = service.telemetry
        counters = telemetry.counters()
        gauges = telemetry.gauges()
        rates = self.sampler.rates()
        listeners = self.listeners()
        inputs: dict[str, Any] = {}
        for name, cfg in service.config.inputs.items():
            prefix = f"obsd.input.{name}."
            inputs[name] = {
                "type": cfg.type,
                "counters": _section(counters, prefix),
                "rates": _section(rates, prefix),
                "listeners": [li for li in listeners if li["owner"] == name],
                **_error_fields(telemetry, f"input.{name}"),
            }
        outputs: dict[str, Any] = {}
        for name, out in service.outputs.items():
            prefix = f"obsd.output.{name}."
            health = out.health()
            worst = [d for d in health["destinations"].values() if d["last_error_at"] is not None]
            worst.sort(key=lambda d: d["last_error_at"])
            noted = _error_fields(telemetry, f"output.{name}")
            if worst and (noted["last_error_at"] or 0) < worst[-1]["last_error_at"]:
                latest = worst[-1]
                noted.update(last_error=latest["last_error"], last_error_at=latest["last_error_at"])
            outputs[name] = {
                "type": out.type_name,
                "state": health["state"],
                "since": health["since"],
                "counters": _section(counters, prefix),
                "rates": _section(rates, prefix),
                "gauges": _section(gauges, prefix),
                "destinations": health["destinations"],
                **noted,
            }
        return {
            "orphan_spools": {
                str(path): size for path, size in getattr(service, "orphan_spools", {}).items()
            },
            "uptime": service.reactor.seconds() - self.started,
            "ready": self.readiness()["status"] == "ok",
            "rate_window": self.sampler.window,
            "rate_span": self.sampler.span(),
            "inputs": inputs,
            "outputs": outputs,
            "errors": {
                name: {"message": e.message, "at": e.when, "count": e.count}
                for name, e in telemetry.errors().items()
            },
            "metrics": as_tree(telemetry.snapshot()),
        }


# -- the HTML page -------------------------------------------------------------------

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}
h1{font-size:1.4em;margin:0 0 .2em} h2{font-size:1.1em;margin:1.4em 0 .4em}
.meta{color:#666} .card{display:inline-block;vertical-align:top;background:#fff;
border:1px solid #ddd;border-radius:6px;padding:.6em .9em;margin:0 .8em .8em 0;min-width:18em}
.card h3{margin:0 0 .3em;font-size:1em} table{border-collapse:collapse;width:100%}
td{padding:1px 6px;border-bottom:1px solid #eee} td.value,td.rate{text-align:right;
font-variant-numeric:tabular-nums} td.rate{color:#666} .ok{color:#1a7f37}
.degraded{color:#9a6700} .failing{color:#cf222e;font-weight:bold} .err{color:#cf222e;font-size:.9em}
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
        "<h2>inputs</h2>",
    ]
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


class StatusPage(Resource):
    """``GET /``: the status page."""

    isLeaf = True

    def __init__(self, report: StatusReport) -> None:
        super().__init__()
        self.report = report

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return render_page(self.report.status())


def mount_status(service: Any) -> StatusReport:
    """Mount ``/healthz``, ``/readyz``, ``/status``, ``/metrics`` and ``/`` on the service."""
    from obsd.net.web import PrometheusResource

    sampler = RateSampler(service.telemetry, service.reactor)
    IService(sampler).setServiceParent(service.inputs_group)
    report = StatusReport(service, sampler)
    recorder = ErrorRecorder(
        service.telemetry, service.reactor, service.config.inputs, service.outputs
    )
    service.throttle.on_report = recorder
    root = service.http_root
    root.mount(("healthz",), JsonResource(lambda: {"status": "ok"}))
    root.mount(
        ("readyz",),
        JsonResource(report.readiness, lambda doc: 503 if doc["reasons"] else 200),
    )
    root.mount(("status",), JsonResource(report.status))
    root.mount(("metrics",), PrometheusResource(service.telemetry))
    root.index = StatusPage(report)
    return report
