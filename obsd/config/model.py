"""obsd's configuration: one TOML file, loaded once into a frozen tree.

``load_config(path)`` returns an ``ObsdConfig`` or raises ``ConfigError`` listing
every problem as ``key.path: what is wrong``; ``load_default()`` is the embedded
config ``twistd -n obsd`` runs without ``--config``.  Input and output types add
their own config classes (see ``obsd.registry``); the cross-checks here (routes,
port conflicts, kinds an output can take) span the whole tree.
"""

from __future__ import annotations

import fnmatch
import importlib
import os
import socket
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import attrs

from obsd import events, registry
from obsd.config.schema import Problems, at_least, build, redacted, setting
from obsd.errors import ConfigError
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
    metrics_interval: float = setting(
        60.0,
        check=at_least(0),
        help="seconds between flushes of obsd's own numbers as obsd.* metric events; 0: never",
    )


@attrs.frozen(kw_only=True)
class HttpConfig:
    """``[http]``: the one HTTP server; Sentry and relay ingest mount on it."""

    listen: list[str] = setting(factory=list, help="stream endpoint strings")


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
        0.8, help="fraction of a limit at which inputs are asked to pause"
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
    low_watermark: float = setting(0.5, help="fraction of a limit at which they resume")


@attrs.frozen(kw_only=True)
class InputConfig:
    """What every ``[inputs.NAME]`` table has."""

    type: str = setting("", help="the input type; defaults to NAME")


@attrs.frozen(kw_only=True)
class ListeningInputConfig(InputConfig):
    """An input with its own listeners."""

    listen: list[str] = setting(factory=list, help="endpoint strings")


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

    @property
    def hostname(self) -> str:
        return self.daemon.hostname or socket.gethostname()

    @property
    def data_dir(self) -> Path:
        return Path(self.daemon.data_dir)

    def http_listeners(self) -> list[Listener]:
        return [parse_listener(d, STREAM_TYPES) for d in self.http.listen]


_TOP_LEVEL = ("daemon", "http", "pipeline", "derived_metrics", "inputs", "outputs", "routes")


def _kind_problems(values: list[str], path: str, problems: Problems) -> None:
    for value in values:
        if value not in events.KINDS:
            problems.add(path, f"unknown kind {value!r} (kinds: {', '.join(events.KINDS)})")


def parse_config(
    raw: Mapping[str, Any],
    *,
    path: str | None = None,
    env: Mapping[str, str] | None = None,
) -> ObsdConfig:
    """Build and check the config from a parsed TOML document."""
    problems = Problems()
    env = os.environ if env is None else env
    base_dir = Path(path).parent if path else Path.cwd()
    for key in raw:
        if key not in _TOP_LEVEL:
            problems.add(key, f"unknown key (known keys: {', '.join(_TOP_LEVEL)})")

    def table(key: str) -> Mapping[str, Any]:
        value = raw.get(key, {})
        if not isinstance(value, dict):
            problems.add(key, "expected a table")
            return {}
        return value

    daemon = build(DaemonConfig, table("daemon"), "daemon", problems, env=env, base_dir=base_dir)
    http = build(HttpConfig, table("http"), "http", problems, env=env, base_dir=base_dir)
    pipeline = build(
        PipelineConfig, table("pipeline"), "pipeline", problems, env=env, base_dir=base_dir
    )
    derived = build(
        DerivedMetricsConfig,
        table("derived_metrics"),
        "derived_metrics",
        problems,
        env=env,
        base_dir=base_dir,
    )
    inputs: dict[str, InputConfig] = {}
    for name, section in table("inputs").items():
        cfg = _build_component("inputs", name, section, problems, env, base_dir)
        if cfg is not None:
            inputs[name] = cfg  # type: ignore[assignment]
    outputs: dict[str, OutputConfig] = {}
    for name, section in table("outputs").items():
        cfg = _build_component("outputs", name, section, problems, env, base_dir)
        if cfg is not None:
            outputs[name] = cfg  # type: ignore[assignment]
    raw_routes = raw.get("routes", [])
    routes: list[RouteConfig] = []
    if not isinstance(raw_routes, list):
        problems.add("routes", "expected a list of tables ([[routes]])")
    else:
        for i, route in enumerate(raw_routes):
            if not isinstance(route, dict):
                problems.add(f"routes[{i}]", "expected a table")
                continue
            built = build(RouteConfig, route, f"routes[{i}]", problems, env=env, base_dir=base_dir)
            if built is not attrs.NOTHING:
                routes.append(built)
    config = ObsdConfig(
        daemon=daemon,
        http=http,
        pipeline=pipeline,
        derived_metrics=derived,
        inputs=inputs,
        outputs=outputs,
        routes=routes,
        path=path,
    )
    broken = {name for name in table("outputs") if name not in outputs}
    check_config(config, problems, broken_outputs=broken)
    if problems:
        raise ConfigError(problems.lines)
    return config


