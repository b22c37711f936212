"""Write events as RFC 5424 syslog messages, framed by octet counting (RFC 6587 3.4.1).

Pure.  The inverse of ``obsd.codecs.syslog.parse_rfc5424`` for what obsd's
events hold: ``facility`` and ``severity`` (RFC names; the severity falls back
to the event's ``level`` through ``LEVEL_SYSLOG_SEVERITY``), ``host``,
``appname``, ``procid``, ``msgid``, ``sd`` (a dict of dicts) and the message,
``event``, as BOM-less UTF-8 (RFC 5424 6.4 allows MSG-ANY; receivers that see
no BOM take the bytes as they are, and rsyslog passes them through).  Header
fields are cut to their RFC lengths and stripped to printable US-ASCII, so a
sender's odd app name can never break the frame.
"""

from __future__ import annotations

import re
from typing import Any, Final

from obsd import events
from obsd.codecs.jsonline import encode_json_line, rfc3339
from obsd.codecs.syslog import FACILITY_NAMES, SEVERITY_NAMES

FACILITY_CODES: Final = {name: code for code, name in enumerate(FACILITY_NAMES)}
SEVERITY_CODES: Final = {name: code for code, name in enumerate(SEVERITY_NAMES)}

NIL: Final = "-"
_NOT_PRINTUSASCII = re.compile(r"[^\x21-\x7e]+")
_NOT_SD_NAME = re.compile(r'[^\x21-\x7e]|[=\]"]')
_SD_VALUE_ESCAPE = re.compile(r'(["\\\]])')


def header_field(value: Any, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, at most ``limit``, or ``-``."""
    if value is None or value == "":
        return NIL
    text = _NOT_PRINTUSASCII.sub("_", str(value))[:limit]
    return text or NIL


def sd_name(value: Any) -> str:
    """An SD-ID or PARAM-NAME: 1-32 printable ASCII, no ``= ] "`` or space."""
    return _NOT_SD_NAME.sub("_", str(value))[:32] or "_"


def structured_data(sd: Any) -> str:
    """``[id name="value"...]...`` from a dict of dicts, or ``-``."""
    if not isinstance(sd, dict) or not sd:
        return NIL
    parts = []
    for sd_id, params in sd.items():
        element = [sd_name(sd_id)]
        if isinstance(params, dict):
            for name, value in params.items():
                text = _SD_VALUE_ESCAPE.sub(r"\\\1", str(value))
                element.append(f'{sd_name(name)}="{text}"')
        parts.append("[" + " ".join(element) + "]")
    return "".join(parts)


def priority(event: dict[str, Any], default_facility: str) -> int:
    """PRI = facility * 8 + severity, from the event's names or its level."""
    facility = FACILITY_CODES.get(event.get("facility"), FACILITY_CODES[default_facility])  # type: ignore[arg-type]
    severity = SEVERITY_CODES.get(event.get("severity"))  # type: ignore[arg-type]
    if severity is None:
        level = event.get(events.LEVEL)
        severity = events.LEVEL_SYSLOG_SEVERITY.get(
            level if level in events.LEVEL_RANK else events.normalise_level(level), 6
        )
    return facility * 8 + severity


def format_rfc5424(
    event: dict[str, Any],
    *,
    default_facility: str = "user",
    default_appname: str = "obsd",
    hostname: str = "",
    json_message: bool = False,
) -> bytes:
    """The RFC 5424 message for ``event`` (no framing, no trailing newline)."""
    stamp = event.get(events.TIMESTAMP)
    timestamp = (
        rfc3339(stamp)
        if isinstance(stamp, int | float) and not isinstance(stamp, bool) and stamp >= 0
        else NIL
    )
    if json_message:
        message = encode_json_line(event)[:-1].decode("utf-8")
    else:
        text = event.get(events.EVENT)
        message = text if isinstance(text, str) else ("" if text is None else str(text))
    header = " ".join((
        f"<{priority(event, default_facility)}>1",
        timestamp,
        header_field(event.get(events.HOST) or hostname, 255),
        header_field(event.get("appname") or default_appname, 48),
        header_field(event.get("procid"), 128),
        header_field(event.get("msgid"), 32),
        structured_data(event.get("sd")),
    ))
    line = f"{header} {message}" if message else header
    return line.encode("utf-8", "replace")


def octet_frame(message: bytes) -> bytes:
    """RFC 6587 octet counting: ``MSG-LEN SP SYSLOG-MSG``."""
    return b"%d %s" % (len(message), message)


__all__ = ["format_rfc5424", "octet_frame", "priority", "structured_data"]
