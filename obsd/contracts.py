"""What inputs and outputs are written against: the context each gets, and the module contract.

An input module is built by the daemon with an ``InputContext`` (the daemon's
is ``obsd.daemon.topology.InputContext``; tests pass their own), an output
module with an ``OutputContext`` (``obsd.outputs.base``).  The registry
(``obsd/registry.py``) names the modules; ``InputModule`` and ``OutputModule``
say what each must define, so a new one is written against types, not
``getattr``.  See ARCHITECTURE.rst for the steps.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from twisted.application.service import IService
    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IProtocolFactory
    from twisted.internet.protocol import DatagramProtocol

    from obsd.aggregation.ledger import MergeLedger
    from obsd.config.model import InputConfig, ObsdConfig, OutputConfig
    from obsd.config.schema import Problems
    from obsd.delivery.flowcontrol import FlowControl
    from obsd.net.listeners import ListenerService
    from obsd.net.web import HttpRoot
    from obsd.ops.telemetry import Telemetry
    from obsd.ops.throttle import ThrottledLogger
    from obsd.outputs.base import Output, OutputContext
    from obsd.pipeline.ingest import IngestLogger

#: an event as it flows: a dict of fields
Event = dict[str, Any]


class InputContext(Protocol):
    """What the daemon hands every input."""

    name: str
    #: the reactor (time, TCP, UDP, unix): never the global one in tests
    reactor: Any
    telemetry: Telemetry
    flow_control: FlowControl
    throttle: ThrottledLogger
    #: this input's ingest logger, bound with ``source = name``
    ingest: IngestLogger
    #: the shared HTTP site's root: HTTP inputs mount here
    http: HttpRoot
    config: ObsdConfig
    #: another ingest logger with other bound fields
    make_ingest: Callable[..., IngestLogger]
    #: fires once what was accepted so far is on disk (``durability = "sync"``)
    wait_durable: Callable[[], Deferred[None]]
    #: ``consume(kind, handler)``: also hand ``handler`` every routed event of that
    #: kind; returns the function that stops it
    consume: Callable[[str, Callable[[Event], None]], Callable[[], None]]
    #: where central's StatsD merge stands, for inputs that commit what they read
    merge_ledger: MergeLedger

    @property
    def clock(self) -> Any: ...

    @property
    def hostname(self) -> str: ...

    @property
    def data_dir(self) -> Path: ...

    def listener_services(
        self,
        descriptions: list[str],
        allowed: frozenset[str],
        factory: IProtocolFactory | None = None,
        datagram: DatagramProtocol | None = None,
        max_packet_size: int = 65536,
    ) -> list[ListenerService]:
        """One listening service per endpoint string."""
        ...


class InputModule(Protocol):
    """What ``obsd.inputs.NAME`` defines (``check_config`` is optional)."""

    @property
    def Config(self) -> type[InputConfig]: ...

    #: endpoint types its ``listen`` takes; empty for inputs that mount on ``[http]``
    LISTEN_TYPES: frozenset[str]

    def build_input(self, name: str, config: Any, context: InputContext) -> IService: ...


class OutputModule(Protocol):
    """What ``obsd.outputs.NAME`` defines (``check_config`` is optional)."""

    @property
    def Config(self) -> type[OutputConfig]: ...

    #: event kinds it can take, and those it takes when no route names it
    ACCEPTS: frozenset[str]
    DEFAULT_KINDS: frozenset[str]

    def build_output(self, name: str, config: Any, context: OutputContext) -> Output: ...


class ConfigCheck(Protocol):
    """An input's or output's optional ``check_config(name, cfg, whole, problems)``."""

    def __call__(self, name: str, cfg: Any, whole: ObsdConfig, problems: Problems) -> None: ...
