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
    service = build_service(config, reactor)
    service.reloader.install_signal = True  # SIGHUP re-reads the config
    parent = getattr(options, "parent", None)
    fmt = config.daemon.log_format
    level = config.daemon.log_level
    service.log_observer_factory = lambda: make_observer(parent, fmt, level)
    return service
