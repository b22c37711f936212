"""Python tracebacks found in log events, read into Sentry's ``exception`` interface.

Two shapes arrive: the text ``traceback.format_exception`` writes (structlog's
``format_exc_info``, stdlib logging's ``exc_text``), and the list of stack dicts
structlog's ``dict_tracebacks`` writes.  Both become Sentry ``exception.values``:
oldest exception first (the cause), the one raised last at the end, each with
``type``, ``value``, ``module`` when the type is dotted, and
``stacktrace.frames`` outermost first, which is what Sentry groups on.

Pure and lenient: text that is not a traceback gives ``None``, never an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

_HEADER: Final = "Traceback (most recent call last):"
_CHAIN_LINES: Final = frozenset(
    (
        "The above exception was the direct cause of the following exception:",
        "During handling of the above exception, another exception occurred:",
    )
)
_FRAME_RE: Final = re.compile(
    r'^\s*File "(?P<file>[^"]*)", line (?P<line>\d+)(?:, in (?P<func>.*))?$'
)
#: Python 3.11's ``^^^^`` / ``~~~`` markers under a code line.
_MARKER_RE: Final = re.compile(r"^\s*[~^]+\s*$")
_REPEAT_RE: Final = re.compile(r"^\s*\[Previous line repeated \d+ more times?\]$")
_PACKAGE_DIRS: Final = ("site-packages/", "dist-packages/")


def module_for(filename: str) -> str | None:
    """A best guess at the module a file holds: dotted from site-packages, else its stem.

    Sentry shows ``module`` in frames and uses it for grouping when present;
    a log line only has the file name, so this is a guess, kept stable.
    """
    if not filename or filename.startswith("<"):
        return None
    path = filename.replace("\\", "/")
    for marker in _PACKAGE_DIRS:
        at = path.rfind(marker)
        if at >= 0:
            path = path[at + len(marker) :]
            break
    else:
        path = path.rsplit("/", 1)[-1]
    if path.endswith(".py"):
        path = path[:-3]
    if path.endswith("/__init__"):
        path = path[: -len("/__init__")]
    return path.replace("/", ".") or None


def _frame(filename: str, lineno: int | None, function: str | None) -> dict[str, Any]:
    frame: dict[str, Any] = {"filename": filename, "abs_path": filename}
    if function:
        frame["function"] = function
    if lineno is not None:
        frame["lineno"] = lineno
    module = module_for(filename)
    if module is not None:
        frame["module"] = module
    frame["in_app"] = not any(marker in filename.replace("\\", "/") for marker in _PACKAGE_DIRS)
    return frame


def _split_type(line: str) -> tuple[str, str | None, str]:
    """``pkg.mod.Error: text`` into type ``Error``, module ``pkg.mod`` and value ``text``."""
    name, sep, value = line.partition(": ")
    if not sep and line.endswith(":"):
        name, value = line[:-1], ""
    if " " in name or not name:  # not ``Type: value``: a bare message line
        return line.strip(), None, ""
    module, dot, short = name.rpartition(".")
    return (short, module, value) if dot else (name, None, value)


def _value(type_name: str, module: str | None, value: str) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type_name, "value": value}
    if module:
        out["module"] = module
    return out


def parse_traceback_text(text: str) -> list[dict[str, Any]] | None:
    """Sentry ``exception.values`` from ``format_exception`` text, or None if it has none.

    Chained exceptions ("direct cause", "during handling") each become a value,
    in the order the text shows them (cause first), as Sentry wants them.
    """
    if not isinstance(text, str) or _HEADER not in text:
        return None
    lines = text.splitlines()
    values: list[dict[str, Any]] = []
    i = 0
    n = len(lines)
    while i < n:
        if lines[i].strip() != _HEADER:
            i += 1
            continue
        i += 1
        frames: list[dict[str, Any]] = []
        while i < n:
            line = lines[i]
            match = _FRAME_RE.match(line)
            if match is not None:
                frames.append(
                    _frame(match["file"], int(match["line"]), (match["func"] or "").strip() or None)
                )
                i += 1
                continue
            if line.startswith("    ") or _MARKER_RE.match(line) or _REPEAT_RE.match(line):
                # the code line under a frame (Python prints it indented by four)
                stripped = line.strip()
                if (
                    frames
                    and stripped
                    and not _MARKER_RE.match(line)
                    and not _REPEAT_RE.match(line)
                    and "context_line" not in frames[-1]
                ):
                    frames[-1]["context_line"] = stripped
                i += 1
                continue
            break
        # the exception line, and any continuation lines of a multi-line value
        rest: list[str] = []
        while i < n and lines[i].strip() != _HEADER and lines[i].strip() not in _CHAIN_LINES:
            rest.append(lines[i])
            i += 1
        while rest and not rest[-1].strip():
            rest.pop()
        if not rest:
            continue
        type_name, module, first = _split_type(rest[0])
        value = "\n".join([first, *rest[1:]]) if len(rest) > 1 else first
        entry = _value(type_name, module, value)
        if frames:
            entry["stacktrace"] = {"frames": frames}
        values.append(entry)
    return values or None


def parse_dict_tracebacks(stacks: Any) -> list[dict[str, Any]] | None:
    """Sentry ``exception.values`` from structlog's ``dict_tracebacks`` list, or None.

    structlog lists the exception raised last first and its causes after it;
    Sentry wants the reverse.  ``locals`` become the frame's ``vars``.
    """
    if not isinstance(stacks, list):
        return None
    values: list[dict[str, Any]] = []
    for stack in stacks:
        if not isinstance(stack, Mapping) or not isinstance(stack.get("exc_type"), str):
            continue
        type_name, module, _ = _split_type(stack["exc_type"] + ": ")
        value = stack.get("exc_value")
        entry = _value(type_name, module, value if isinstance(value, str) else "")
        frames: list[dict[str, Any]] = []
        raw_frames = stack.get("frames")
        for raw in raw_frames if isinstance(raw_frames, list) else ():
            if not isinstance(raw, Mapping) or not isinstance(raw.get("filename"), str):
                continue
            lineno = raw.get("lineno")
            name = raw.get("name")
            frame = _frame(
                raw["filename"],
                lineno if isinstance(lineno, int) and not isinstance(lineno, bool) else None,
                name if isinstance(name, str) else None,
            )
            local_vars = raw.get("locals")
            if isinstance(local_vars, Mapping) and local_vars:
                frame["vars"] = dict(local_vars)
            frames.append(frame)
        if frames:
            entry["stacktrace"] = {"frames": frames}
        values.append(entry)
    values.reverse()
    return values or None


def exception_values(fields: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The traceback a log event carries, as Sentry ``exception.values``, or None.

    Looks at ``exception`` (text from ``format_exc_info`` or the list from
    ``dict_tracebacks``), then ``exc_info`` and ``exc_text`` when they are text.
    """
    for key in ("exception", "exc_info", "exc_text"):
        value = fields.get(key)
        if isinstance(value, list):
            found = parse_dict_tracebacks(value)
        elif isinstance(value, str):
            found = parse_traceback_text(value)
        else:
            continue
        if found:
            return found
    return None
