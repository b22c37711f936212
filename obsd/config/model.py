"""What obsd's configuration holds: the frozen tree of sections, each setting declared once.

Every key is a ``setting`` (default, type, check, help text) on these classes;
the docs' reference is generated from them.  Input and output types add their
own config classes (see ``obsd.registry``).  ``obsd.config.loader`` reads TOML
into this tree and runs the checks that span it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal

import attrs

from obsd.config.schema import at_least, fraction, setting
from obsd.net.endpoints import STREAM_TYPES, Listener, parse_listener

MiB = 1024 * 1024

WhenFull = Literal["block", "drop_newest", "drop_oldest"]


@attrs.frozen(kw_only=True)
class DaemonConfig:
    """``[daemon]``: process-wide settings."""

    data_dir: str = setting(
        "./obsd-data", help="where spools, the dead-letter file and the lock live"
    )
    hostname: str = setting("", help="the host name put on events; empty means the machine's")
    shutdown_timeout: float = setting(
        10.0, check=at_least(0), help="seconds SIGTERM waits for output queues to drain",
        client_sees="on SIGTERM, memory queues still holding events after this long count them as "
                    "dropped.shutdown; disk queues keep them for the next start",
    )
    log_format: Literal["auto", "json", "console"] = setting(
        "auto", help="obsd's own log lines: JSON, or console rendering (auto: console on a TTY)"
    )
    log_level: Literal["debug", "info", "warning", "error", "critical"] = setting(
        "info", help="the lowest level of obsd's own log lines that is written"
    )
    log_interval: float = setting(
        10.0, check=at_least(0.1), help="seconds between repeats of one kind of throttled warning"
    )
    sync_interval: float = setting(
        1.0,
        check=at_least(0.01),
        help="seconds between writes of disk buffers to disk: what kill -9 can lose",
    )
    durability: Literal["async", "sync"] = setting(
        "async",
        help="sync: HTTP ingest answers only once the event is on disk (fsync'd)",
    )
    max_memory: int = setting(
        0,
        check=at_least(0),
        help="RSS ceiling in bytes: near it inputs are paused (503 on HTTP); 0: no ceiling",
        client_sees="at 90 % of it stream senders are paused (their writes wait) and HTTP "
                    "senders get 503 with Retry-After, until RSS is under 80 %; UDP is still read",
    )
    tls_handshake_timeout: float = setting(
        10.0, check=at_least(0),
        help="seconds a client of any ssl: listener has to finish the TLS handshake; 0: no limit",
        client_sees="the connection is reset; counted in obsd.tls.handshake_timeouts",
    )
    metrics_interval: float = setting(
        60.0,
        check=at_least(0),
        help="seconds between flushes of obsd's own numbers as obsd.* metric events; 0: never",
    )
    workers: int | Literal["auto"] = setting(
        1,
        check=lambda v: None if v == "auto" or v >= 1 else f"must be at least 1 or 'auto', got {v}",
        help="processes that share the listeners (auto: one per core); each has its own "
        "queues and spools under data_dir/worker-N (docs/explanation/workers.rst)",
    )

    @property
    def worker_count(self) -> int:
        """``workers`` as a number (``"auto"``: the cores this process may run on)."""
        if self.workers == "auto":
            return max(1, len(os.sched_getaffinity(0)))
        return int(self.workers)


@attrs.frozen(kw_only=True)
class HttpConfig:
    """``[http]``: the one HTTP server; Sentry and relay ingest mount on it."""

    listen: list[str] = setting(factory=list, help="stream endpoint strings")
    max_connections: int = setting(
        1024, check=at_least(1), help="open HTTP connections at most, from all senders",
        client_sees="503 'Service Unavailable' with Retry-After, then the connection is closed",
    )
    max_connections_per_peer: int = setting(
        64, check=at_least(1),
        help="open HTTP connections at most from one address (unix sockets: one user)",
        client_sees="429 'Too Many Requests' with Retry-After, then the connection is closed",
    )
    header_timeout: float = setting(
        10.0, check=at_least(0.1),
        help="seconds for a request's line and headers to arrive, counted from its first byte "
             "(for a new connection, from the connect)",
        client_sees="408 'Request Timeout', then the connection is closed (a connection that "
                    "sent nothing is closed without an answer)",
    )
    body_timeout: float = setting(
        30.0, check=at_least(0.1),
        help="seconds a request body may go without a byte arriving",
        client_sees="408 'Request Timeout', then the connection is closed",
    )
    idle_timeout: float = setting(
        60.0, check=at_least(0.1),
        help="seconds a kept-alive connection may wait between requests",
        client_sees="the connection is closed (clients open a new one)",
    )


@attrs.frozen(kw_only=True)
class PipelineConfig:
    """``[pipeline]``: user processors that run after obsd's normalisation."""

    processors: list[str] = setting(
        factory=list, help='"module:callable" structlog processors, run in order'
    )


