"""Assemble the daemon from a config: outputs, router and chain, inputs, HTTP site.

The only importer of both inputs and outputs.  ``build_service(config, reactor)``
returns an ``ObsdService`` that starts outputs before inputs and, on stop,
stops the inputs (listeners close, aggregators flush) *before* draining the
outputs within ``shutdown_timeout``.
"""

from __future__ import annotations

import random
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import attrs
from twisted.application.service import IService
from twisted.internet import defer
from twisted.python.components import Componentized
from twisted.python.lockfile import FilesystemLock

from obsd import events, registry
from obsd.aggregation.ledger import MergeLedger
from obsd.config.loader import config_warnings, load_processor, output_accepts, output_default_kinds
from obsd.config.model import ObsdConfig, OutputConfig
from obsd.daemon.workers import partials_divert, private_outputs
from obsd.delivery.deadletter import DeadLetterFile
from obsd.delivery.flowcontrol import FlowControl
from obsd.delivery.leftovers import find_orphans, spool_sizes
from obsd.delivery.memoryguard import MemoryGuard
from obsd.net.endpoints import DATAGRAM_TYPES, STREAM_TYPES, parse_listener
from obsd.net.handshake import HandshakeDeadlineFactory
from obsd.net.httpguard import HttpGuard, HttpLimits
from obsd.net.listeners import ListenerService
from obsd.net.web import HttpRoot, make_site
from obsd.ops.log import get_logger
from obsd.ops.selfmetrics import SelfMetricsService
from obsd.ops.telemetry import Telemetry
from obsd.ops.throttle import ThrottledLogger
from obsd.outputs.base import Output, OutputContext
from obsd.pipeline import build_chain
from obsd.pipeline.ingest import IngestLogger
from obsd.pipeline.router import Router
from obsd.twistedtypes import MultiService


@attrs.define
class InputContext:
    """What topology hands every input."""

    name: str
    reactor: Any
    telemetry: Telemetry
    flow_control: FlowControl
    throttle: ThrottledLogger
    #: this input's ingest logger, bound with ``source = name``
    ingest: IngestLogger
    http: HttpRoot
    config: ObsdConfig
    #: make another ingest logger with other bound context (the relay input needs none)
    make_ingest: Any = None
    #: ``wait_durable()``: fires once what was accepted so far is on disk, where
    #: ``[daemon] durability = "sync"``; at once otherwise (HTTP inputs answer after it)
    wait_durable: Any = attrs.field(default=lambda: defer.succeed(None))
    #: ``consume(kind, handler)``: the router hands ``handler`` every event of that
    #: kind too (central's StatsD merge takes ``statsd_partial``); returns a stop function
    consume: Any = None
    #: where central's StatsD merge stands (shared by the merging input and the Kafka input)
    merge_ledger: MergeLedger = attrs.Factory(MergeLedger)

    @property
    def clock(self) -> Any:
        return self.reactor

    @property
    def hostname(self) -> str:
        return self.config.hostname

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir

    def listener_services(
        self,
        descriptions: list[str],
        allowed: frozenset[str],
        factory: Any = None,
        datagram: Any = None,
        max_packet_size: int = 65536,
    ) -> list[ListenerService]:
        """One listening service per endpoint string (stream ones get ``factory``).

        A ``systemd:`` socket may be either, so it gets both (when the input takes
        datagrams) and uses the one that fits the socket it is handed.
        """
        services = []
        takes_datagrams = bool(allowed & DATAGRAM_TYPES)
        for description in descriptions:
            listener = parse_listener(description, allowed)
            either = listener.type == "systemd" and takes_datagrams
            services.append(
                ListenerService(
                    self.name,
                    listener,
                    self.reactor,
                    factory=None if listener.is_datagram else factory,
                    datagram=datagram if listener.is_datagram or either else None,
                    max_packet_size=max_packet_size,
                    tls_handshake=self.tls_handshake,
                )
            )
        return services

    def tls_handshake(self, factory: Any) -> Any:
        """``factory`` with a deadline on each TLS handshake (``ssl:`` listeners)."""
        return tls_handshake_deadline(
            factory, self.name, self.config, self.reactor, self.telemetry, self.throttle
        )


def tls_handshake_deadline(
    factory: Any, owner: str, config: ObsdConfig, reactor: Any, telemetry: Any, throttle: Any
) -> Any:
    """Wrap a listener's factory so a TLS handshake must finish in ``tls_handshake_timeout``."""
    timeout = config.daemon.tls_handshake_timeout
    if timeout <= 0:
        return factory
    return HandshakeDeadlineFactory(
        factory, owner=owner, timeout=timeout, reactor=reactor, telemetry=telemetry,
        throttle=throttle,
    )


