"""README.rst documents every config key, and examples/obsd.toml shows every key of every type."""

from __future__ import annotations

import tomllib
from pathlib import Path

import attrs
import pytest

from obsd import registry
from obsd.config import model as config

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.rst").read_text()
#: the reference may live in README.rst or in the docs' pages (how-tos document their keys)
DOCUMENTED = README + "".join(p.read_text() for p in sorted((ROOT / "docs").rglob("*.rst")))
EXAMPLE = tomllib.loads((ROOT / "examples" / "obsd.toml").read_text())

CORE = [config.DaemonConfig, config.HttpConfig, config.PipelineConfig,
        config.DerivedMetricsConfig, config.RouteMatch, config.RouteConfig,
        config.BufferConfig, config.OutputConfig]


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


def keys(cls: type) -> list[str]:
    return [f.name for f in attrs.fields(cls) if f.name != "type"]


class TestReadme:
    def test_renders_without_warnings(self) -> None:
        """README.rst is valid reStructuredText (a broken table would hide keys)."""
        import io

        import docutils.core

        errors = io.StringIO()
        docutils.core.publish_string(
            README,
            writer_name="null",
            settings_overrides={"report_level": 2, "halt_level": 5, "warning_stream": errors},
        )
        assert errors.getvalue() == ""

    def test_no_underline_runs_into_text(self) -> None:
        """A section underline is a line of its own (else docutils keeps it as text, silently)."""
        import re

        assert [l for l in README.splitlines() if re.match(r"^[=~-]{3,}[^=~\s-]", l)] == []

    @pytest.mark.parametrize("cls", CORE + [t[2] for t in types()], ids=lambda c: c.__qualname__)
    def test_every_key_documented(self, cls: type) -> None:
        """Each config key appears in README.rst or a docs page as a literal."""
        missing = [k for k in keys(cls) if f"``{k}``" not in DOCUMENTED]
        assert missing == [], f"{cls.__module__}.{cls.__qualname__} keys not documented"


class TestExample:
    @pytest.mark.parametrize(("section", "type_name", "cls"), types(), ids=lambda v: str(v))
    def test_every_type_shown_with_every_key(self, section: str, type_name: str, cls: type) -> None:
        """examples/obsd.toml has a section of each type, showing all its keys."""
        tables = [t for n, t in EXAMPLE.get(section, {}).items() if t.get("type", n) == type_name]
        assert tables, f"examples/obsd.toml has no [{section}.*] of type {type_name}"
        own = set(keys(cls)) - set(keys(config.OutputConfig)) - {"buffer"}
        shown = set().union(*(set(t) for t in tables))
        assert sorted(own - shown) == []
