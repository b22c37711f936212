"""A bounded history of the status page's numbers, for its sparklines.

Every ``SAMPLE_INTERVAL`` seconds (on the injected clock, when the rate sampler
copies the counters) ``History.record`` appends one value per series: each
input's accepted rate, each output's sent rate and each output's queue depth.
A series is a ``RingBuffer`` of ``HISTORY_SAMPLES`` C doubles, so the memory is
fixed: 180 samples x 8 bytes = 1,440 bytes per series (plus ~100 bytes of
bookkeeping), i.e. 15 minutes at 5 s.  With I inputs and O outputs there are
I + 2*O series; a series whose component disappears on a reload is dropped at
the next sample, so reloads never grow it.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping

#: seconds between two samples, and samples kept per series (15 minutes)
SAMPLE_INTERVAL = 5.0
HISTORY_SAMPLES = 180


class RingBuffer:
    """The last ``capacity`` floats, oldest first; a fixed ``array('d')``, never grown."""

    __slots__ = ("_data", "_next", "_size")

    def __init__(self, capacity: int = HISTORY_SAMPLES) -> None:
        if capacity < 1:
            raise ValueError("a ring buffer holds at least one value")
        self._data = array("d", bytes(8 * capacity))
        self._next = 0
        self._size = 0

    @property
    def capacity(self) -> int:
        return len(self._data)

    def __len__(self) -> int:
        return self._size

    def append(self, value: float) -> None:
        """Keep ``value``; when full, the oldest value is overwritten."""
        self._data[self._next] = value
        self._next = (self._next + 1) % len(self._data)
        self._size = min(self._size + 1, len(self._data))

    def values(self) -> list[float]:
        """Oldest first."""
        if self._size < len(self._data):
            return self._data[: self._size].tolist()
        return (self._data[self._next :] + self._data[: self._next]).tolist()

    def nbytes(self) -> int:
        """Bytes the values take (the bound the docs quote)."""
        return self._data.itemsize * len(self._data)


class History:
    """Named series of samples taken at the same moments; the moments are kept too."""

    def __init__(self, capacity: int = HISTORY_SAMPLES) -> None:
        self.capacity = capacity
        self._times = RingBuffer(capacity)
        self._series: dict[str, RingBuffer] = {}

    def record(self, at: float, values: Mapping[str, float]) -> None:
        """One sample of every series; a series seen for the first time starts here."""
        self._times.append(at)
        for name in [n for n in self._series if n not in values]:
            del self._series[name]  # its component is gone (a reload removed it)
        for name, value in values.items():
            ring = self._series.get(name)
            if ring is None:
                ring = self._series[name] = RingBuffer(self.capacity)
            ring.append(float(value))

    def series(self, name: str) -> list[float]:
        """The samples of ``name``, oldest first (empty when unknown)."""
        ring = self._series.get(name)
        return ring.values() if ring is not None else []

    def names(self) -> Iterable[str]:
        return self._series.keys()

    def times(self) -> list[float]:
        return self._times.values()

    def nbytes(self) -> int:
        """Bytes held by the samples: (series + 1) x capacity x 8, whatever the traffic."""
        return self._times.nbytes() + sum(r.nbytes() for r in self._series.values())