class _Group(MultiService):
    """A MultiService whose stop waits for every child (they stop in reverse order)."""

    def stopService(self) -> defer.Deferred[Any]:
        # Service's own stop: the children stop below, in order
        super(MultiService, self).stopService()
        results = [defer.maybeDeferred(s.stopService) for s in reversed(list(self))]
        return defer.gatherResults(results, consumeErrors=True)


class ObsdService(MultiService):
    """The daemon: outputs, then inputs; stops inputs first, then drains outputs."""

    def __init__(self, config: ObsdConfig, reactor: Any) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.telemetry = Telemetry()
        self.flow_control = FlowControl()
        self.log = get_logger("obsd")
        self.throttle = ThrottledLogger(get_logger("obsd"), reactor, config.daemon.log_interval)
        self.dead_letter = DeadLetterFile(config.data_dir / "dead-letter.jsonl")
        self.outputs_group = _Group()
        self.inputs_group = _Group()
        self.outputs_group.setServiceParent(self)
        self.inputs_group.setServiceParent(self)
        self.outputs: dict[str, Output] = {}
        #: spool directories with data that no configured output owns, with their bytes
        self.orphan_spools: dict[Path, int] = {}
        self.http_root = HttpRoot()
        self.router: Router | None = None
        self.status: Any = None
        self.taps: Any = None
        self.tail: Any = None
        self.output_context: OutputContext | None = None
        self.reloader: Any = None
        self.log_observer_factory: Any = None
        #: ``[daemon] workers``: the first process's ``WorkerSupervisor``, and the others
        self.supervisor: Any = None
        self.peers: Any = None
        self._lock: FilesystemLock | None = None

    def setServiceParent(self, parent: Any) -> None:
        """Become the app's root; install obsd's log observer unless one is set.

        twistd reads ``ILogObserver`` from the Application before it starts
        logging, so obsd's own JSON lines replace its default text format.
        """
        if self.log_observer_factory is not None and isinstance(parent, Componentized):
            from twisted.logger import ILogObserver

            if parent.getComponent(ILogObserver) is None:
                parent.setComponent(ILogObserver, self.log_observer_factory())
        super().setServiceParent(parent)

    def wait_durable(self) -> defer.Deferred[Any]:
        """With ``durability = "sync"``: fires once every accepted event is on disk."""
        if self.config.daemon.durability != "sync":
            return defer.succeed(None)
        return defer.gatherResults([out.wait_durable() for out in self.outputs.values()])

    def lock_data_dir(self) -> None:
        """Refuse to run where another obsd uses the same ``data_dir``."""
        data_dir = self.config.data_dir
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SystemExit(
                f"obsd: daemon.data_dir: cannot create {str(data_dir)!r}: "
                f"{exc.strerror or exc}"
            ) from None
        lock = FilesystemLock(str(data_dir / "obsd.lock"))
        if not lock.lock():
            raise SystemExit(
                f"obsd: another obsd is running with data_dir {str(data_dir)!r} "
                f"(lock {data_dir / 'obsd.lock'}); two processes never share spools"
            )
        self._lock = lock

    def startService(self) -> None:
        if self.supervisor is not None:
            self.reactor.callWhenRunning(self.supervisor.start)
        self.reactor.addSystemEventTrigger("before", "shutdown", self._note_stopping)
        # now (the real reactor only), so a SIGTERM before the reactor runs stops it
        # cleanly once it does; and again once it runs, since the reactor puts its own
        # handler in place on start
        if sys.modules.get("twisted.internet.reactor") is self.reactor:
            self._take_sigterm()
        self.reactor.callWhenRunning(self._take_sigterm)
        for name, output in self.outputs.items():
            self.log.info("output started", output=name, type=output.type_name)
        super().startService()
        for warning in config_warnings(self.config):
            self.log.warning(warning)
        self.report_orphan_spools()
        self.log.info(
            "obsd started",
            config=self.config.path or "(embedded default)",
            inputs=sorted(self.config.inputs),
            outputs=sorted(self.outputs),
        )

    def switch(self, new: ObsdConfig, outputs: dict[str, Output], routed: dict[str, Any]) -> None:
        """A reload's switch: route by ``new`` to ``routed`` (outputs, or holders standing in
        for them), and run ``new`` with ``outputs`` from here on."""
        self.reroute(new, routed)
        self.outputs = outputs
        self.config = new
        if self.peers is not None:  # a new Prometheus output sums the workers' series too
            from obsd.ops.peers import join_scrapes

            join_scrapes(outputs, self.peers)
        recorder = getattr(self.throttle, "on_report", None)
        if recorder is not None and hasattr(recorder, "outputs"):
            recorder.outputs = frozenset(outputs)

    def reroute(self, config: ObsdConfig, routed: dict[str, Any]) -> None:
        """Route by ``config``'s tables to ``routed`` (never to a worker's private relay)."""
        divert = partials_divert(config, routed)
        private = private_outputs(config)
        routed = {n: out for n, out in routed.items() if n not in private}
        accepts = {n: output_accepts(c) for n, c in config.outputs.items()}
        default_kinds = {n: output_default_kinds(c) for n, c in config.outputs.items()}
        assert self.router is not None  # build_service made it
        self.router.configure(routed, config.routes, accepts, default_kinds)
        if divert is not None:
            self.router.divert_partials(*divert)

    def report_orphan_spools(self) -> None:
        """Spools under data_dir that no configured output reads (removed or renamed):
        named at start and in ``/status`` with their size, never silently left behind."""
        owned = [q.spool_directory for out in self.outputs.values() for q in out.queues.values()]
        self.orphan_spools = find_orphans(self.config.data_dir, owned)
        self.orphan_spools.update(self._spools_of_gone_workers())  # named apart below
        gone = self._spools_of_gone_workers()
        for path, size in sorted(self.orphan_spools.items()):
            if path in gone:
                self.log.warning(
                    "a spool of a worker this run does not start: its events are not sent; "
                    "run once with [daemon] workers set high enough to start it, or delete it",
                    spool=str(path),
                    bytes=size,
                )
                continue
            self.log.warning(
                "a spool no configured output reads: its events are not sent; configure the "
                "output again (same name) to deliver them, or delete the directory",
                spool=str(path),
                bytes=size,
            )

    def _spools_of_gone_workers(self) -> dict[Path, int]:
        """Spools a run with more ``[daemon] workers`` left in ``data_dir/worker-N``."""
        worker = self.config.worker
        if worker is not None and worker.index > 0:
            return {}
        count = 1 if worker is None else worker.count
        found: dict[Path, int] = {}
        for path in Path(self.config.daemon.data_dir).glob("worker-*"):
            index = path.name.removeprefix("worker-")
            if index.isdigit() and int(index) >= count:
                found.update(spool_sizes(path))
        return found

    _stopping = False

    def _note_stopping(self) -> None:
        self._stopping = True

    def _take_sigterm(self) -> None:
        """obsd's own SIGTERM handler, in place of Twisted's (set up once the reactor runs).

        Twisted's records the signal, and twistd re-raises it after the reactor
        stops, so even a drained, orderly stop would end in status -15; and a
        second SIGTERM while outputs drain would call ``reactor.stop()`` again
        (a ``ReactorNotRunning`` traceback).  This one stops the reactor once,
        exits 0, and answers a later SIGTERM with "already stopping".
        """
        if threading.current_thread() is not threading.main_thread():
            return

        def on_sigterm(signum: int, frame: Any) -> None:
            if not self._stopping:
                self._stopping = True
                self.reactor.callFromThread(self.reactor.stop)
                return
            self.reactor.callFromThread(
                self.log.warning,
                "already stopping: outputs drain for up to daemon.shutdown_timeout, then "
                "what is left is written to data_dir",
                shutdown_timeout=self.config.daemon.shutdown_timeout,
            )

        signal.signal(signal.SIGTERM, on_sigterm)

    def stopService(self) -> defer.Deferred[None]:
        # Service's own stop: the children stop below, in order
        super(MultiService, self).stopService()
        self.log.info("stopping: closing inputs, then draining outputs")
        if self.supervisor is not None:
            # the workers first: their last partials reach this process while it merges
            d: defer.Deferred[Any] = self.supervisor.stop()
            d.addBoth(lambda _: self.inputs_group.stopService())
        else:
            d = defer.maybeDeferred(self.inputs_group.stopService)
        d.addBoth(lambda _: self.outputs_group.stopService())
        d.addBoth(self._stopped)
        return d

    def _stopped(self, result: Any) -> None:
        if self.supervisor is not None:
            self.supervisor.close_sockets()
        self.throttle.stop()
        self.dead_letter.close()
        if self._lock is not None and self._lock.locked:
            self._lock.unlock()
        self.log.info("stopped", **{k: v for k, v in self.telemetry.snapshot().items() if v})