@attrs.frozen(kw_only=True)
class DerivedMetricsConfig:
    """``[derived_metrics]``: counters of the log events that flow through obsd."""

    enabled: bool = setting(False, help="count events per source and level (and dotted name)")
    flush_interval: float = setting(
        10.0, check=at_least(0.1), help="seconds between flushes of the counts as metric events"
    )
    prefix: str = setting("events", help="first part of every derived counter's name")
    event_names: bool = setting(
        True, help="also count each dotted event name (user.login -> PREFIX.name.user.login)"
    )
    max_series: int = setting(
        10_000, check=at_least(1), help="distinct counters at most; more are dropped and counted",
        client_sees="nothing; counts of new names past it are dropped and the gauge "
                    "obsd.derived.dropped says how many",
    )


@attrs.frozen(kw_only=True)
class RouteMatch:
    """What a route matches; every given condition must hold."""

    kind: list[str] = setting(
        factory=list, help="event kinds (log, error, metric, sentry, span, statsd_partial)"
    )
    source: list[str] = setting(factory=list, help="input names")
    level: str = setting("", help="minimum level")
    event: str = setting("", help="glob on the event field, e.g. 'user.*'")


@attrs.frozen(kw_only=True)
class RouteConfig:
    """``[[routes]]``: events that match go to ``outputs``."""

    match: RouteMatch = setting(factory=RouteMatch)
    outputs: list[str] = setting(factory=list, help="output names")


@attrs.frozen(kw_only=True)
class BufferConfig:
    """``[outputs.NAME.buffer]``: the bounded queue every output owns."""

    type: Literal["memory", "disk"] = setting(
        "memory", help="memory, or disk: written ahead to a spool under data_dir/spool"
    )
    max_events: int = setting(
        100_000, check=at_least(1), help="events held at most",
        client_sees="when full: with block, stream senders are paused and HTTP senders get 503 "
                    "with Retry-After; with drop_newest or drop_oldest events are dropped and "
                    "counted (dropped.full)",
    )
    max_bytes: int = setting(
        64 * MiB, check=at_least(1024), help="encoded bytes held at most (on disk, for disk)",
        client_sees="the same as max_events, counted in encoded bytes (for a disk buffer, bytes "
                    "on disk)",
    )
    when_full: WhenFull = setting(
        "block",
        help="block: pause stream inputs and answer 503 on HTTP; drop_newest; drop_oldest",
    )
    high_watermark: float = setting(
        0.8, check=fraction, help="fraction of a limit at which inputs are asked to pause"
    )
    memory_events: int = setting(
        10_000, check=at_least(1), help="disk buffers: events kept in memory for sending"
    )
    memory_bytes: int = setting(
        16 * MiB, check=at_least(1024), help="disk buffers: bytes kept in memory for sending",
        client_sees="nothing; a disk buffer keeps less in memory and reads the rest back from its "
                    "spool",
    )
    segment_bytes: int = setting(
        16 * MiB, check=at_least(4096), help="disk buffers: size of one spool segment file",
        client_sees="nothing; the spool is written and deleted in files of this size",
    )
    low_watermark: float = setting(
        0.5, check=fraction, help="fraction of a limit at which they resume (below high_watermark)"
    )


@attrs.frozen(kw_only=True)
class InputConfig:
    """What every ``[inputs.NAME]`` table has."""

    type: str = setting("", help="the input type; defaults to NAME")


@attrs.frozen(kw_only=True)
class ListeningInputConfig(InputConfig):
    """An input with its own listeners."""

    listen: list[str] = setting(factory=list, help="endpoint strings")


