"""Which module implements each input and output type: one explicit table.

Modules are named, not imported, so reading the table costs nothing; the config
loader imports a module only when a config uses its type.  An input module
provides what ``obsd.contracts.InputModule`` says (``Config``, ``LISTEN_TYPES``,
``build_input``); an output module what ``OutputModule`` says (``Config``,
``ACCEPTS``, ``DEFAULT_KINDS``, ``build_output``).  mypy checks each
registered module against its contract (``obsd/conformance.py``).
"""

from __future__ import annotations

import importlib
from typing import cast

from obsd.contracts import InputModule, OutputModule

INPUT_MODULES: dict[str, str] = {
    "gelf": "obsd.inputs.gelf",
    "kafka": "obsd.inputs.kafka",
    "graphite": "obsd.inputs.graphite",
    "otlp": "obsd.inputs.otlp",
    "relay": "obsd.inputs.relay",
    "sentry": "obsd.inputs.sentry",
    "statsd": "obsd.inputs.statsd",
    "syslog": "obsd.inputs.syslog",
}

OUTPUT_MODULES: dict[str, str] = {
    "file": "obsd.outputs.file",
    "console": "obsd.outputs.console",
    "sentry": "obsd.outputs.sentry",
    "graphite": "obsd.outputs.graphite",
    "elasticsearch": "obsd.outputs.elasticsearch",
    "relay": "obsd.outputs.relay",
    "syslog": "obsd.outputs.syslog",
    "influxdb": "obsd.outputs.influxdb",
    "prometheus": "obsd.outputs.prometheus",
    "remote_write": "obsd.outputs.remote_write",
    "kafka": "obsd.outputs.kafka",
}


def input_module(type_name: str) -> InputModule | None:
    """The module for an input type, or None when obsd has no such type."""
    name = INPUT_MODULES.get(type_name)
    return cast(InputModule, importlib.import_module(name)) if name else None


def output_module(type_name: str) -> OutputModule | None:
    """The module for an output type, or None when obsd has no such type."""
    name = OUTPUT_MODULES.get(type_name)
    return cast(OutputModule, importlib.import_module(name)) if name else None
