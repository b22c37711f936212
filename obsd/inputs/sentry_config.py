"""The Sentry input's settings: projects and keys, body and item limits, scrubbing.

Kept apart from ``inputs/sentry.py`` (the ingest resource); ``obsd.inputs.sentry``
exports both.
"""

from __future__ import annotations

import re
from typing import Literal

import attrs

from obsd.codecs import sentry as codec
from obsd.config.model import InputConfig, ObsdConfig
from obsd.config.schema import Problems, at_least, setting

#: A public key as Relay accepts it (the DSN's user part).
_KEY = re.compile(r"[0-9A-Za-z_-]{32}")


def _check_keys(keys: list[str]) -> str | None:
    bad = [key for key in keys if not _KEY.fullmatch(key)]
    if bad:
        return f"public keys are 32 characters of [0-9A-Za-z_-]; not: {', '.join(bad)}"
    return None


@attrs.frozen(kw_only=True)
class ProjectConfig:
    """One ``projects`` entry: a Sentry project id and the public keys it accepts."""

    id: int = setting(check=at_least(1), help="the project id (the DSN's last path segment)")
    keys: list[str] = setting(
        factory=list, check=_check_keys, help="public keys (the DSN's user part)"
    )


@attrs.frozen(kw_only=True)
class ScrubConfig:
    """``scrub``: the secret-scrubbing rules for events bound to non-Sentry outputs."""

    keys: list[str] = setting(
        factory=list, help="extra key substrings whose values are replaced by [Filtered]"
    )
    defaults: bool = setting(True, help="also apply the default rules (password, token, ...)")


@attrs.frozen(kw_only=True)
class Config(InputConfig):
    """``[inputs.sentry]``: Sentry ingest mounted on ``[http]`` at ``/api``."""

    projects: list[ProjectConfig] = setting(
        factory=list, help="accepted projects and keys; empty accepts any key (see allow_any_key)"
    )
    max_event_bytes: int = setting(
        codec.MAX_EVENT_BYTES, check=at_least(1024), help="store body limit, compressed or not",
        client_sees="413 'request body exceeded the size limit' for a store body or an envelope's "
                    "event item over it; a Content-Length over it is refused before the body is "
                    "read",
    )
    max_envelope_bytes: int = setting(
        codec.MAX_ENVELOPE_BYTES, check=at_least(1024), help="envelope body limit",
        client_sees="413 'request body exceeded the size limit'; a Content-Length over it is "
                    "refused before the body is read",
    )
    max_envelope_items: int = setting(
        codec.MAX_ENVELOPE_ITEMS, check=at_least(1), help="items one envelope may hold",
        client_sees="413 'request body exceeded the size limit: more than N items'; parsing "
                    "stops at the limit",
    )
    allow_any_key: bool = setting(
        False, help="allow an empty projects list while [http] listens beyond loopback"
    )
    scrub: ScrubConfig = setting(factory=ScrubConfig)
    shed_status: Literal[503, 429] = setting(
        503, help="the status answered while outputs are congested (with Retry-After)"
    )
    cors_origin: str = setting("*", help="Access-Control-Allow-Origin for browser SDKs")


def check_config(name: str, cfg: Config, whole: ObsdConfig, problems: Problems) -> None:
    """Refuse an open key list while ``[http]`` is reachable from other hosts.

    Without projects every key is accepted and forwarded upstream: an open relay
    into the upstream Sentry, unless only this host can reach it.
    """
    seen: dict[str, int] = {}
    for i, project in enumerate(cfg.projects):
        for key in project.keys:
            if key in seen and seen[key] != project.id:
                problems.add(
                    f"inputs.{name}.projects[{i}].keys",
                    f"key {key} belongs to project {seen[key]} already",
                )
            seen[key] = project.id
    if cfg.projects or cfg.allow_any_key:
        return
    for i, description in enumerate(whole.http.listen):
        try:
            listener = whole.http_listeners()[i]
        except ValueError:
            continue  # reported as http.listen[i] already
        if not listener.is_loopback:
            problems.add(
                f"inputs.{name}.projects",
                f"empty, so any key is accepted, but http.listen[{i}] ({description!r}) is "
                "not loopback-only: list the projects and their keys, or set "
                "allow_any_key = true",
            )
            return