def _build_component(
    section: str,
    name: str,
    raw: Any,
    problems: Problems,
    env: Mapping[str, str],
    base_dir: Path,
) -> InputConfig | OutputConfig | None:
    path = f"{section}.{name}"
    if not isinstance(raw, dict):
        problems.add(path, "expected a table")
        return None
    type_name = raw.get("type", name)
    module = (
        registry.input_module(type_name)
        if section == "inputs"
        else registry.output_module(type_name)
    )
    if module is None:
        known = registry.INPUT_MODULES if section == "inputs" else registry.OUTPUT_MODULES
        where = f"{path}.type" if "type" in raw else path
        problems.add(
            where,
            f"unknown {section[:-1]} type {type_name!r} (known: {', '.join(sorted(known))})",
        )
        return None
    raw = {**raw, "type": type_name}
    built = build(module.Config, raw, path, problems, env=env, base_dir=base_dir)
    return None if built is attrs.NOTHING else built


def check_config(
    config: ObsdConfig, problems: Problems, broken_outputs: set[str] | frozenset[str] = frozenset()
) -> None:
    """The checks that span the tree: endpoints, conflicts, routes, processors.

    ``broken_outputs`` are outputs that already have a problem of their own:
    routes naming them are not reported again.
    """
    listeners: list[tuple[str, Listener]] = []
    for i, description in enumerate(config.http.listen):
        _add_listener(f"http.listen[{i}]", description, STREAM_TYPES, listeners, problems)
    mounted: dict[str, str] = {}
    for name, cfg in config.inputs.items():
        module = registry.input_module(cfg.type)
        assert module is not None
        allowed = frozenset(module.LISTEN_TYPES)
        check = getattr(module, "check_config", None)
        if check is not None:
            check(name, cfg, config, problems)
        if not allowed:  # mounts on [http]
            if cfg.type in mounted:
                problems.add(
                    f"inputs.{name}",
                    f"only one {cfg.type} input may mount on [http]; "
                    f"inputs.{mounted[cfg.type]} is one already",
                )
            mounted[cfg.type] = name
            if not config.http.listen:
                problems.add(f"inputs.{name}", "mounts on [http], but http.listen is empty")
            continue
        for i, description in enumerate(getattr(cfg, "listen", [])):
            _add_listener(f"inputs.{name}.listen[{i}]", description, allowed, listeners, problems)
    for name, out_config in config.outputs.items():
        out = out_config
        if out.buffer.low_watermark >= out.buffer.high_watermark:
            problems.add(
                f"outputs.{name}.buffer.low_watermark", "must be below buffer.high_watermark"
            )
        module = registry.output_module(out.type)
        assert module is not None
        check = getattr(module, "check_config", None)
        if check is not None:
            check(name, out, config, problems)
    for i, route in enumerate(config.routes):
        path = f"routes[{i}]"
        _kind_problems(route.match.kind, f"{path}.match.kind", problems)
        if route.match.level and route.match.level not in events.LEVEL_ALIASES:
            problems.add(
                f"{path}.match.level",
                f"unknown level {route.match.level!r} (levels: {', '.join(events.LEVELS)})",
            )
        for source in route.match.source:
            if source not in config.inputs and not source.startswith("obsd"):
                problems.add(f"{path}.match.source", f"no input named {source!r}")
        if not route.outputs:
            problems.add(f"{path}.outputs", "a route needs at least one output")
        for out_name in route.outputs:
            routed = config.outputs.get(out_name)
            if routed is None:
                if out_name not in broken_outputs:
                    problems.add(f"{path}.outputs", f"no output named {out_name!r}")
                continue
            accepts = output_accepts(routed)
            for kind in route.match.kind:
                if kind in events.KINDS and kind not in accepts:
                    problems.add(
                        f"{path}.outputs",
                        f"output {out_name!r} (type {routed.type}) cannot take {kind!r} events "
                        f"(it takes: {', '.join(sorted(accepts))})",
                    )
        if route.match.event:
            try:
                fnmatch.translate(route.match.event)
            except Exception as exc:  # noqa: BLE001
                problems.add(f"{path}.match.event", f"bad glob: {exc}")
    for i, spec in enumerate(config.pipeline.processors):
        try:
            load_processor(spec)
        except Exception as exc:  # noqa: BLE001 - user code may raise anything on import
            problems.add(f"pipeline.processors[{i}]", f"cannot load {spec!r}: {exc}")