def build_output(name: str, out_config: OutputConfig, context: OutputContext) -> Output:
    """One output from its config: what start-up and a reload both call."""
    module = registry.output_module(out_config.type)
    assert module is not None  # the loader refused unknown types
    return module.build_output(name, out_config, context)


def build_service(config: ObsdConfig, reactor: Any, *, lock: bool = True) -> ObsdService:
    """Build the whole daemon for ``config`` on ``reactor`` (nothing listens until started)."""
    service = ObsdService(config, reactor)
    if lock:
        service.lock_data_dir()
    output_context = OutputContext(
        clock=reactor,
        telemetry=service.telemetry,
        dead_letter=service.dead_letter,
        flow_control=service.flow_control,
        throttle=service.throttle,
        reactor=reactor,
        data_dir=config.data_dir,
        hostname=config.hostname,
        random=random.random,
        shutdown_timeout=config.daemon.shutdown_timeout,
        sync_interval=config.daemon.sync_interval,
        fsync=config.daemon.durability == "sync",
        http=service.http_root,
        worker=config.worker.index if config.worker is not None else 0,
        shared_dir=Path(config.daemon.data_dir) if config.worker is not None else None,
    )
    service.output_context = output_context
    accepts: dict[str, frozenset[str]] = {}
    default_kinds: dict[str, frozenset[str]] = {}
    for name, out_config in config.outputs.items():
        output = build_output(name, out_config, output_context)
        output.setServiceParent(service.outputs_group)
        service.outputs[name] = output
        accepts[name] = output_accepts(out_config)
        default_kinds[name] = output_default_kinds(out_config)
    router = Router({}, [], accepts, default_kinds, service.telemetry)
    service.router = router
    service.reroute(config, service.outputs)
    processor_errors = service.telemetry.counter("obsd.pipeline.processor_errors")

    def report_processor_error(name: str, exc: BaseException, event: dict[str, Any]) -> None:
        service.throttle.error(
            f"processor:{name}",
            "user processor raised; the event goes on unchanged",
            processor=name,
            error=repr(exc),
            event_id=event.get(events.ID),
        )

    chain = build_chain(
        config.hostname,
        reactor.seconds,
        [(spec, load_processor(spec)) for spec in config.pipeline.processors],
        processor_errors.inc,
        report_processor_error,
    )

    def make_ingest(**context: Any) -> IngestLogger:
        return IngestLogger(router, chain, context)

    merge_ledger = MergeLedger()
    for name, in_config in config.inputs.items():
        input_module = registry.input_module(in_config.type)
        assert input_module is not None
        context = InputContext(
            name=name,
            reactor=reactor,
            telemetry=service.telemetry,
            flow_control=service.flow_control,
            throttle=service.throttle,
            ingest=make_ingest(source=name),
            http=service.http_root,
            config=config,
            make_ingest=make_ingest,
            wait_durable=service.wait_durable,
            consume=router.consume,
            merge_ledger=merge_ledger,
        )
        built = input_module.build_input(name, in_config, context)
        IService(built).setServiceParent(service.inputs_group)
    if config.daemon.max_memory:
        MemoryGuard(
            config.daemon.max_memory, service.flow_control, service.telemetry, reactor
        ).setServiceParent(service.outputs_group)
    # with workers, worker 0 flushes every worker's numbers, added up
    later_worker = config.worker is not None and config.worker.index > 0
    self_metrics = SelfMetricsService(
        service.telemetry, make_ingest(source="obsd"), reactor,
        0.0 if later_worker else config.daemon.metrics_interval,
    )
    self_metrics.setServiceParent(service.inputs_group)
    _mount_status(service, make_ingest)
    if config.worker is not None:
        from obsd.ops.peers import mount_peers, summed_numbers

        peers = mount_peers(service, service.status)
        service.peers = service.tail.peers = peers
        self_metrics.numbers = lambda: summed_numbers(service.telemetry, peers)
    if config.http.listen:
        guard = HttpGuard(
            HttpLimits.of(config.http), service.telemetry, service.throttle, "obsd.http."
        )
        site = make_site(service.http_root, reactor, guard)
        for description in config.http.listen:
            listener = parse_listener(description, STREAM_TYPES)
            ListenerService(
                "http", listener, reactor, factory=site,
                tls_handshake=lambda factory: tls_handshake_deadline(
                    factory, "http", config, reactor, service.telemetry, service.throttle
                ),
            ).setServiceParent(service.inputs_group)
    return service


def _mount_status(service: ObsdService, make_ingest: Any) -> None:
    """Health, status, metrics, the status page, the live tail and derived metrics."""
    from obsd.ops.status import mount_status
    from obsd.ops.tail import TailHub, TailResource, TapSet

    service.status = mount_status(service)
    service.taps = TapSet(service.router)
    hub = TailHub(service.taps, service.telemetry)
    hub.setServiceParent(service.inputs_group)
    service.tail = TailResource(hub)
    service.http_root.mount(("api", "obsd", "v1", "tail"), service.tail)
    from obsd.daemon.reload import Reloader

    service.reloader = Reloader(service)
    service.reloader.setServiceParent(service.inputs_group)
    derived = service.config.derived_metrics
    if derived.enabled:
        from obsd.aggregation.derived import DerivedMetrics

        DerivedMetrics(
            derived,
            service.taps,
            make_ingest(source="obsd.derived"),
            service.reactor,
            service.telemetry,
        ).setServiceParent(service.inputs_group)
