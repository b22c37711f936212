"""The event model every input and output shares: key names, kinds, levels and ids.

An event is a plain ``dict``.  Its reserved keys are listed in ``RESERVED``; data
a sender controls never overwrites them (inputs keep such colliding keys under
``COLLISION_PREFIX``).  Keys that start with ``_`` are private: outputs drop them
unless they ask for them (a Sentry payload kept for forwarding, say).
"""

from __future__ import annotations

import os
import random
import time
from typing import Any, Final

# Key names.
ID: Final = "id"
KIND: Final = "kind"
EVENT: Final = "event"
LEVEL: Final = "level"
TIMESTAMP: Final = "timestamp"
RECEIVED_AT: Final = "received_at"
SOURCE: Final = "source"
HOST: Final = "host"
VALUE: Final = "value"
TAGS: Final = "tags"
#: Metric events: the base StatsD name, without namespace or suffix (``myapp.requests``).
METRIC_NAME: Final = "metric"
#: Metric events: one of ``METRIC_TYPES``.
METRIC_TYPE: Final = "metric_type"
#: Metric events: which statistic of the metric the value is (``rate``, ``count``,
#: ``value``, ``mean``, ``upper_90``, ``histogram.bin_100``...).
STAT: Final = "stat"
#: Metric events whose ``tags`` are not part of their series (StatsD with
#: ``graphite_tags = false``) carry ``False`` here, so Graphite keeps them off the path.
GRAPHITE_TAGS: Final = "_graphite_tags"

RESERVED: Final = frozenset(
    (
        ID,
        KIND,
        EVENT,
        LEVEL,
        TIMESTAMP,
        RECEIVED_AT,
        SOURCE,
        HOST,
        VALUE,
        TAGS,
        METRIC_NAME,
        METRIC_TYPE,
        STAT,
    )
)
#: Where a sender's value for a reserved key is kept instead (``data_level``): not a
#: dotted name, which Elasticsearch would turn into an object under ``data``.
COLLISION_PREFIX: Final = "data_"

# Kinds.
LOG: Final = "log"
ERROR: Final = "error"
METRIC: Final = "metric"
SENTRY: Final = "sentry"
#: A StatsD agent's per-interval partial aggregate of one series, for central to
#: merge (``obsd.aggregation.partials``); never a point a metric output writes.
STATSD_PARTIAL: Final = "statsd_partial"
#: a trace span (OpenTelemetry): name, ids, timing and status
SPAN: Final = "span"
KINDS: Final = (LOG, ERROR, METRIC, SENTRY, SPAN, STATSD_PARTIAL)

# Metric types (``METRIC_TYPE``) and the statistic of a single-valued metric.
COUNTER: Final = "counter"
GAUGE: Final = "gauge"
TIMER: Final = "timer"
SET: Final = "set"
METRIC_TYPES: Final = (COUNTER, GAUGE, TIMER, SET)
STAT_VALUE: Final = "value"

# Levels, in increasing order of severity.
DEBUG: Final = "debug"
INFO: Final = "info"
WARNING: Final = "warning"
ERROR_LEVEL: Final = "error"
CRITICAL: Final = "critical"
LEVELS: Final = (DEBUG, INFO, WARNING, ERROR_LEVEL, CRITICAL)
LEVEL_RANK: Final = {name: rank for rank, name in enumerate(LEVELS)}

#: The one table that maps every level spelling obsd meets to obsd's five.
#: syslog severities (names and numbers 0-7), Python logging and raven's numeric
#: levels (10..50), Sentry's ``fatal``/``log``, structlog's ``warn``/``exception``.
LEVEL_ALIASES: Final[dict[str, str]] = {
    # obsd's own names
    "debug": DEBUG,
    "info": INFO,
    "warning": WARNING,
    "error": ERROR_LEVEL,
    "critical": CRITICAL,
    # syslog severity keywords (RFC 5424 section 6.2.1 and common abbreviations)
    "emerg": CRITICAL,
    "emergency": CRITICAL,
    "panic": CRITICAL,
    "alert": CRITICAL,
    "crit": CRITICAL,
    "err": ERROR_LEVEL,
    "notice": INFO,
    "informational": INFO,
    # structlog / stdlib / Sentry spellings
    "warn": WARNING,
    "exception": ERROR_LEVEL,
    "fatal": CRITICAL,
    "log": INFO,
    "trace": DEBUG,
    "notset": DEBUG,
}

