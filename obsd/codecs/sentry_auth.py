"""Sentry ingest auth: the key, client and version from a header, the query or a DSN.

The sources a request may carry (``X-Sentry-Auth``, ``Authorization``, the
query string, an envelope's ``dsn``) must agree; ``authorize`` then checks the
key against the configured projects.  Errors are ``SentryRequestError`` with
Relay's status and text (see ``obsd.codecs.sentry``).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final
from urllib.parse import urlsplit

from obsd.codecs.sentry import PROTOCOL_VERSION, SentryAuth, SentryRequestError

_KEY_RE: Final = re.compile(r"[0-9A-Za-z_-]{32}")


def parse_auth(
    headers: Mapping[str, str],
    query: Mapping[str, Sequence[str]],
    envelope_dsn: str | None = None,
) -> SentryAuth:
    """Find the client's key in ``X-Sentry-Auth``, ``Authorization: Sentry``, the query or a DSN.

    ``headers`` names are matched case-insensitively; ``query`` maps each name to
    its values (``urllib.parse.parse_qs`` shape).  Sources that agree are merged;
    sources naming different keys are refused, as is a request with none.

    Raises:
        SentryRequestError: 401 or 400, see the module table.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    found: list[SentryAuth] = []
    x_sentry_auth = lowered.get("x-sentry-auth")
    if x_sentry_auth is not None and x_sentry_auth.strip():
        found.append(_auth_from_header(x_sentry_auth, prefix_required=False))
    authorization = lowered.get("authorization")
    if authorization is not None and authorization[:7].lower() == "sentry ":
        found.append(_auth_from_header(authorization, prefix_required=True))
    if any(name.startswith("sentry_") for name in query):
        found.append(_auth_from_query(query))
    if envelope_dsn is not None:
        found.append(_auth_from_dsn(envelope_dsn))
    if not found:
        raise SentryRequestError(401, "missing authorization information")
    merged = found[0]
    for other in found[1:]:
        merged = _merge(merged, other)
    _check_key(merged.key)
    if merged.version is not None and merged.version > PROTOCOL_VERSION:
        raise SentryRequestError(
            400, f"unsupported protocol version ({merged.version})"
        )
    return merged


def _auth_from_header(value: str, *, prefix_required: bool) -> SentryAuth:
    text = value.strip()
    if text[:7].lower() == "sentry ":
        text = text[7:]
    elif prefix_required:
        raise SentryRequestError(401, "bad x-sentry-auth header", "non sentry auth")
    pairs: dict[str, str] = {}
    for part in text.split(","):
        name, sep, item = part.strip().partition("=")
        if not sep:
            continue
        pairs[name.strip().lower()] = item.strip().strip('"')
    return _auth_from_pairs(pairs, "bad x-sentry-auth header")


def _auth_from_query(query: Mapping[str, Sequence[str]]) -> SentryAuth:
    pairs: dict[str, str] = {}
    for name, values in query.items():
        if not name.startswith("sentry_"):
            continue
        distinct = set(values)
        if len(distinct) > 1:
            raise SentryRequestError(401, "multiple authorization payloads detected")
        if distinct:
            pairs[name] = distinct.pop()
    return _auth_from_pairs(pairs, "bad x-sentry-auth header")


def _auth_from_pairs(pairs: Mapping[str, str], detail: str) -> SentryAuth:
    def get(name: str) -> str | None:
        value = pairs.get("sentry_" + name, pairs.get(name))
        return value or None

    key = get("key")
    if key is None:
        raise SentryRequestError(401, detail, "missing public key")
    version_text = get("version")
    version = None
    if version_text is not None:
        try:
            version = int(float(version_text))
        except ValueError:
            raise SentryRequestError(401, detail, "invalid value for version") from None
    return SentryAuth(
        key=key, secret=get("secret"), client=get("client"), version=version
    )


def _auth_from_dsn(dsn: str) -> SentryAuth:
    detail = "bad envelope authentication header"
    try:
        parts = urlsplit(dsn)
        username, password = parts.username, parts.password
    except ValueError:
        raise SentryRequestError(401, detail, "invalid dsn") from None
    if parts.scheme not in ("http", "https") or not username or not parts.hostname:
        raise SentryRequestError(401, detail, "invalid dsn")
    project = parts.path.rstrip("/").rpartition("/")[2]
    if not project.isdigit():
        raise SentryRequestError(401, detail, "dsn has no project id")
    return SentryAuth(key=username, secret=password or None, project_id=int(project))


def _merge(first: SentryAuth, other: SentryAuth) -> SentryAuth:
    """Join two sources; any field both set must agree, or the request is ambiguous."""
    values: dict[str, Any] = {}
    for name in ("key", "secret", "client", "version", "project_id"):
        mine, theirs = getattr(first, name), getattr(other, name)
        if (
            mine is not None
            and theirs is not None
            and mine != theirs
            and name != "client"
        ):
            raise SentryRequestError(401, "multiple authorization payloads detected")
        values[name] = mine if mine is not None else theirs
    return SentryAuth(**values)


def authorize(
    auth: SentryAuth,
    path_project_id: str | None,
    projects: Mapping[int, Collection[str]] | None,
) -> int | None:
    """The project a request belongs to, checking its key against ``projects``.

    ``path_project_id`` is the ``<project_id>`` URL segment (``None`` on
    ``/api/store/``); ``projects`` maps project id to its public keys, or is
    ``None`` to accept any key (the open mode config must allow explicitly).

    Raises:
        SentryRequestError: 400 bad path or dsn/path mismatch; 403 unknown key
            or a key of another project.
    """
    path_id = None
    if path_project_id is not None:
        if not path_project_id.isdigit():
            raise SentryRequestError(400, "bad project path parameter")
        path_id = int(path_project_id)
    if (
        path_id is not None
        and auth.project_id is not None
        and path_id != auth.project_id
    ):
        raise SentryRequestError(
            400,
            "invalid event envelope",
            "project id header mismatch between envelope and request",
        )
    claimed = path_id if path_id is not None else auth.project_id
    if projects is None:
        return claimed
    key = auth.key.partition(".")[0]
    owner = next((pid for pid, keys in projects.items() if key in keys), None)
    if owner is None:
        raise SentryRequestError(
            403,
            "event submission rejected with_reason: ProjectId",
            "unknown public key",
        )
    if claimed is not None and claimed != owner:
        raise SentryRequestError(
            403,
            "event submission rejected with_reason: ProjectId",
            "project id and key disagree",
        )
    return owner


def _check_key(key: str) -> None:
    # A key may carry flags after a dot (Relay's ``key.no-cache``); the key is before it.
    if not _KEY_RE.fullmatch(key.partition(".")[0]):
        raise SentryRequestError(
            400, "bad sentry DSN public key", "invalid project key"
        )
