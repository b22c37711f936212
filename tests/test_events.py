"""Event ids: UUIDv7 as 32 hex digits, time-ordered and unique."""

from __future__ import annotations

import uuid

from obsd.events import new_event_id


class TestEventIds:
    def test_a_uuid7_in_sentrys_hex_form(self) -> None:
        found = new_event_id(1_700_000_000.123)
        assert len(found) == 32 and int(found, 16) >= 0
        parsed = uuid.UUID(hex=found)
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert int(found[:12], 16) == 1_700_000_000_123  # milliseconds first

    def test_ordered_by_time_and_unique_within_a_millisecond(self) -> None:
        same_ms = [new_event_id(5.0) for _ in range(100_000)]
        assert len(set(same_ms)) == len(same_ms)
        assert new_event_id(5.001) > max(same_ms)
