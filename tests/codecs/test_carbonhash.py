"""Tests for obsd.codecs.carbonhash: carbon's consistent hash ring, compared with carbon itself."""

from __future__ import annotations

import importlib.util
import os
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

from obsd.codecs.carbonhash import ConsistentHashRing, fnv1a_32, ring_position

NODES = [("127.0.0.1", "a"), ("127.0.0.1", "b"), ("127.0.0.2", None)]
NAMES = [f"servers.host{i % 97}.app{i}.requests.count" for i in range(10_000)]
#: Where Debian's graphite-carbon puts the package, for a venv without PyPI carbon.
CARBON_FILES = [Path("/usr/lib/python3/dist-packages/carbon/hashing.py")]


def carbon_hashing() -> ModuleType | None:
    """carbon's own hashing module: PyPI ``carbon`` if importable, else Debian's file."""
    try:
        import carbon.hashing

        return carbon.hashing
    except ImportError:
        pass
    for path in CARBON_FILES:
        if path.exists():
            spec = importlib.util.spec_from_file_location("_carbon_hashing", path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    return None


@pytest.fixture(name="carbon", scope="module")
def _carbon() -> ModuleType:
    module = carbon_hashing()
    if module is None:
        reason = "carbon is not installed (pip install carbon, or apt-get install graphite-carbon)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return module


class TestPositions:
    @pytest.mark.parametrize(
        ("data", "value"),
        [(b"", 0x811C9DC5), (b"a", 0xE40C292C), (b"foobar", 0xBF9CF968)],
    )
    def test_fnv1a_32(self, data: bytes, value: int) -> None:
        """FNV-1a matches the published test vectors."""
        assert fnv1a_32(data) == value

    def test_carbon_ch_position(self) -> None:
        """carbon_ch takes the first two bytes of the MD5, big-endian."""
        # md5("a") = 0cc175b9c0f1b6a831c399e269772661
        assert ring_position("a") == 0x0CC1

    def test_fnv1a_ch_position(self) -> None:
        """fnv1a_ch folds the 32-bit hash to 16 bits by XOR of its halves."""
        assert ring_position("a", "fnv1a_ch") == 0xE40C ^ 0x292C


class TestRing:
    def test_unknown_hash_type(self) -> None:
        """Only carbon's two hash types are accepted."""
        with pytest.raises(ValueError, match="hash_type"):
            ConsistentHashRing(NODES, hash_type="mmh3_ch")

    def test_empty_ring(self) -> None:
        """A ring without nodes cannot route."""
        with pytest.raises(LookupError):
            ConsistentHashRing([]).get_node("a")

    def test_spreads_load(self) -> None:
        """Every node owns a fair share of many names."""
        ring = ConsistentHashRing(NODES)
        shares = Counter(ring.get_node(name) for name in NAMES[:3000])
        assert set(shares) == set(NODES)
        assert min(shares.values()) > 500

    def test_port_ignored(self) -> None:
        """A node is (host, instance); the port is not part of it, so routes survive a port change."""
        ring = ConsistentHashRing([("h1", "a"), ("h2", "b")])
        assert ring.nodes == [("h1", "a"), ("h2", "b")]


@pytest.mark.parametrize("hash_type", ["carbon_ch", "fnv1a_ch"])
class TestMatchesCarbon:
    def test_same_node_for_10000_names(
        self, carbon: ModuleType, hash_type: str
    ) -> None:
        """For 10,000 names and 3 destinations obsd picks the node carbon's ring picks."""
        theirs = carbon.ConsistentHashRing(NODES, hash_type=hash_type)
        ours = ConsistentHashRing(NODES, hash_type=hash_type)
        mismatches = [
            name for name in NAMES if ours.get_node(name) != theirs.get_node(name)
        ]
        assert mismatches == []

    def test_same_ring(self, carbon: ModuleType, hash_type: str) -> None:
        """Replica positions, collisions included, are carbon's."""
        theirs = carbon.ConsistentHashRing(NODES, hash_type=hash_type)
        ours = ConsistentHashRing(NODES, hash_type=hash_type)
        assert list(zip(ours._positions, ours._owners, strict=True)) == theirs.ring
