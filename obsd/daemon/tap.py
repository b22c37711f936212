"""``twistd obsd``: the command-line options and ``makeService``.

The only module (with the .tac files) that touches the global reactor.  A bad
config ends the start with every problem listed and exit status 1, never a
traceback.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.python import usage

from obsd.config.loader import load_config, load_default
from obsd.config.model import ObsdConfig
from obsd.errors import ConfigError


class Options(usage.Options):
    """``twistd obsd [--config PATH]``."""

    synopsis = "[--config PATH]"
    longdesc = (
        "Run obsd: StatsD, syslog and Sentry in; Elasticsearch, Graphite, Sentry, "
        "file and console out. Without --config, the embedded default config runs "
        "(everything on 127.0.0.1). Check a config with: obsd check-config PATH"
    )
    optParameters = [
        ["config", "c", None, "Path to the TOML config (default: the embedded config)."],
    ]

    config: ObsdConfig

    def postOptions(self) -> None:
        self.config = read_config_or_exit(self["config"])


def read_config_or_exit(path: str | None) -> ObsdConfig:
    """Load the config; on problems print them all and exit 1."""
    try:
        return load_config(path) if path else load_default()
    except ConfigError as exc:
        where = path or "the embedded default config"
        sys.stderr.write(f"obsd: {where} has {len(exc.problems)} problem(s):\n")
        for line in exc.problems:
            sys.stderr.write(f"  {line}\n")
        sys.stderr.flush()
        raise SystemExit(1) from None


def makeService(options: Options) -> Any:
    """Build the daemon for twistd (or a .tac file)."""
    from twisted.internet import reactor

    from obsd.daemon.topology import build_service
    from obsd.ops.log import configure_logging, make_observer

    config = options.config
    configure_logging(config.daemon.log_level)
    count = config.daemon.worker_count
    if count > 1:
        return _make_workers(options, config, count, reactor)
    service = build_service(config, reactor)
    service.reloader.install_signal = True  # SIGHUP re-reads the config
    parent = getattr(options, "parent", None)
    fmt = config.daemon.log_format
    level = config.daemon.log_level
    service.log_observer_factory = lambda: make_observer(parent, fmt, level)
    return service


def _make_workers(options: Options, config: ObsdConfig, count: int, reactor: Any) -> Any:
    """``[daemon] workers = N``: bind every listener here, run worker 0, start the rest."""
    import structlog

    from obsd.config.loader import load_config
    from obsd.daemon.supervisor import WorkerPlan, WorkerSupervisor, resolved_log_format
    from obsd.daemon.topology import build_service
    from obsd.daemon.workers import for_worker
    from obsd.ops.log import make_observer

    structlog.contextvars.bind_contextvars(worker=0)
    plan = WorkerPlan.bind(config, count, resolved_log_format(config.daemon.log_format))
    role = plan.role(0)
    plan.share_own()
    service = build_service(for_worker(config, role), reactor)
    service.reloader.install_signal = True
    service.reloader.load = lambda path: for_worker(load_config(path), role)
    supervisor = WorkerSupervisor(
        plan, config.path, reactor, config.daemon.shutdown_timeout, service.telemetry
    )
    service.supervisor = supervisor
    service.reloader.on_signal.append(lambda: supervisor.signal_all("HUP"))
    parent = getattr(options, "parent", None)
    fmt = config.daemon.log_format
    level = config.daemon.log_level
    service.log_observer_factory = lambda: make_observer(parent, fmt, level)
    return service