#: syslog severity number (0 emerg .. 7 debug) to obsd level.
SYSLOG_SEVERITY_LEVELS: Final = (
    CRITICAL,  # 0 emerg
    CRITICAL,  # 1 alert
    CRITICAL,  # 2 crit
    ERROR_LEVEL,  # 3 err
    WARNING,  # 4 warning
    INFO,  # 5 notice
    INFO,  # 6 info
    DEBUG,  # 7 debug
)
#: obsd level back to the syslog severity number used when obsd emits syslog.
LEVEL_SYSLOG_SEVERITY: Final = {
    DEBUG: 7,
    INFO: 6,
    WARNING: 4,
    ERROR_LEVEL: 3,
    CRITICAL: 2,
}
#: obsd level back to Sentry's level names.
LEVEL_SENTRY: Final = {
    DEBUG: "debug",
    INFO: "info",
    WARNING: "warning",
    ERROR_LEVEL: "error",
    CRITICAL: "fatal",
}


def normalise_level(value: Any, default: str = INFO) -> str:
    """Map any level spelling or number to one of ``LEVELS``.

    Numbers from 10 up are Python logging / raven levels (10 debug .. 50
    critical); 0-7 are syslog severities.  Unknown values give ``default``.
    """
    if isinstance(value, str):
        found = LEVEL_ALIASES.get(value.lower())
        if found is not None:
            return found
        if value.isdigit():
            return normalise_level(int(value), default)
        return default
    if isinstance(value, bool):
        return default
    if isinstance(value, int | float):
        number = int(value)
        if 0 <= number <= 7:
            return SYSLOG_SEVERITY_LEVELS[number]
        if number >= 50:
            return CRITICAL
        if number >= 40:
            return ERROR_LEVEL
        if number >= 30:
            return WARNING
        if number >= 20:
            return INFO
        if number >= 8:
            return DEBUG
    return default


def level_at_least(level: str, minimum: str) -> bool:
    """Whether ``level`` is as severe as ``minimum`` or more."""
    return LEVEL_RANK.get(level, 1) >= LEVEL_RANK.get(minimum, 0)


#: random bits for ids: a generator seeded from the OS once per process
_bits = random.Random(os.urandom(32)).getrandbits


def new_event_id(now: float | None = None) -> str:
    """Return a new UUIDv7 (RFC 9562) as 32 hex digits: time-ordered, unique.

    The hex form without dashes matches Sentry's ``event_id``, so ids from
    both sources look alike.  The random bits come from a generator seeded
    from the OS once per process (an id must be unique, not unguessable): a
    system call per event was the most of an id's cost.
    """
    millis = int((time.time() if now is None else now) * 1000) & 0xFFFFFFFFFFFF
    rand = _bits(80)
    rand_a = rand >> 68 & 0xFFF
    rand_b = rand & 0x3FFFFFFFFFFFFFFF
    value = millis << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return f"{value:032x}"


def keep_reserved_safe(fields: dict[str, Any], target: dict[str, Any]) -> None:
    """Copy sender-controlled ``fields`` into ``target`` without overwriting reserved keys.

    A reserved key (``level``, ``host``...) in the sender's data is kept as
    ``data_<key>``; private ``_`` keys from senders are kept as ``data__key``
    so they can never impersonate obsd's own private keys.
    """
    for key, value in fields.items():
        if key in RESERVED or key.startswith("_"):
            target[COLLISION_PREFIX + key] = value
        else:
            target[key] = value
