"""The first process of ``[daemon] workers = N``: binds the listeners, starts and tends the rest.

The first process is worker 0 itself (it runs a whole pipeline and merges the
workers' StatsD partials) and the parent of workers 1..N-1, each a
``python -m obsd.daemon.worker_main`` with its sockets as inherited descriptors,
its role in ``OBSD_WORKER`` and a pipe on its stdin whose end tells it the
parent is gone.  The parent writes the workers' log lines into its own log,
passes SIGHUP on, restarts a worker that dies (its sockets stay open here, so
its connections wait in the backlog), and on stop sends SIGTERM to every
worker and waits for them to drain before it stops its own inputs: the
workers' last partials reach worker 0 while it still merges.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import sys
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from obsd.config.model import ObsdConfig
from obsd.daemon.workers import ENVIRON, WorkerRole
from obsd.net.endpoints import DATAGRAM_TYPES, STREAM_TYPES, parse_listener
from obsd.net.shared import bind_for_workers, close_all, key, share
from obsd.ops.log import get_logger

#: seconds before a worker that died is started again, doubling while it keeps dying young
RESTART_DELAY = 1.0
RESTART_DELAY_MAX = 30.0
#: a worker that lived this long before dying starts again after RESTART_DELAY
STABLE_AFTER = 10.0
#: seconds past ``shutdown_timeout`` a worker gets to exit after SIGTERM before SIGKILL
KILL_GRACE = 10.0

_raw = Logger(namespace="obsd.worker")


def _write_raw(line: str) -> None:
    """A worker's rendered line, into this process's log as it is."""
    _raw.info("{obsd_raw_line}", obsd_raw_line=line)


def listen_descriptions(config: ObsdConfig) -> list[tuple[str, str]]:
    """Every listener of the config, ``(owner, description)``: ``[http]``'s and each input's."""
    found = [("http", d) for d in config.http.listen]
    for name, cfg in config.inputs.items():
        found.extend((name, d) for d in getattr(cfg, "listen", []))
    return found


@attrs.define
class WorkerPlan:
    """The sockets of every worker and the roles they run."""

    count: int
    #: per worker: listener name (``obsd.net.shared.key``) -> socket
    sockets: list[dict[str, socket.socket]]
    ports: tuple[int, ...]
    token: str
    log_format: str

    @classmethod
    def bind(cls, config: ObsdConfig, count: int, log_format: str = "json") -> WorkerPlan:
        """Bind every listener for ``count`` workers; exit clearly when one cannot be bound."""
        sockets: list[dict[str, socket.socket]] = [{} for _ in range(count)]
        for owner, description in listen_descriptions(config):
            listener = parse_listener(description, STREAM_TYPES | DATAGRAM_TYPES)
            try:
                bound = bind_for_workers(listener, count)
            except (OSError, ValueError) as exc:
                for per_worker in sockets:
                    close_all(per_worker.values())
                reason = getattr(exc, "strerror", None) or str(exc)
                raise SystemExit(f"obsd: cannot listen on {description!r}: {reason}") from None
            for index, sock in enumerate(bound):
                sockets[index][key(owner, description)] = sock
        ports = []
        for index in range(count):
            private = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            private.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            private.bind(("127.0.0.1", 0))
            private.listen(128)
            private.setblocking(False)
            ports.append(private.getsockname()[1])
            sockets[index][key("http", f"tcp:{ports[-1]}:interface=127.0.0.1")] = private
        return cls(count, sockets, tuple(ports), secrets.token_urlsafe(24), log_format)

    def role(self, index: int, fds: dict[str, int] | None = None) -> WorkerRole:
        return WorkerRole(
            index=index, count=self.count, ports=self.ports, token=self.token,
            fds=fds or {}, log_format=self.log_format,
        )

    def share_own(self) -> None:
        """Worker 0 (this process) adopts its sockets instead of binding."""
        for name, sock in self.sockets[0].items():
            share(name, sock.fileno())


class WorkerProcess(ProcessProtocol):
    """One worker's pipes: its log lines into ours, its end to the supervisor."""

    def __init__(self, supervisor: WorkerSupervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self._partial = {1: b"", 2: b""}

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        lines = (self._partial.get(childFD, b"") + data).split(b"\n")
        self._partial[childFD] = lines.pop()
        for line in lines:
            if line:
                self.supervisor.write_line(line.decode("utf-8", "replace"))

    def processEnded(self, reason: Failure) -> None:
        for rest in self._partial.values():
            if rest:
                self.supervisor.write_line(rest.decode("utf-8", "replace"))
        self.supervisor.ended(self.index, reason)


class WorkerSupervisor:
    """Starts workers 1..N-1, restarts them, passes signals on, stops them first."""

    def __init__(
        self,
        plan: WorkerPlan,
        config_path: str | None,
        reactor: Any,
        shutdown_timeout: float,
        telemetry: Any = None,
        write_line: Callable[[str], None] | None = None,
    ) -> None:
        self.plan = plan
        self.config_path = config_path
        self.reactor = reactor
        self.shutdown_timeout = shutdown_timeout
        self.write_line = write_line or _write_raw
        self.processes: dict[int, Any] = {}
        self._started_at: dict[int, float] = {}
        self._delay: dict[int, float] = {}
        self._stopping = False
        self._all_ended: defer.Deferred[None] | None = None
        self._log = get_logger("obsd.workers")
        self._restarts = telemetry.counter("obsd.workers.restarts") if telemetry else None
        if telemetry is not None:
            telemetry.gauge("obsd.workers.running", lambda: 1 + len(self.processes))

    def start(self) -> None:
        for index in range(1, self.plan.count):
            self.spawn(index)

    def spawn(self, index: int) -> None:
        if self._stopping:
            return
        child_fds: dict[int, Any] = {0: "w", 1: "r", 2: "r"}
        fds: dict[str, int] = {}
        for n, (name, sock) in enumerate(self.plan.sockets[index].items(), start=3):
            child_fds[n] = sock.fileno()
            fds[name] = n
        env = dict(os.environ)
        env[ENVIRON] = self.plan.role(index, fds).to_json()
        args = [sys.executable, "-m", "obsd.daemon.worker_main"]
        if self.config_path:
            args += ["--config", self.config_path]
        process = self.reactor.spawnProcess(
            WorkerProcess(self, index), sys.executable, args, env=env, childFDs=child_fds
        )
        self.processes[index] = process
        self._started_at[index] = self.reactor.seconds()
        self._log.info("worker started", worker=index, pid=process.pid)

    def ended(self, index: int, reason: Failure) -> None:
        self.processes.pop(index, None)
        code = getattr(reason.value, "exitCode", None)
        sig = getattr(reason.value, "signal", None)
        if self._stopping:
            self._log.info("worker stopped", worker=index, exit_code=code, signal=sig)
            if not self.processes and self._all_ended is not None:
                done, self._all_ended = self._all_ended, None
                done.callback(None)
            return
        lived = self.reactor.seconds() - self._started_at.get(index, 0.0)
        delay = RESTART_DELAY if lived >= STABLE_AFTER else min(
            RESTART_DELAY_MAX, self._delay.get(index, RESTART_DELAY / 2) * 2
        )
        self._delay[index] = delay
        if self._restarts is not None:
            self._restarts.inc()
        self._log.error(
            "worker exited; starting it again (its connections wait in the backlog)",
            worker=index, exit_code=code, signal=sig, restart_in=delay,
        )
        self.reactor.callLater(delay, self.spawn, index)

    def signal_all(self, name: str) -> None:
        """Pass a signal (``"HUP"``) to every running worker."""
        for process in list(self.processes.values()):
            # one that has just exited raises here: its processEnded follows
            with contextlib.suppress(Exception):
                process.signalProcess(name)

    def stop(self) -> defer.Deferred[None]:
        """SIGTERM every worker; fires once all have exited (SIGKILL after the grace)."""
        self._stopping = True
        if not self.processes:
            return defer.succeed(None)
        self._all_ended = defer.Deferred()
        self.signal_all("TERM")
        kill = self.reactor.callLater(
            self.shutdown_timeout + KILL_GRACE, self.signal_all, "KILL"
        )
        done = self._all_ended

        def cancel_kill(result: Any) -> Any:
            if kill.active():
                kill.cancel()
            return result

        done.addBoth(cancel_kill)
        return done

    def close_sockets(self) -> None:
        for per_worker in self.plan.sockets:
            close_all(per_worker.values())


def resolved_log_format(fmt: str) -> str:
    """What ``auto`` means for the parent's log (workers write alike)."""
    if fmt == "auto":
        return "console" if sys.stdout.isatty() else "json"
    return fmt


__all__ = [
    "WorkerPlan",
    "WorkerProcess",
    "WorkerSupervisor",
    "listen_descriptions",
    "resolved_log_format",
]
