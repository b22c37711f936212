"""Turn raw TOML tables into frozen attrs config objects, collecting *every* problem.

Each config class is an ``attrs.frozen`` class whose annotations say what a key
takes.  ``build()`` walks the raw dict, converts each value, and records every
problem as ``key.path: what is wrong`` instead of stopping at the first one, so
``check-config`` can list them all.  Fields made with ``setting(secret=True)``
get a ``<name>_file`` twin and are never echoed; ``${VAR}`` in any string is
replaced from the environment.
"""

from __future__ import annotations

import os
import re
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import attrs

T = TypeVar("T")

_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
SECRET_PLACEHOLDER = "***"

#: A check receives the converted value and returns a problem text or None.
Check = Callable[[Any], str | None]


def setting(
    default: Any = attrs.NOTHING,
    *,
    factory: Callable[[], Any] | None = None,
    secret: bool = False,
    check: Check | None = None,
    help: str = "",  # noqa: A002 - the natural name for a key's description
    client_sees: str = "",
) -> Any:
    """An attrs field with obsd's metadata (secret, extra check, help text).

    ``client_sees`` is for limits (``max_*``, ``*_timeout``, ``*_size``, ...): what a
    sender or a destination sees when the limit is reached; the docs' "Limits" page
    is generated from it.
    """
    metadata = {"secret": secret, "check": check, "help": help, "client_sees": client_sees}
    if factory is not None:
        return attrs.field(factory=factory, metadata=metadata)
    return attrs.field(default=default, metadata=metadata)


def fraction(value: Any) -> str | None:
    """A check that a number is a fraction of a limit: above 0, at most 1."""
    if not 0 < value <= 1:
        return f"must be above 0 and at most 1, got {value}"
    return None


def at_least(minimum: float) -> Check:
    """A check that a number is at least ``minimum``."""

    def check(value: Any) -> str | None:
        if value < minimum:
            return f"must be at least {minimum}, got {value}"
        return None

    check.minimum = minimum  # type: ignore[attr-defined]  # read by the generated reference
    return check


@attrs.define
class Problems:
    """The problems found so far, in the order found."""

    lines: list[str] = attrs.field(factory=list)

    def add(self, path: str, message: str) -> None:
        self.lines.append(f"{path}: {message}")

    def __bool__(self) -> bool:
        return bool(self.lines)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if tp is str:
        return "a string"
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin is list:
        return "a list"
    if origin is dict:
        return "a table"
    if attrs.has(tp):
        return "a table"
    return str(tp)


