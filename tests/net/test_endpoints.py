"""Listen strings as Twisted gets them."""

from __future__ import annotations

import pytest

from obsd.net.endpoints import DEFAULT_BACKLOG, STREAM_TYPES, parse_listener


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ("tcp:9000:interface=127.0.0.1", f"tcp:9000:interface=127.0.0.1:backlog={DEFAULT_BACKLOG}"),
        ("unix:/run/obsd.sock", f"unix:/run/obsd.sock:backlog={DEFAULT_BACKLOG}"),
        ("tcp:9000:backlog=10", "tcp:9000:backlog=10"),
        ("systemd:domain=INET:index=0", "systemd:domain=INET:index=0"),
    ],
)
def test_stream_listeners_get_a_deep_accept_queue(description: str, expected: str) -> None:
    """Twisted's backlog of 50 made a burst of connects wait a second for a SYN retry."""
    assert parse_listener(description, STREAM_TYPES).endpoint_string == expected
