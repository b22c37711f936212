"""carbon's consistent hashing, so obsd routes each series to the carbon-cache carbon-relay would.

Written from the behaviour of carbon 1.1's ``carbon.hashing`` (the tests
compare against it for 10,000 names): a node is ``(host, instance)``, the
port plays no part; each node gets ``replica_count`` positions on a ring of
16-bit slots; a position already taken is bumped by one until free; a key
goes to the first node position at or after its own, wrapping around.

``carbon_ch``: the position of a text is the first two bytes of its MD5,
big-endian; a node's replicas hash ``"('host', 'instance'):i"`` (Python's
``str`` of the tuple, so an absent instance reads ``None``).
``fnv1a_ch``: the 32-bit FNV-1a of the text, folded to 16 bits by XOR of
its halves; replicas hash ``"i-instance"`` (carbon uses only the instance).
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable
from typing import Final

Node = tuple[str, str | None]

HASH_TYPES: Final = ("carbon_ch", "fnv1a_ch")

_FNV_OFFSET: Final = 0x811C9DC5
_FNV_PRIME: Final = 0x01000193


def fnv1a_32(data: bytes) -> int:
    """32-bit FNV-1a of ``data``."""
    value = _FNV_OFFSET
    for byte in data:
        value = ((value ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return value


def ring_position(text: str, hash_type: str = "carbon_ch") -> int:
    """Where ``text`` falls on the ring for ``hash_type``."""
    data = text.encode("utf-8")
    if hash_type == "fnv1a_ch":
        value = fnv1a_32(data)
        return (value >> 16) ^ (value & 0xFFFF)
    return int.from_bytes(hashlib.md5(data, usedforsecurity=False).digest()[:2], "big")


class ConsistentHashRing:
    """Map series names to destinations exactly as carbon-relay's consistent hashing does."""

    def __init__(
        self,
        nodes: Iterable[Node],
        replica_count: int = 100,
        hash_type: str = "carbon_ch",
    ) -> None:
        if hash_type not in HASH_TYPES:
            raise ValueError(
                f"hash_type must be one of {HASH_TYPES}, not {hash_type!r}"
            )
        self.hash_type = hash_type
        self.replica_count = replica_count
        self.nodes: list[Node] = []
        self._positions: list[int] = []
        self._owners: list[Node] = []
        for node in nodes:
            self.add_node(node)

    def _replica_text(self, node: Node, index: int) -> str:
        if self.hash_type == "fnv1a_ch":
            return f"{index}-{node[1]}"
        return f"{node!r}:{index}"

    def add_node(self, node: Node) -> None:
        """Give ``node`` its replicas, in carbon's order so collisions resolve the same way."""
        node = (node[0], node[1])
        if node in self.nodes:
            return
        self.nodes.append(node)
        taken = set(self._positions)
        for index in range(self.replica_count):
            position = ring_position(self._replica_text(node, index), self.hash_type)
            while position in taken:
                position += 1
            taken.add(position)
            at = bisect.bisect_left(self._positions, position)
            self._positions.insert(at, position)
            self._owners.insert(at, node)

    def get_node(self, key: str) -> Node:
        """The node that owns series ``key``."""
        if not self._positions:
            raise LookupError("the ring has no nodes")
        at = bisect.bisect_left(self._positions, ring_position(key, self.hash_type))
        return self._owners[at % len(self._owners)]
