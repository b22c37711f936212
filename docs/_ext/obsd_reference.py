"""The configuration reference and the limits page, generated from obsd's config schema.

Two directives, ``.. obsd-config-reference::`` and ``.. obsd-limits::``, walk the
attrs config classes (the core sections, then every input and output type the
registry names, so a type added later appears without an edit here) and render
one table per section: key, type, default, meaning (the ``help=`` text).  Where
the embedded default config (``obsd/default.toml``) sets a key to something else
than the schema's default, both are shown.  The text is built by plain functions
(``reference_rst``, ``limits_rst``) that the tests in ``tests/docs/`` call too.
"""

from __future__ import annotations

import json
import re
import tomllib
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import attrs

from obsd import registry

# Every import of obsd's schema is here, so a moved module is one edit.
from obsd.config import loader, model
from obsd.config.schema import FieldDoc, describe_fields

#: Settings whose names say they bound something: the "Limits" page lists them all.
LIMIT_NAME = re.compile(r"^max_|_max$|_timeout$|_size$|_bytes$|_window$")


@attrs.frozen
class Row:
    """One key of one section, ready to render."""

    key: str
    doc: FieldDoc
    #: the embedded default config's value, when it differs from the schema's
    embedded: Any = attrs.NOTHING
    #: the default a type-specific section gives a common key
    overrides: bool = False


@attrs.frozen
class Section:
    """One table of the reference: ``[daemon]``, ``[inputs.syslog]``, ..."""

    label: str
    title: str
    intro: str
    rows: list[Row]
    #: ``inputs``/``outputs`` and the type, for the "see also" link
    kind: str = ""
    type_name: str = ""


# -- walking the schema -------------------------------------------------------------------


def _flatten(cls: type, prefix: str = "") -> Iterator[tuple[str, FieldDoc]]:
    """Each field as (dotted key, doc); attrs tables and arrays of tables are expanded."""
    for doc in describe_fields(cls):
        key = f"{prefix}{doc.name}"
        inner = _table_class(doc.type)
        if inner is not None and get_origin(doc.type) is not list:
            yield from _flatten(inner, f"{key}.")
            continue
        yield key, doc
        if inner is not None:  # an array of tables: its keys follow it
            yield from _flatten(inner, f"{key}[].")


def _table_class(tp: Any) -> type | None:
    if isinstance(tp, type) and attrs.has(tp):
        return tp
    if get_origin(tp) is list:
        (item,) = get_args(tp)
        if isinstance(item, type) and attrs.has(item):
            return item
    return None


def _embedded_default() -> dict[str, Any]:
    return tomllib.loads(loader.default_config_text())


