"""The commit gate alone: durable marks, held partials, generations, answers."""

from __future__ import annotations

from obsd.inputs.kafka_offsets import CommitGate

P = ("obsd-statsd_partial", 0)


def gate_at(first: int = 0) -> CommitGate:
    gate = CommitGate()
    gate.assigned(P)
    gate.read(P, first)
    return gate


def test_the_offset_stops_at_the_first_partial_not_settled() -> None:
    gate = gate_at()
    gate.hold(P, 2, interval=10)
    gate.hold(P, 5, interval=11)
    gate.durable({P: (8, gate.generation(P))})
    assert gate.committable(settled_through=9) == {P: 2}
    assert gate.committable(settled_through=10) == {P: 5}
    assert gate.committable(settled_through=11) == {P: 8}
    assert gate.pending() == 0


def test_nothing_past_what_was_read_first_or_asked_for() -> None:
    gate = gate_at(first=40)
    gate.hold(P, 40, interval=10)
    gate.durable({P: (41, gate.generation(P))})
    assert gate.committable(settled_through=9) == {}  # 40 is where the group already is
    gate.asked({P: 41})
    assert gate.committable(settled_through=10) == {}  # in flight
    gate.acknowledged(P, 41, ok=False)
    assert gate.committable(settled_through=10) == {P: 41}  # failed: ask again
    gate.acknowledged(P, 41, ok=True)
    assert gate.committable(settled_through=10) == {}


def test_a_mark_from_an_earlier_assignment_is_ignored() -> None:
    gate = gate_at()
    stale = gate.generation(P)
    gate.revoked(P)
    gate.assigned(P)
    gate.durable({P: (9, stale)})
    assert gate.committable(settled_through=100) == {}
