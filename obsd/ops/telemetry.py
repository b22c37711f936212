"""obsd's own numbers: one registry of counters and gauges per running service.

Names are dotted, ``obsd.<layer>.<component>.<counter>`` (for example
``obsd.output.file.dropped.full``).  A registry is passed down explicitly, never
global, so tests and two instances in one process never mix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator


class Counter:
    """A number that only goes up."""

    __slots__ = ("name", "value")

    def __init__(self, name: str) -> None:
        self.name = name
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


class NotedError:
    """A component's last problem: what, when, and how many so far."""

    __slots__ = ("count", "message", "when")

    def __init__(self, message: str, when: float, count: int) -> None:
        self.message = message
        self.when = when
        self.count = count


class Telemetry:
    """The registry: counters by name, and gauges read from callables when asked."""

    def __init__(self) -> None:
        self._counters: dict[str, Counter] = {}
        self._gauges: dict[str, Callable[[], float]] = {}
        self._errors: dict[str, NotedError] = {}

    def counter(self, name: str) -> Counter:
        """The counter called ``name``, made on first use."""
        counter = self._counters.get(name)
        if counter is None:
            counter = self._counters[name] = Counter(name)
        return counter

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        """Register a gauge whose value ``read()`` gives when asked."""
        self._gauges[name] = read

    def note_error(self, component: str, message: str, when: float) -> None:
        """Remember ``component``'s last problem (``input.NAME``, ``output.NAME``)."""
        noted = self._errors.get(component)
        count = noted.count + 1 if noted is not None else 1
        self._errors[component] = NotedError(message, when, count)

    def errors(self) -> dict[str, NotedError]:
        """Each component's last problem, by component."""
        return dict(sorted(self._errors.items()))

    def counters(self) -> dict[str, int]:
        """Every counter, by name."""
        return {n: c.value for n, c in sorted(self._counters.items())}

    def gauges(self) -> dict[str, float]:
        """Every gauge, read now, by name."""
        return {n: read() for n, read in sorted(self._gauges.items())}

    def value(self, name: str) -> float:
        """The current value of a counter or gauge (0 when unknown)."""
        if name in self._counters:
            return self._counters[name].value
        if name in self._gauges:
            return self._gauges[name]()
        return 0

    def snapshot(self) -> dict[str, float]:
        """Every counter and gauge, by name."""
        values: dict[str, float] = {n: c.value for n, c in self._counters.items()}
        values.update((n, read()) for n, read in self._gauges.items())
        return dict(sorted(values.items()))

    def __iter__(self) -> Iterator[str]:
        return iter(self.snapshot())
