"""obsd event fields from Sentry payloads: errors, envelope items and their summaries.

What obsd indexes and routes on (message, level, exception type, culprit
frames, tags, release, ...), read leniently: a field of the wrong type is left
out, never an error, because the payload itself is forwarded whole.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from obsd import events
from obsd.codecs import jsonread
from obsd.codecs.sentry import MAX_FRAMES, Envelope, EnvelopeItem, event_id_of, parse_json


def error_event_fields(
    payload: Mapping[str, Any], project_id: int | None
) -> dict[str, Any]:
    """The obsd fields (``kind="error"``) for one Sentry error or message event.

    Only the listed keys are set, each from a known place in the payload, so a
    sender can never write a reserved key obsd did not mean to set.
    """
    fields: dict[str, Any] = {
        events.KIND: events.ERROR,
        events.ID: event_id_of(payload.get("event_id")) or events.new_event_id(),
        events.LEVEL: events.normalise_level(payload.get("level"), events.ERROR_LEVEL),
    }
    exception = _last_exception(payload)
    exc_type = _text(exception.get("type")) if exception else None
    exc_value = _text(exception.get("value")) if exception else None
    message = _message(payload)
    if message is None and exc_type is not None:
        message = f"{exc_type}: {exc_value}" if exc_value else exc_type
    fields[events.EVENT] = message if message is not None else "<no message>"
    timestamp = parse_timestamp(payload.get("timestamp"))
    if timestamp is not None:
        fields[events.TIMESTAMP] = timestamp
    if exc_type is not None:
        fields["exception_type"] = exc_type
    if exc_value is not None:
        fields["exception_value"] = exc_value
    stacktrace = exception.get("stacktrace") if exception else payload.get("stacktrace")
    frames = _frames(stacktrace)
    if frames:
        fields["frames"] = frames
    for name in (
        "culprit",
        "transaction",
        "release",
        "environment",
        "platform",
        "logger",
        "server_name",
    ):
        value = _text(payload.get(name))
        if value is not None:
            fields[name] = value
    if "server_name" in fields:
        fields[events.HOST] = fields["server_name"]
    sdk = payload.get("sdk")
    sdk_name = _text(sdk.get("name")) if isinstance(sdk, Mapping) else None
    if sdk_name is not None:
        fields["sdk"] = sdk_name
    tags = _tags(payload.get("tags"))
    if tags:
        fields[events.TAGS] = tags
    user = payload.get("user")
    user_id = _text(user.get("id")) if isinstance(user, Mapping) else None
    if user_id is not None:
        fields["user_id"] = user_id
    extra = payload.get("extra")
    if isinstance(extra, Mapping) and extra:
        fields["extra"] = dict(extra)
    if project_id is not None:
        fields["project_id"] = project_id
    return fields


def item_event_fields(
    item: EnvelopeItem, envelope_headers: Mapping[str, Any], project_id: int | None
) -> dict[str, Any]:
    """The obsd fields (``kind="sentry"``) summing up one non-error envelope item.

    Never raises: an item whose payload obsd cannot read still gets its type
    and size, since it is forwarded whole anyway.
    """
    item_type = item.type or "unknown"
    fields: dict[str, Any] = {
        events.KIND: events.SENTRY,
        events.EVENT: f"sentry.{item_type}",
        events.LEVEL: events.INFO,
        "item_type": item_type,
        "size": len(item.payload),
    }
    event_id = event_id_of(envelope_headers.get("event_id"))
    payload: Mapping[str, Any] = {}
    if item_type != "attachment":
        payload = _lenient_json(item.payload)
    event_id = event_id_of(payload.get("event_id")) or event_id
    if event_id is not None and item_type in (
        "transaction",
        "attachment",
        "user_report",
        "feedback",
        "profile",
        "event",
    ):
        fields[events.ID] = event_id
    sdk = envelope_headers.get("sdk")
    sdk_name = _text(sdk.get("name")) if isinstance(sdk, Mapping) else None
    if sdk_name is not None:
        fields["sdk"] = sdk_name
    summarise = _SUMMARIES.get(item_type)
    if summarise is not None:
        summarise(item, payload, fields)
    timestamp = parse_timestamp(payload.get("timestamp"))
    if timestamp is not None:
        fields[events.TIMESTAMP] = timestamp
    if project_id is not None:
        fields["project_id"] = project_id
    return fields


def envelope_event_fields(
    envelope: Envelope, project_id: int | None
) -> list[dict[str, Any]]:
    """One field dict per item: ``error_event_fields`` for events, else ``item_event_fields``.

    Raises:
        SentryRequestError: 400 if an ``event`` item is not a JSON object.
    """
    out = []
    for item in envelope.items:
        if item.type == "event":
            payload = parse_json(item.payload)
            if "event_id" not in payload and envelope.event_id is not None:
                payload = {**payload, "event_id": envelope.event_id}
            out.append(error_event_fields(payload, project_id))
        else:
            out.append(item_event_fields(item, envelope.headers, project_id))
    return out


def _summary_transaction(
    _item: EnvelopeItem, payload: Mapping[str, Any], fields: dict[str, Any]
) -> None:
    name = _text(payload.get("transaction"))
    if name is not None:
        fields[events.EVENT] = name
        fields["transaction"] = name
    contexts = payload.get("contexts")
    trace = contexts.get("trace") if isinstance(contexts, Mapping) else None
    if isinstance(trace, Mapping):
        for key in ("op", "status", "trace_id"):
            value = _text(trace.get(key))
            if value is not None:
                fields[key] = value
    start, end = (
        parse_timestamp(payload.get("start_timestamp")),
        parse_timestamp(payload.get("timestamp")),
    )
    if start is not None and end is not None:
        fields["duration_ms"] = round((end - start) * 1000, 3)
    spans = payload.get("spans")
    if isinstance(spans, list):
        fields["span_count"] = len(spans)
    _copy_text(payload, fields, "release", "environment", "platform", "server_name")


def _summary_session(
    _item: EnvelopeItem, payload: Mapping[str, Any], fields: dict[str, Any]
) -> None:
    _copy_text(payload, fields, "status", "sid")
    errors = payload.get("errors")
    if isinstance(errors, int) and not isinstance(errors, bool):
        fields["errors"] = errors
    if isinstance(payload.get("init"), bool):
        fields["init"] = payload["init"]
    _copy_attrs(payload, fields)


def _summary_sessions(
    _item: EnvelopeItem, payload: Mapping[str, Any], fields: dict[str, Any]
) -> None:
    totals: dict[str, int] = {}
    aggregates = payload.get("aggregates")
    for bucket in aggregates if isinstance(aggregates, list) else ():
        if not isinstance(bucket, Mapping):
            continue
        for name in ("exited", "errored", "abnormal", "crashed"):
            count = bucket.get(name)
            if isinstance(count, int) and not isinstance(count, bool):
                totals[name] = totals.get(name, 0) + count
    fields.update(totals)
    _copy_attrs(payload, fields)


def _summary_attachment(
    item: EnvelopeItem, _payload: Mapping[str, Any], fields: dict[str, Any]
) -> None:
    _copy_text(item.headers, fields, "filename", "content_type", "attachment_type")


def _summary_client_report(
    _item: EnvelopeItem, payload: Mapping[str, Any], fields: dict[str, Any]
) -> None:
    discarded = payload.get("discarded_events")
    total = 0
    for entry in discarded if isinstance(discarded, list) else ():
        quantity = entry.get("quantity") if isinstance(entry, Mapping) else None
        if isinstance(quantity, int) and not isinstance(quantity, bool):
            total += quantity
    fields["discarded"] = total


def _summary_check_in(
    _item: EnvelopeItem, payload: Mapping[str, Any], fields: dict[str, Any]
) -> None:
    _copy_text(
        payload,
        fields,
        "monitor_slug",
        "status",
        "check_in_id",
        "environment",
        "release",
    )
    duration = payload.get("duration")
    if isinstance(duration, int | float) and not isinstance(duration, bool):
        fields["duration"] = duration


def _summary_log(
    item: EnvelopeItem, payload: Mapping[str, Any], fields: dict[str, Any]
) -> None:
    entries = payload.get("items")
    count = item.headers.get("item_count")
    if isinstance(entries, list):
        count = len(entries)
    if isinstance(count, int) and not isinstance(count, bool):
        fields["item_count"] = count


_SUMMARIES: Final = {
    "transaction": _summary_transaction,
    "session": _summary_session,
    "sessions": _summary_sessions,
    "attachment": _summary_attachment,
    "client_report": _summary_client_report,
    "check_in": _summary_check_in,
    "log": _summary_log,
}


def _copy_text(source: Mapping[str, Any], fields: dict[str, Any], *names: str) -> None:
    for name in names:
        value = _text(source.get(name))
        if value is not None:
            fields[name] = value


def _copy_attrs(payload: Mapping[str, Any], fields: dict[str, Any]) -> None:
    attrs = payload.get("attrs")
    if isinstance(attrs, Mapping):
        _copy_text(attrs, fields, "release", "environment")


def _lenient_json(data: bytes) -> Mapping[str, Any]:
    try:
        value = jsonread.loads(data)
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return str(value)
    return None


def _message(payload: Mapping[str, Any]) -> str | None:
    """The formatted message: ``logentry`` (raven: ``sentry.interfaces.Message``) or ``message``.

    A ready ``formatted`` text wins; else a template is filled from its
    ``params`` as Sentry does (``%`` style), falling back to the bare template.
    """
    message = payload.get("message")
    candidates = [
        message,
        payload.get("logentry"),
        payload.get("sentry.interfaces.Message"),
    ]
    entries: list[Mapping[str, Any]] = [
        entry for entry in candidates if isinstance(entry, Mapping)
    ]
    for entry in entries:
        formatted = _text(entry.get("formatted"))
        if formatted is not None:
            return formatted
    template = _text(message) if not isinstance(message, Mapping) else None
    params: Any = None
    for entry in entries:
        template = template or _text(entry.get("message"))
        params = params or entry.get("params")
    if template is not None and isinstance(params, list | dict) and params:
        try:
            return template % (tuple(params) if isinstance(params, list) else params)
        except (TypeError, ValueError, KeyError):
            return template
    return template


def _last_exception(payload: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for key in ("exception", "sentry.interfaces.Exception"):
        container = payload.get(key)
        values = (
            container.get("values") if isinstance(container, Mapping) else container
        )
        if isinstance(values, list):
            found = [value for value in values if isinstance(value, Mapping)]
            if found:
                return found[-1]
        elif isinstance(container, Mapping) and "type" in container:
            return container
    return None


def _frames(stacktrace: Any) -> list[str]:
    """``module:function:lineno`` for the innermost ``MAX_FRAMES`` frames, innermost last."""
    if not isinstance(stacktrace, Mapping):
        return []
    frames = stacktrace.get("frames")
    if not isinstance(frames, list):
        return []
    out = []
    for frame in frames[-MAX_FRAMES:]:
        if not isinstance(frame, Mapping):
            continue
        where = (
            _text(frame.get("module"))
            or _text(frame.get("filename"))
            or _text(frame.get("abs_path"))
            or "?"
        )
        function = _text(frame.get("function")) or "?"
        lineno = frame.get("lineno")
        line = (
            str(lineno)
            if isinstance(lineno, int) and not isinstance(lineno, bool)
            else "?"
        )
        out.append(f"{where}:{function}:{line}")
    return out


def _tags(value: Any) -> dict[str, str]:
    """Tags as a dict: raven sends a dict, sentry-sdk a dict or a list of pairs."""
    pairs: list[Any]
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, list):
        pairs = [
            pair for pair in value if isinstance(pair, list | tuple) and len(pair) == 2
        ]
    else:
        return {}
    out = {}
    for key, item in pairs:
        name, text = _text(key), _text(item)
        if name is not None and text is not None:
            out[name] = text
    return out


def parse_timestamp(value: Any) -> float | None:
    """A Sentry timestamp (epoch number or ISO 8601, naive meaning UTC) as UTC epoch seconds."""
    number: float | None = None
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and value:
        try:
            number = float(value)
        except ValueError:
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                return None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            number = moment.timestamp()
    if number is None or not math.isfinite(number) or number < 0:
        return None
    return number
