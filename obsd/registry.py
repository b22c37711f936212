"""Which module implements each input and output type: one explicit table.

Modules are named, not imported, so reading the table costs nothing; the config
loader imports a module only when a config uses its type.  An input module
provides ``Config`` (an ``InputConfig`` subclass), ``LISTEN_TYPES`` (the endpoint
types it takes, empty for inputs that mount on ``[http]``) and
``build_input(name, config, context) -> IService``.  An output module provides
``Config`` (an ``OutputConfig`` subclass), ``ACCEPTS`` and ``DEFAULT_KINDS``
(event kinds it can take, and takes when no route says otherwise) and
``build_output(name, config, context) -> Output``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

INPUT_MODULES: dict[str, str] = {
    "gelf": "obsd.inputs.gelf",
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
}


def input_module(type_name: str) -> ModuleType | None:
    """The module for an input type, or None when obsd has no such type."""
    name = INPUT_MODULES.get(type_name)
    return importlib.import_module(name) if name else None


def output_module(type_name: str) -> ModuleType | None:
    """The module for an output type, or None when obsd has no such type."""
    name = OUTPUT_MODULES.get(type_name)
    return importlib.import_module(name) if name else None
