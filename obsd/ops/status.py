"""What the people who run obsd look at: ``/healthz``, ``/readyz``, ``/status`` and ``/``.

``/status`` is a scales-like JSON tree: per input and output its counters, their
rates per second over a sliding window, its last error and when, and (outputs)
their health; ``flow`` (see ``obsd.ops.flow``) holds the picture's nodes and
edges with rates as of the last sample, and ``history`` the last 15 minutes of
each component's rate and queue depth (``obsd.ops.history``: a fixed 1,440
bytes per series).  ``/`` draws it (``obsd.ops.statuspage``: server-rendered
SVG, a meta refresh, no script and no external asset).  Rates come from a
``RateSampler`` that copies the counters every few seconds on the injected
clock and keeps a fixed number of copies, never an unbounded history.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from twisted.application.service import IService
from twisted.internet.task import LoopingCall
from twisted.web.server import Request

from obsd.config.loader import output_default_kinds
from obsd.config.schema import redacted
from obsd.net.listeners import ListenerService
from obsd.net.web import JsonResource
from obsd.ops.flow import build_flow, history_values
from obsd.ops.history import SAMPLE_INTERVAL, History
from obsd.ops.selfmetrics import as_tree
from obsd.ops.statuspage import render_page
from obsd.ops.telemetry import Telemetry
from obsd.twistedtypes import Resource, Service

#: how far back rates look (copies are taken every SAMPLE_INTERVAL seconds)
RATE_WINDOW = 60.0


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
        #: called after each copy (the history takes its sample then)
        self.on_sample: list[Callable[[], None]] = []
        #: the gauges (queue depths) as of the newest copy
        self.sampled_gauges: dict[str, float] = {}

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
        self.sampled_gauges = self.telemetry.gauges()
        for hook in self.on_sample:
            hook()

    def sampled_span(self) -> float:
        """Seconds between the oldest and the newest kept copy (what sampled rates cover)."""
        if len(self._samples) < 2:
            return 0.0
        return float(self._samples[-1][0] - self._samples[0][0])

    def sampled_rates(self, last_interval: bool = False) -> tuple[float | None, dict[str, float]]:
        """Rates between kept copies, and the time of the newest copy.

        Over the whole kept window by default, or over the last interval only; these
        change only when a copy is taken, so two readers between copies agree.
        """
        if not self._samples:
            return None, {}
        now, newest = self._samples[-1]
        if len(self._samples) < 2:
            return now, dict.fromkeys(newest, 0.0)
        then, old = self._samples[-2] if last_interval else self._samples[0]
        elapsed = now - then
        if elapsed <= 0:
            return now, dict.fromkeys(newest, 0.0)
        return now, {n: (v - old.get(n, 0)) / elapsed for n, v in newest.items()}

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
        self.history = History()
        sampler.on_sample.append(self.take_history)

    def take_history(self) -> None:
        """One history sample: rates over the last interval, queue depths now."""
        at, rates = self.sampler.sampled_rates(last_interval=True)
        inputs, outputs = self._sections({})
        self.history.record(at or 0.0, history_values(self.flow(at, rates, inputs, outputs)))

    def flow(
        self, at: float | None, rates: dict[str, float], inputs: Any, outputs: Any
    ) -> dict[str, Any]:
        """The flow document for these rates (see ``obsd.ops.flow``)."""
        config = self.service.config
        routes = [(redacted(r.match), r.outputs) for r in config.routes]
        kinds = {
            name: sorted(output_default_kinds(cfg))
            for name, cfg in config.outputs.items()
            if name in outputs
        }
        return build_flow(
            at, self.sampler.sampled_span(), inputs, outputs, routes, kinds,
            self.service.telemetry.counters(), rates, self.sampler.sampled_gauges,
        )

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

    def _sections(
        self, rates: Mapping[str, float], listeners: list[dict[str, Any]] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """``/status``'s inputs and outputs sections (with ``listeners`` when given)."""
        service = self.service
        telemetry: Telemetry = service.telemetry
        counters = telemetry.counters()
        gauges = telemetry.gauges()
        listeners = listeners or []
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
        return inputs, outputs

    def status(self) -> dict[str, Any]:
        """The whole scales-like tree: uptime, inputs, outputs, flow, history, every metric."""
        service = self.service
        telemetry: Telemetry = service.telemetry
        inputs, outputs = self._sections(self.sampler.rates(), self.listeners())
        at, sampled = self.sampler.sampled_rates()
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
            "flow": self.flow(at, sampled, inputs, outputs),
            "history": {
                "interval": self.sampler.interval,
                "capacity": self.history.capacity,
                "times": self.history.times(),
                "series": {n: self.history.series(n) for n in self.history.names()},
            },
            "errors": {
                name: {"message": e.message, "at": e.when, "count": e.count}
                for name, e in telemetry.errors().items()
            },
            "metrics": as_tree(telemetry.snapshot()),
        }


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