def _add_listener(
    path: str,
    description: str,
    allowed: frozenset[str],
    listeners: list[tuple[str, Listener]],
    problems: Problems,
) -> None:
    try:
        listener = parse_listener(description, allowed)
    except ValueError as exc:
        problems.add(path, str(exc))
        return
    for other_path, other in listeners:
        if listener.conflicts_with(other):
            problems.add(
                path,
                f"{description!r} would bind the same {listener.family} address and port as "
                f"{other_path} ({other.description!r})",
            )
    listeners.append((path, listener))


def output_accepts(out: OutputConfig) -> frozenset[str]:
    """The kinds an output can take at all."""
    module = registry.output_module(out.type)
    assert module is not None
    return frozenset(module.ACCEPTS)


def output_default_kinds(out: OutputConfig) -> frozenset[str]:
    """The kinds an output takes when no route names it."""
    module = registry.output_module(out.type)
    assert module is not None
    return frozenset(module.DEFAULT_KINDS)


def load_processor(spec: str) -> Any:
    """Import a ``module:callable`` processor."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError("expected 'module:callable'")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{spec!r} is not callable")
    return obj


def load_config(path: str, env: Mapping[str, str] | None = None) -> ObsdConfig:
    """Read and check the TOML file at ``path``."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8: {exc}"]) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: TOML syntax error: {exc}"]) from None
    return parse_config(raw, path=path, env=env)


def default_config_text() -> str:
    """The embedded default config's TOML text."""
    return resources.files("obsd").joinpath("default.toml").read_text()


def load_default(env: Mapping[str, str] | None = None) -> ObsdConfig:
    """The config ``twistd -n obsd`` runs without ``--config``."""
    return parse_config(tomllib.loads(default_config_text()), env=env)


#: said by check-config and logged at start when a config has no inputs
NO_INPUTS = "no inputs configured: obsd will receive nothing"


def config_warnings(config: ObsdConfig) -> list[str]:
    """What a config allows but its author probably did not mean."""
    return [] if config.inputs else [NO_INPUTS]


def summary(config: ObsdConfig) -> str:
    """A readable account of what a config does; secrets shown as ``***``."""
    lines = [f"config: {config.path or '(embedded default)'}"]
    lines.append(f"data_dir: {config.daemon.data_dir}")
    lines.append("listeners:")
    for description in config.http.listen:
        lines.append(f"  http: {description}")
    for name, cfg in config.inputs.items():
        for description in getattr(cfg, "listen", []):
            lines.append(f"  {name} ({cfg.type}): {description}")
        if not getattr(cfg, "listen", None):
            lines.append(f"  {name} ({cfg.type}): mounted on [http]")
    lines.append("outputs:")
    for name, out in config.outputs.items():
        settings = redacted(out)
        defaults = redacted(type(out)(type=out.type))
        shown = {k: v for k, v in settings.items() if k != "type" and v != defaults.get(k)}
        details = ", ".join(f"{k}={v}" for k, v in sorted(shown.items()) if _short(v))
        lines.append(f"  {name} ({out.type}){': ' + details if details else ''}")
    lines.append("routes:")
    if not config.routes:
        lines.append("  (none: each event goes to every output that takes its kind by default)")
        for name, out in config.outputs.items():
            kinds = ", ".join(sorted(output_default_kinds(out)))
            lines.append(f"  {name} gets: {kinds}")
    for i, route in enumerate(config.routes):
        match = redacted(route.match)
        conditions = " ".join(f"{k}={v}" for k, v in match.items() if v) or "everything"
        lines.append(f"  [{i}] {conditions} -> {', '.join(route.outputs)}")
    return "\n".join(lines)


def _short(value: Any) -> bool:
    return len(repr(value)) <= 80