def _lookup(table: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(table, dict) or part not in table:
            return attrs.NOTHING
        table = table[part]
    return table


def _rows(cls: type, embedded: Any, skip: frozenset[str] = frozenset()) -> list[Row]:
    rows = []
    for key, doc in _flatten(cls):
        if key in skip:
            continue
        value = _lookup(embedded, key) if isinstance(embedded, dict) else attrs.NOTHING
        if value is not attrs.NOTHING and _same(value, doc.default):
            value = attrs.NOTHING
        rows.append(Row(key=key, doc=doc, embedded=value))
    return rows


def _same(raw: Any, default: Any) -> bool:
    if attrs.has(type(default)):
        return False
    return bool(raw == default)


def _embedded_components(embedded: dict[str, Any], kind: str, type_name: str) -> Any:
    """The embedded default's table of this type (merged if several), or NOTHING."""
    tables = embedded.get(kind, {})
    found = [t for n, t in tables.items() if isinstance(t, dict) and t.get("type", n) == type_name]
    return found[0] if found else attrs.NOTHING


def sections() -> list[Section]:
    """Every section of the configuration, core first, then inputs and outputs by type."""
    embedded = _embedded_default()
    found = [
        Section(
            "config-daemon", "[daemon]", "Process-wide settings.",
            _rows(model.DaemonConfig, embedded.get("daemon", {})),
        ),
        Section(
            "config-http", "[http]",
            "The one HTTP server.  HTTP inputs (Sentry, relay) mount on it, and it serves "
            "``/``, ``/status``, ``/metrics``, ``/healthz`` and ``/readyz`` "
            "(see :doc:`/reference/operations`).",
            _rows(model.HttpConfig, embedded.get("http", {})),
        ),
        Section(
            "config-pipeline", "[pipeline]",
            "structlog processors of your own, run after obsd's normalisation, in order, "
            "with the event's kind as ``method_name``.  One that raises is counted "
            "(``obsd.pipeline.processor_errors``) and the event goes on unchanged; one that "
            "raises ``structlog.DropEvent`` drops the event.",
            _rows(model.PipelineConfig, embedded.get("pipeline", {})),
        ),
        Section(
            "config-derived-metrics", "[derived_metrics]",
            "Counters of the log events themselves (see :doc:`/reference/operations`).",
            _rows(model.DerivedMetricsConfig, embedded.get("derived_metrics", {})),
        ),
        Section(
            "config-routes", "[[routes]]",
            "Each route has a ``match`` table (every condition given must hold) and "
            "``outputs``.  Without routes, each event goes to every output whose type takes "
            "its kind by default; with routes, only the routes decide "
            "(see :doc:`/explanation/event-model`).",
            _rows(model.RouteConfig, attrs.NOTHING),
        ),
        Section(
            "config-outputs-common", "Every output: [outputs.NAME]",
            "Every output has these keys; an output type's own section says where it "
            "changes a default.  ``[outputs.NAME.buffer]`` is the output's queue "
            "(see :doc:`/explanation/delivery`).",
            _rows(model.OutputConfig, attrs.NOTHING),
        ),
    ]
    common = {d.name: d for d in describe_fields(model.OutputConfig)}
    for type_name in sorted(registry.INPUT_MODULES):
        module = registry.input_module(type_name)
        assert module is not None
        listen_types = sorted(getattr(module, "LISTEN_TYPES", ()))
        where = (
            "Listens on endpoint strings of these types: "
            + ", ".join(f"``{t}``" for t in listen_types) + "."
            if listen_types
            else "Mounts on ``[http]``; it has no listeners of its own."
        )
        found.append(
            Section(
                f"config-inputs-{type_name}", f"[inputs.{type_name}]",
                f"{_first_line(module.Config)} {where}",
                _rows(module.Config, _embedded_components(embedded, "inputs", type_name),
                      skip=frozenset(["type"])),
                "inputs", type_name,
            )
        )
    for type_name in sorted(registry.OUTPUT_MODULES):
        module = registry.output_module(type_name)
        assert module is not None
        takes = ", ".join(f"``{k}``" for k in sorted(module.ACCEPTS))
        gets = ", ".join(f"``{k}``" for k in sorted(module.DEFAULT_KINDS))
        rows = []
        for row in _rows(
            module.Config,
            _embedded_components(embedded, "outputs", type_name),
            skip=frozenset(["type"]) | {f"buffer.{d.name}" for d in describe_fields(
                model.BufferConfig)},
        ):
            base = common.get(row.key)
            if base is not None:
                if _same(row.doc.default, base.default):
                    continue
                row = attrs.evolve(row, overrides=True)
            rows.append(row)
        found.append(
            Section(
                f"config-outputs-{type_name}", f"[outputs.{type_name}]",
                f"{_first_line(module.Config)} Takes {takes}; without routes it gets {gets}.",
                rows, "outputs", type_name,
            )
        )
    return found


def _first_line(cls: type) -> str:
    text = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
    text = re.sub(r"^``\[[^\]]+\]``[:.]?\s*", "", text)
    return text[:1].upper() + text[1:] if text else ""


def limit_rows() -> list[tuple[Section, Row]]:
    """Every setting whose name says it is a limit, with the section it is in."""
    out = []
    for section in sections():
        for row in section.rows:
            if LIMIT_NAME.search(row.key.rpartition(".")[2]):
                out.append((section, row))
    return out


def client_sees(row: Row) -> str:
    """What a sender or destination sees at the limit (a common key's text if not overridden)."""
    if row.doc.client_sees:
        return row.doc.client_sees
    for doc in describe_fields(model.OutputConfig):
        if doc.name == row.key:
            return doc.client_sees
    return ""


# -- rendering ------------------------------------------------------------------------------


def type_text(doc: FieldDoc) -> str:
    text = _type(doc.type)
    if doc.minimum is not None:
        minimum = int(doc.minimum) if float(doc.minimum).is_integer() else doc.minimum
        text += f" ≥ {minimum}"
    if doc.secret:
        text += " (secret)"
    return text


def _type(tp: Any) -> str:
    origin = get_origin(tp)
    if tp is str:
        return "string"
    if tp is bool:
        return "boolean"
    if tp is int:
        return "integer"
    if tp is float:
        return "number"
    if tp is Any:
        return "any"
    if origin is Literal:
        return " | ".join(f"``{_toml(a)}``" for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        text = " or ".join(_type(o) for o in options)
        return f"{text}, or unset" if len(options) < len(get_args(tp)) else text
    if origin is list:
        (item,) = get_args(tp)
        if isinstance(item, type) and attrs.has(item):
            return "array of tables"
        return f"list of {_plural(_type(item))}"
    if origin is dict:
        return f"table of {_plural(_type(get_args(tp)[1]))}"
    if isinstance(tp, type) and attrs.has(tp):
        return "table"
    return str(tp)


def _plural(text: str) -> str:
    return " or ".join(f"{part}s" if part.isalpha() else part for part in text.split(" or "))


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if attrs.has(type(value)):
        return "(table)"
    return repr(value)


def default_text(row: Row) -> str:
    default = row.doc.default
    if default is attrs.NOTHING:
        text = "(required)"
    elif default is None:
        text = "(unset)"
    elif attrs.has(type(default)):
        text = "(table)"
    else:
        text = f"``{_toml(default)}``"
        if (
            isinstance(default, int) and not isinstance(default, bool) and default >= 1024
            and re.search(r"bytes|size$", row.key) and default % 1024 == 0
        ):
            text += f" ({_human_bytes(default)})"
    if row.embedded is not attrs.NOTHING:
        text += f"; embedded default: ``{_toml(row.embedded)}``"
    return text


def _human_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


def meaning_text(row: Row) -> str:
    text = _rst_escape(row.doc.help) or "\\-"
    if row.doc.secret:
        name = row.key.rpartition(".")[2]
        text += f"; never shown, and ``{name}_file`` reads it from a file"
    if row.overrides:
        text += " (this output's default for a key every output has)"
    return text


def _rst_escape(text: str) -> str:
    """Help texts are plain text: keep ``*``, ``_`` and backquotes from meaning markup."""
    return re.sub(r"[*`|\\]|(?<=\s)_|_(?=\W|$)", lambda m: "\\" + m.group(0), text)


def _table(header: list[str], rows: list[list[str]], widths: str) -> list[str]:
    lines = [".. list-table::", "   :header-rows: 1", f"   :widths: {widths}", ""]
    for cells in [header, *rows]:
        first, *rest = cells
        lines.append(f"   * - {first}")
        lines.extend(f"     - {cell}" for cell in rest)
    lines.append("")
    return lines


def _see_also(section: Section, srcdir: Path | None) -> list[str]:
    if srcdir is None or not section.kind:
        return []
    page = Path("reference") / section.kind / f"{section.type_name}.rst"
    if not (srcdir / page).exists():
        return []
    return [f"More about this {section.kind[:-1]}: :doc:`/{page.with_suffix('').as_posix()}`.", ""]


def reference_rst(srcdir: Path | None = None) -> str:
    """The configuration reference as reStructuredText."""
    lines: list[str] = []
    for section in sections():
        lines += [f".. _{section.label}:", "", section.title, "-" * len(section.title), ""]
        lines += [section.intro, ""]
        lines += _see_also(section, srcdir)
        if not section.rows:
            lines += ["No keys of its own.", ""]
            continue
        lines += _table(
            ["key", "type", "default", "meaning"],
            [
                [f"``{r.key}``", type_text(r.doc), default_text(r), meaning_text(r)]
                for r in section.rows
            ],
            "20 15 20 45",
        )
    return "\n".join(lines)


def limits_rst() -> str:
    """The limits page's table as reStructuredText."""
    rows = []
    for section, row in limit_rows():
        where = section.title.split(": ")[-1].strip("[]")
        rows.append(
            [
                f":ref:`{where}.{row.key} <{section.label}>`",
                default_text(row),
                _rst_escape(client_sees(row)) or "\\-",
            ]
        )
    return "\n".join(_table(["setting", "default", "what a sender or destination sees"], rows,
                            "30 20 50"))


# -- Sphinx ---------------------------------------------------------------------------------


def setup(app: Any) -> dict[str, Any]:
    from sphinx.util.docutils import SphinxDirective

    class ConfigReferenceDirective(SphinxDirective):
        """``.. obsd-config-reference::``: every section's key table."""

        def run(self) -> list[Any]:
            text = reference_rst(Path(self.env.srcdir))
            return self.parse_text_to_nodes(text, allow_section_headings=True)

    class LimitsDirective(SphinxDirective):
        """``.. obsd-limits::``: every limit setting and what a client sees at it."""

        def run(self) -> list[Any]:
            return self.parse_text_to_nodes(limits_rst())

    app.add_directive("obsd-config-reference", ConfigReferenceDirective)
    app.add_directive("obsd-limits", LimitsDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
