"""The docs tell the truth about the config: every key is in the generated reference, every
key a page shows exists, every limit says what a sender sees, and README.rst's links resolve."""

from __future__ import annotations

import io
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import attrs
import docutils.core
import docutils.nodes
import pytest

from obsd import registry
from obsd.config import loader, model
from obsd.errors import ConfigError
from tests.docs.runner import DOCS, ROOT, blocks

sys.path.insert(0, str(DOCS / "_ext"))
import obsd_reference

README = (ROOT / "README.rst").read_text()
EXAMPLE = tomllib.loads((ROOT / "examples" / "obsd.toml").read_text())
#: every example file; a type that cannot share obsd.toml (the Kafka input needs disk
#: buffers on every output) is shown in one of its own
EXAMPLES = [tomllib.loads(p.read_text()) for p in sorted((ROOT / "examples").glob("*.toml"))]
PAGES = sorted(p for p in DOCS.rglob("*.rst") if "_build" not in p.parts)
REFERENCE = obsd_reference.reference_rst(DOCS)

CORE = [model.DaemonConfig, model.HttpConfig, model.PipelineConfig,
        model.DerivedMetricsConfig, model.RouteConfig, model.OutputConfig]


def types() -> list[tuple[str, str, type]]:
    found = []
    for name in sorted(registry.INPUT_MODULES):
        module = registry.input_module(name)
        assert module is not None
        found.append(("inputs", name, module.Config))
    for name in sorted(registry.OUTPUT_MODULES):
        module = registry.output_module(name)
        assert module is not None
        found.append(("outputs", name, module.Config))
    return found


def keys(cls: type, prefix: str = "") -> list[str]:
    """Every key of a config class, nested tables as ``table.key``."""
    found = []
    attrs.resolve_types(cls)
    for field in attrs.fields(cls):
        if field.name == "type":
            continue
        tp = field.type
        inner = tp if isinstance(tp, type) and attrs.has(tp) else None
        if inner is not None:
            found += keys(inner, f"{prefix}{field.name}.")
        else:
            found.append(f"{prefix}{field.name}")
    return found


def section_text(label: str) -> str:
    """The generated reference's text of one section."""
    start = REFERENCE.index(f".. _{label}:")
    end = REFERENCE.find("\n.. _config-", start + 1)
    return REFERENCE[start : end if end != -1 else None]


class TestGeneratedReference:
    @pytest.mark.parametrize(("section", "type_name", "cls"), types(), ids=lambda v: str(v))
    def test_every_key_of_every_type(self, section: str, type_name: str, cls: type) -> None:
        """Each key of each input and output type is in that type's generated table."""
        text = section_text(f"config-{section}-{type_name}")
        common = set(keys(model.OutputConfig)) if section == "outputs" else set()
        own = [k for k in keys(cls) if k not in common or _overridden(cls, k)]
        assert [k for k in own if f"``{k}``" not in text] == []

    @pytest.mark.parametrize("cls", CORE, ids=lambda c: c.__qualname__)
    def test_every_core_key(self, cls: type) -> None:
        """Each key of [daemon], [http], [pipeline], [derived_metrics], routes and the queue is there."""
        assert [k for k in keys(cls) if f"``{k}``" not in REFERENCE] == []

    def test_every_setting_has_help(self) -> None:
        """No generated row is without a meaning."""
        missing = [f"{s.title} {r.key}" for s in obsd_reference.sections() for r in s.rows
                   if not r.doc.help]
        assert missing == []

    def test_embedded_default_shown_where_it_differs(self) -> None:
        """[http] listen shows both the schema's [] and the embedded default's listener."""
        text = section_text("config-http")
        assert '``[]``; embedded default: ``["tcp:9000:interface=127.0.0.1"]``' in text
        assert "embedded default" in section_text("config-inputs-statsd")
        assert "embedded default" not in section_text("config-daemon")

    def test_every_limit_says_what_a_sender_sees(self) -> None:
        """Each max_*/…_timeout/…_size/…_bytes/…_window setting has a client_sees text."""
        rows = obsd_reference.limit_rows()
        assert len(rows) > 20
        missing = [f"{s.title} {r.key}" for s, r in rows if not obsd_reference.client_sees(r)]
        assert missing == [], "add client_sees= to these settings"


