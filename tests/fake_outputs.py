"""A test-only output type that takes only metrics and has a secret, for config tests."""

from __future__ import annotations

import attrs

from obsd.config.model import OutputConfig
from obsd.config.schema import setting

ACCEPTS = frozenset({"metric"})
DEFAULT_KINDS = frozenset({"metric"})


@attrs.frozen(kw_only=True)
class Config(OutputConfig):
    """A metric-only output with a password."""

    url: str = setting("http://127.0.0.1:1")
    password: str = setting("", secret=True)


def build_output(name, config, context):  # pragma: no cover - config tests only
    raise NotImplementedError
