"""A worker process of ``[daemon] workers = N`` (started by ``obsd.daemon.supervisor``).

It reads the same config as the first process, turns it into its own
(``obsd.daemon.workers.for_worker``: its ``data_dir/worker-N``, its StatsD
partials to worker 0), adopts the sockets it inherited, and runs until
SIGTERM, or until its parent is gone (its stdin, a pipe from the parent,
ends).  Its log lines go to stdout, which the parent writes into its own log.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from twisted.internet import main as twisted_main
from twisted.internet.interfaces import IReadDescriptor
from zope.interface import implementer


@implementer(IReadDescriptor)
class ParentWatch:
    """Reads the parent's pipe on stdin: its end means the parent is gone, so stop."""

    def __init__(self, on_gone: Any) -> None:
        self._on_gone = on_gone
        self._gone = False
        os.set_blocking(0, False)

    def on_gone(self) -> None:
        if not self._gone:
            self._gone = True
            self._on_gone()

    def fileno(self) -> int:
        return 0

    def doRead(self) -> Any:
        try:
            data = os.read(0, 4096)
        except BlockingIOError:
            return None
        if data:
            return None
        self.on_gone()
        return twisted_main.CONNECTION_DONE

    def connectionLost(self, reason: Any) -> None:
        """The pipe hung up (epoll reports a closed pipe this way, without a read)."""
        self.on_gone()

    def logPrefix(self) -> str:
        return "parent"


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="obsd-worker")
    parser.add_argument("--config", default=None)
    args = parser.parse_args(argv)

    import structlog
    from twisted.application.service import Application, IService
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner

    from obsd.config.loader import load_config
    from obsd.daemon.tap import read_config_or_exit
    from obsd.daemon.topology import build_service
    from obsd.daemon.workers import ENVIRON, WorkerRole, for_worker
    from obsd.net.shared import share
    from obsd.ops.log import ObsdLogObserver, configure_logging

    role = WorkerRole.from_json(os.environ[ENVIRON])
    user_config = read_config_or_exit(args.config)
    config = for_worker(user_config, role)
    configure_logging(config.daemon.log_level)
    structlog.contextvars.bind_contextvars(worker=role.index)
    observer = ObsdLogObserver(sys.stdout, role.log_format, config.daemon.log_level)
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    for name, fd in role.fds.items():
        share(name, fd)
    service = build_service(config, reactor)
    service.reloader.install_signal = True
    service.reloader.load = lambda path: for_worker(load_config(path), role)
    app = Application("obsd-worker")
    service.setServiceParent(app)
    root = IService(app)
    root.privilegedStartService()
    reactor.addSystemEventTrigger("before", "shutdown", root.stopService)
    reactor.callWhenRunning(root.startService)
    reactor.addReader(ParentWatch(lambda: reactor.callLater(0, _stop, reactor)))
    reactor.run()
    return 0


def _stop(reactor: Any) -> None:
    if reactor.running:
        reactor.stop()


if __name__ == "__main__":
    raise SystemExit(run())
