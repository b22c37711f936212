"""Prometheus's text exposition format (0.0.4) and statsd_exporter's name mapping, no Twisted.

Names follow statsd_exporter: a dotted StatsD name becomes ``a_b_c`` (every
character outside ``[a-zA-Z0-9_:]`` an underscore, a leading digit prefixed
with ``_``), unless a mapping matches it.  A mapping's ``match`` is a glob of
dot-separated parts where ``*`` matches one part; ``name`` and label values
may use ``$1``, ``$2``… for what the stars matched, as statsd_exporter's
glob mappings do.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, NamedTuple

_BAD_NAME: Final = re.compile(r"[^a-zA-Z0-9_:]")
_BAD_LABEL: Final = re.compile(r"[^a-zA-Z0-9_]")
_REF: Final = re.compile(r"\$(\d+)|\$\{(\d+)\}")

Labels = tuple[tuple[str, str], ...]


def metric_name(text: str) -> str:
    """A name Prometheus accepts (statsd_exporter's escaping)."""
    name = _BAD_NAME.sub("_", text)
    if not name or name[0].isdigit():
        name = "_" + name
    return name


def label_name(text: str) -> str:
    """A label name Prometheus accepts; ``__`` names are reserved, so they get a prefix."""
    name = _BAD_LABEL.sub("_", text)
    if name.startswith("__"):
        name = name.lstrip("_")
    if not name or name[0].isdigit():
        name = "_" + name
    return name


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class NameMapping(NamedTuple):
    """One compiled mapping: glob regex, name template, label templates."""

    pattern: re.Pattern[str]
    name: str
    labels: tuple[tuple[str, str], ...]


def compile_mapping(match: str, name: str, labels: Mapping[str, str]) -> NameMapping:
    """A glob like ``myapp.*.requests`` (``*``: one dot-free part) as a mapping."""
    parts = [
        "([^.]+)" if part == "*" else re.escape(part) for part in match.split(".")
    ]
    return NameMapping(
        re.compile(r"\.".join(parts) + r"\Z"),
        name,
        tuple(sorted((label_name(k), v) for k, v in labels.items())),
    )


def _expand(template: str, groups: Sequence[str]) -> str:
    def one(found: re.Match[str]) -> str:
        index = int(found.group(1) or found.group(2))
        return groups[index - 1] if 0 < index <= len(groups) else ""

    return _REF.sub(one, template)


def map_name(
    dotted: str, tags: Iterable[tuple[str, str]], mappings: Sequence[NameMapping]
) -> tuple[str, Labels]:
    """(Prometheus name, sorted labels) for a StatsD name and its tags; first mapping wins."""
    labels = {label_name(k): v for k, v in tags}
    for mapping in mappings:
        found = mapping.pattern.match(dotted)
        if found is None:
            continue
        groups = found.groups()
        for key, template in mapping.labels:
            labels[key] = _expand(template, groups)
        return metric_name(_expand(mapping.name, groups)), tuple(sorted(labels.items()))
    return metric_name(dotted), tuple(sorted(labels.items()))


def _labels_text(labels: Labels, extra: Labels = ()) -> str:
    pairs = (*labels, *extra)
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{escape_label_value(v)}"' for k, v in pairs) + "}"


class Sample(NamedTuple):
    suffix: str
    labels: Labels
    extra: Labels
    value: float


def render_family(name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> str:
    """One metric family: ``# HELP``, ``# TYPE`` and its samples."""
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines.extend(
        f"{name}{s.suffix}{_labels_text(s.labels, s.extra)} {format_value(s.value)}"
        for s in samples
    )
    return "\n".join(lines) + "\n"