def substitute_env(text: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    """Replace ``${VAR}`` from ``env``; return the text and the missing names."""
    missing: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            missing.append(name)
            return ""
        return env[name]

    return _ENV_VAR.sub(replace, text), missing


class _Converter:
    def __init__(self, problems: Problems, env: Mapping[str, str], base_dir: Path) -> None:
        self.problems = problems
        self.env = env
        self.base_dir = base_dir

    def convert(self, value: Any, tp: Any, path: str, *, secret: bool = False) -> Any:
        """Convert ``value`` to ``tp``; on failure record a problem and return ``attrs.NOTHING``."""
        origin = get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            options = [a for a in get_args(tp) if a is not type(None)]
            every = " or ".join(_type_name(o) for o in options)
            for option in options:
                if _fits(value, option):
                    if (
                        get_origin(option) is Literal
                        and value not in get_args(option)
                        and "${" not in value  # ${VAR} is substituted by convert
                    ):
                        # a string, but not one of the words: name every option
                        return self._wrong(path, value, every, secret)
                    return self.convert(value, option, path, secret=secret)
            return self._wrong(path, value, every, secret)
        if origin is Literal:
            if isinstance(value, str):
                value = self._env(value, path)
            if value in get_args(tp):
                return value
            return self._wrong(path, value, _type_name(tp), secret)
        if tp is Any:
            return value
        if tp is str:
            if isinstance(value, str):
                return self._env(value, path)
            return self._wrong(path, value, "a string", secret)
        if tp is bool:
            if isinstance(value, bool):
                return value
            return self._wrong(path, value, "true or false", secret)
        if tp is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            return self._wrong(path, value, "an integer", secret)
        if tp is float:
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
            return self._wrong(path, value, "a number", secret)
        if origin is list:
            (item_tp,) = get_args(tp)
            if isinstance(value, str | int | float) and not attrs.has(item_tp):
                value = [value]  # a lone value where a list is expected is a list of one
            if not isinstance(value, list):
                return self._wrong(path, value, "a list", secret)
            items = [self.convert(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
            return [i for i in items if i is not attrs.NOTHING]
        if origin is dict:
            _key_tp, value_tp = get_args(tp)
            if not isinstance(value, dict):
                return self._wrong(path, value, "a table", secret)
            return {
                k: self.convert(v, value_tp, f"{path}.{k}")
                for k, v in value.items()
            }
        if attrs.has(tp):
            if not isinstance(value, dict):
                return self._wrong(path, value, "a table", secret)
            return self.build(tp, value, path)
        raise TypeError(f"obsd.config.schema cannot convert to {tp!r}")  # a bug in a config class

    def _env(self, text: str, path: str) -> str:
        if "${" not in text:
            return text
        result, missing = substitute_env(text, self.env)
        for name in missing:
            self.problems.add(path, f"environment variable {name} is not set")
        return result

    def _wrong(self, path: str, value: Any, expected: str, secret: bool) -> Any:
        shown = SECRET_PLACEHOLDER if secret else repr(value)
        self.problems.add(path, f"expected {expected}, got {shown}")
        return attrs.NOTHING

    def build(self, cls: type[T], raw: Mapping[str, Any], path: str) -> T:
        """Build ``cls`` from ``raw``; missing or bad keys fall back to defaults."""
        klass: Any = cls
        attrs.resolve_types(klass)
        fields = {f.name: f for f in attrs.fields(klass)}
        secret_files = {f"{n}_file": n for n, f in fields.items() if f.metadata.get("secret")}
        prefix = f"{path}." if path else ""
        for key in raw:
            if key not in fields and key not in secret_files:
                known = ", ".join(sorted([*fields, *secret_files]))
                self.problems.add(f"{prefix}{key}", f"unknown key (known keys: {known})")
        kwargs: dict[str, Any] = {}
        reported = len(self.problems.lines)
        for name, field in fields.items():
            if not field.init:
                continue
            secret = bool(field.metadata.get("secret"))
            key_path = f"{prefix}{name}"
            if name in raw:
                value = self.convert(raw[name], field.type, key_path, secret=secret)
            elif secret and f"{name}_file" in raw:
                value = self._read_secret(raw[f"{name}_file"], f"{key_path}_file")
            else:
                continue
            if value is attrs.NOTHING:
                continue
            check = field.metadata.get("check")
            if check is not None:
                problem = check(value)
                if problem:
                    self.problems.add(key_path, problem)
                    continue
            kwargs[name] = value
        try:
            return cls(**kwargs)
        except TypeError as exc:
            missing = re.findall(r"'(\w+)'", str(exc))
            if len(self.problems.lines) > reported:
                # the refused value was reported already: "__init__() missing 'id'" would
                # only confuse
                pass
            elif "missing" in str(exc) and missing:
                for name in missing:
                    self.problems.add(f"{prefix}{name}", "a value is required")
            else:
                self.problems.add(path or "(top level)", str(exc))
            return attrs.NOTHING  # type: ignore[return-value]
        except ValueError as exc:
            self.problems.add(path or "(top level)", str(exc))
            return attrs.NOTHING  # type: ignore[return-value]

    def _read_secret(self, value: Any, path: str) -> Any:
        if not isinstance(value, str):
            return self._wrong(path, value, "a file path", False)
        file_path = self.base_dir / self._env(value, path)
        try:
            return file_path.read_text().strip()
        except OSError as exc:
            self.problems.add(path, f"cannot read secret file {str(file_path)!r}: {exc.strerror}")
            return attrs.NOTHING


def _fits(value: Any, tp: Any) -> bool:
    origin = get_origin(tp)
    if tp is Any:
        return True
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is str or origin is Literal:
        return isinstance(value, str)
    if origin is list:
        return isinstance(value, list)
    if origin is dict or attrs.has(tp):
        return isinstance(value, dict)
    return False


def build(
    cls: type[T],
    raw: Mapping[str, Any],
    path: str,
    problems: Problems,
    *,
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> T:
    """Build ``cls`` from the raw table ``raw`` found at ``path``, adding problems."""
    converter = _Converter(problems, os.environ if env is None else env, base_dir or Path.cwd())
    return converter.build(cls, raw, path)


def redacted(obj: Any) -> Any:
    """Return ``obj`` as plain data with every secret field replaced by ``***``."""
    if attrs.has(type(obj)):
        out: dict[str, Any] = {}
        for field in attrs.fields(type(obj)):
            value = getattr(obj, field.name)
            if field.metadata.get("secret") and value:
                out[field.name] = SECRET_PLACEHOLDER
            else:
                out[field.name] = redacted(value)
        return out
    if isinstance(obj, list | tuple):
        return [redacted(v) for v in obj]
    if isinstance(obj, dict):
        return {k: redacted(v) for k, v in obj.items()}
    return obj


@attrs.frozen
class FieldDoc:
    """One setting as the documentation shows it."""

    name: str
    type: Any
    #: the default value, or ``attrs.NOTHING`` when the key is required
    default: Any
    help: str
    secret: bool
    client_sees: str
    #: the smallest value the check accepts, when the check is ``at_least``
    minimum: float | None


def describe_fields(cls: type) -> list[FieldDoc]:
    """Each field of a config class, with its metadata: the source of the docs' key tables."""
    attrs.resolve_types(cls)
    rows = []
    for field in attrs.fields(cls):
        default: Any = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory()
        check = field.metadata.get("check")
        rows.append(
            FieldDoc(
                name=field.name,
                type=field.type,
                default=default,
                help=field.metadata.get("help", ""),
                secret=bool(field.metadata.get("secret")),
                client_sees=field.metadata.get("client_sees", ""),
                minimum=getattr(check, "minimum", None),
            )
        )
    return rows
