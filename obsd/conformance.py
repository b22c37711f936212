"""Where mypy checks that every module in the registry meets its contract.

Nothing imports this module: it only binds each registered input and output
module to the ``InputModule`` or ``OutputModule`` protocol, so a module that
lacks ``Config``, ``build_output`` or the like fails ``mypy --strict``.  (It
lives outside the registry because mypy cannot match modules in an import
cycle against a protocol.)  A new input or output is added here and in
``obsd/registry.py``.
"""

from __future__ import annotations

import obsd.inputs.gelf as gelf_in
import obsd.inputs.graphite as graphite_in
import obsd.inputs.kafka as kafka_in
import obsd.inputs.otlp as otlp_in
import obsd.inputs.relay as relay_in
import obsd.inputs.sentry as sentry_in
import obsd.inputs.statsd as statsd_in
import obsd.inputs.syslog as syslog_in
import obsd.outputs.console as console_out
import obsd.outputs.elasticsearch as elasticsearch_out
import obsd.outputs.file as file_out
import obsd.outputs.graphite as graphite_out
import obsd.outputs.influxdb as influxdb_out
import obsd.outputs.kafka as kafka_out
import obsd.outputs.prometheus as prometheus_out
import obsd.outputs.relay as relay_out
import obsd.outputs.remote_write as remote_write_out
import obsd.outputs.sentry as sentry_out
import obsd.outputs.syslog as syslog_out
from obsd.contracts import InputModule, OutputModule

_INPUTS: list[InputModule] = [
    gelf_in, graphite_in, otlp_in, relay_in, sentry_in, statsd_in, syslog_in, kafka_in,
]
_OUTPUTS: list[OutputModule] = [
    console_out, elasticsearch_out, file_out, graphite_out, influxdb_out, prometheus_out,
    relay_out, remote_write_out, sentry_out, syslog_out, kafka_out,
]
