"""Reading a config: TOML to the typed ``ObsdConfig``, then the checks across sections.

``obsd.config.model`` declares what a config holds (each setting once, with
its default, check and help); this module builds it from TOML text or a file,
asks each input and output module to check its own section, and reports every
problem as ``key.path: reason`` lines before anything starts.
"""

from __future__ import annotations

import fnmatch
import importlib
import os
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from obsd import events, registry
from obsd.config.model import (
    DaemonConfig,
    DerivedMetricsConfig,
    HttpConfig,
    InputConfig,
    ObsdConfig,
    OutputConfig,
    PipelineConfig,
    RouteConfig,
)
from obsd.config.schema import Problems, build, redacted
from obsd.errors import ConfigError
from obsd.net.endpoints import STREAM_TYPES, Listener, parse_listener

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
            if isinstance(built, RouteConfig):  # attrs.NOTHING when refused
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
    # build gives attrs.NOTHING when the table was refused
    return built if isinstance(built, InputConfig | OutputConfig) else None


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
        # an input without listeners mounts on [http], unless it says otherwise (Kafka)
        if getattr(module, "MOUNTS_ON_HTTP", not allowed):
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
        output_module = registry.output_module(out.type)
        assert output_module is not None
        check = getattr(output_module, "check_config", None)
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
    count = config.daemon.worker_count
    if count > 1:
        lines.append(
            f"workers: {count} processes share the listeners (worker N > 0 keeps its spools "
            f"in data_dir/worker-N; StatsD is merged by worker 0)"
        )
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