def _overridden(cls: type, key: str) -> bool:
    defaults = {f.name: f.default for f in attrs.fields(model.OutputConfig)}
    return key in defaults and attrs.fields_dict(cls)[key].default != defaults[key]


def _toml_blocks() -> list[tuple[str, int, str]]:
    found = []
    for page in PAGES:
        for block in blocks(page):
            if block.language == "toml":
                found.append((str(page.relative_to(ROOT)), block.line, block.text))
    return found


class TestDocumentedKeys:
    @pytest.mark.parametrize(("page", "line", "text"), _toml_blocks(),
                             ids=[f"{page}:{line}" for page, line, _ in _toml_blocks()])
    def test_toml_blocks_name_real_keys(self, page: str, line: int, text: str) -> None:
        """Every TOML block in the docs parses, and every key and type in it exists."""
        raw = tomllib.loads(text)
        try:
            loader.parse_config(raw, env={})
        except ConfigError as exc:
            unknown = [p for p in exc.problems if re.search(r"unknown (key|input|output)", p)]
            assert unknown == [], f"{page}:{line}"


class TestReadme:
    def test_renders_without_warnings(self) -> None:
        """README.rst is valid reStructuredText (GitHub and PyPI render it)."""
        errors = io.StringIO()
        docutils.core.publish_string(
            README,
            writer="null",
            settings_overrides={"report_level": 2, "halt_level": 5, "warning_stream": errors},
        )
        assert errors.getvalue() == ""

    def test_short(self) -> None:
        """README.rst stays an entrance: under ~150 lines, the rest is in docs/."""
        assert len(README.splitlines()) <= 150

    def test_links_resolve(self) -> None:
        """Every relative link in README.rst names a file in the checkout."""
        doctree = docutils.core.publish_doctree(README, settings_overrides={"report_level": 5})
        uris = [n["refuri"] for n in doctree.findall(docutils.nodes.reference) if "refuri" in n]
        local = [u for u in uris if not re.match(r"[a-z]+://", u)]
        assert len(local) >= 10
        assert [u for u in local if not (ROOT / u.partition("#")[0]).is_file()] == []

    def test_names_the_ports_of_the_embedded_default(self) -> None:
        """The ports README promises are the ones the embedded default listens on."""
        default = loader.default_config_text()
        for port in ("9000", "8125", "5514"):
            assert f":{port}" in README
            assert f"{port}:interface=127.0.0.1" in default


@pytest.mark.parametrize("page", [ROOT / "README.rst", *PAGES], ids=lambda p: p.name)
def test_no_underline_runs_into_text(page: Path) -> None:
    """A section underline is a line of its own (else docutils keeps it as text, silently)."""
    lines = page.read_text().splitlines()
    assert [line for line in lines if re.match(r"^[=~-]{3,}[^=~\s-]", line)] == []


@pytest.mark.parametrize("page", [ROOT / "README.rst", *PAGES], ids=lambda p: p.name)
def test_underlines_belong_to_titles(page: Path) -> None:
    """A line of ``=``/``-``/``~`` after text underlines a one-line title at least as long.

    A stray ``=======`` under a paragraph (a merge leftover) is kept as paragraph
    text by docutils without a warning, and the heading after it is lost.
    """
    lines = page.read_text().splitlines()
    bad = []
    for i, line in enumerate(lines):
        if i < 1 or not re.fullmatch(r"([=~^-])\1{3,}", line) or not lines[i - 1].strip():
            continue
        title = lines[i - 1]
        before = lines[i - 2] if i >= 2 else ""
        if (before.strip() and before != line) or len(title.rstrip()) > len(line):
            bad.append(f"line {i + 1}: {line!r} under {title!r}")
    assert bad == []


class TestExample:
    @pytest.mark.parametrize(("section", "type_name", "cls"), types(), ids=lambda v: str(v))
    def test_every_type_shown_with_every_key(self, section: str, type_name: str, cls: type) -> None:
        """examples/ has a section of each type, showing all its keys."""
        tables: list[dict[str, Any]] = [
            t for example in EXAMPLES for n, t in example.get(section, {}).items()
            if t.get("type", n) == type_name
        ]
        assert tables, f"no examples/*.toml has a [{section}.*] of type {type_name}"
        own = {f.name for f in attrs.fields(cls)} - {f.name for f in
                                                     attrs.fields(model.OutputConfig)} - {"type"}
        shown = set().union(*(set(t) for t in tables))
        assert sorted(own - shown) == []