@attrs.frozen(kw_only=True)
class StreamInputConfig(ListeningInputConfig):
    """An input that takes stream connections: its fair-share limits (``net/slots.py``)."""

    max_connections: int = setting(
        1024, check=at_least(1), help="open stream connections at most; more are refused",
        client_sees="a connection past it is reset at once (counted as refused, logged)",
    )
    max_connections_per_peer: int = setting(
        64, check=at_least(1),
        help="open stream connections one sender may hold (an IP; a unix peer by its uid)",
        client_sees="a connection past it is reset at once (the sender sees a refused "
                    "connection); counted as refused and logged (syslog also counts the bytes "
                    "and lines it sent)",
    )
    idle_timeout: float = setting(
        600.0, check=at_least(0), help="seconds a silent connection stays open; 0 = forever",
        client_sees="a connection silent this long is closed (counted as idle_timeouts); senders "
                    "such as rsyslog reconnect",
    )


@attrs.frozen(kw_only=True)
class OutputConfig:
    """What every ``[outputs.NAME]`` table has: the queue, batching and retry."""

    type: str = setting("", help="the output type; defaults to NAME")
    buffer: BufferConfig = setting(factory=BufferConfig)
    batch_size: int = setting(
        500, check=at_least(1), help="events per batch at most",
        client_sees="the destination gets at most this many events per request or write",
    )
    batch_bytes: int = setting(
        MiB, check=at_least(1), help="encoded bytes per batch at most",
        client_sees="the destination gets requests of at most this many encoded bytes",
    )
    batch_timeout: float = setting(
        1.0, check=at_least(0), help="seconds the first event of a batch waits for more",
        client_sees="a quiet stream reaches the destination at most this long after its first "
                    "event",
    )
    max_in_flight: int = setting(
        1, check=at_least(1), help="batches sent at once",
        client_sees="the destination sees at most this many requests from the output at once",
    )
    retry_initial: float = setting(0.5, check=at_least(0.001), help="first retry delay, seconds")
    retry_max: float = setting(
        60.0, check=at_least(0.001), help="retry delay cap, seconds",
        client_sees="a failing destination is tried again at least this often (with jitter, d/2 "
                    "to d)",
    )
    failing_after: float = setting(
        60.0, check=at_least(0), help="seconds of failure before health says failing"
    )


@attrs.frozen(kw_only=True)
class HttpOutputConfig(OutputConfig):
    """An output that sends over HTTP (``obsd.outputs.http.HttpOutput``): its deadlines.

    Outputs whose answer to a timeout differs (failover to the next node or url)
    declare the key again with their own ``client_sees``.
    """

    connect_timeout: float = setting(
        5.0, check=at_least(0.1), help="seconds to connect",
        client_sees="a server that does not accept a connection within it fails the request; "
                    "the batch stays queued and is retried with backoff",
    )
    request_timeout: float = setting(
        30.0, check=at_least(0.1), help="seconds one request may take",
        client_sees="a request taking longer is cancelled and retried with backoff",
    )


@attrs.frozen(kw_only=True)
class ObsdConfig:
    """The whole configuration."""

    daemon: DaemonConfig = attrs.field(factory=DaemonConfig)
    http: HttpConfig = attrs.field(factory=HttpConfig)
    pipeline: PipelineConfig = attrs.field(factory=PipelineConfig)
    derived_metrics: DerivedMetricsConfig = attrs.field(factory=DerivedMetricsConfig)
    inputs: dict[str, InputConfig] = attrs.field(factory=dict)
    outputs: dict[str, OutputConfig] = attrs.field(factory=dict)
    routes: list[RouteConfig] = attrs.field(factory=list)
    #: the file it came from, or None for the embedded default
    path: str | None = None
    #: which of ``[daemon] workers`` processes runs this (``obsd.daemon.workers.WorkerRole``);
    #: None for a single process
    worker: Any = None

    @property
    def hostname(self) -> str:
        return self.daemon.hostname or socket.gethostname()

    @property
    def data_dir(self) -> Path:
        """Where this process keeps spools and its lock: worker N > 0 under ``worker-N``."""
        base = Path(self.daemon.data_dir)
        if self.worker is not None and self.worker.index > 0:
            return base / f"worker-{self.worker.index}"
        return base

    def http_listeners(self) -> list[Listener]:
        return [parse_listener(d, STREAM_TYPES) for d in self.http.listen]
