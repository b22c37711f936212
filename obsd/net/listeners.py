"""Services that listen: stream endpoints, UDP and unix datagram sockets, systemd's sockets.

They bind in ``privilegedStartService``, so twistd's ``--uid/--gid`` drop
privileges only after ports such as 514 are bound, and a port that cannot be
bound stops the start with a clear message instead of a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.internet.protocol import DatagramProtocol
from twisted.python.failure import Failure

from obsd.net.endpoints import CLIENT_CA, DEFAULT_BACKLOG, Listener
from obsd.net.shared import adopted
from obsd.ops.log import get_logger
from obsd.twistedtypes import Service


def mutual_tls_endpoint(reactor: Any, listener: Listener) -> Any:
    """An ``ssl:`` listener that requires a client certificate signed by ``clientCA``."""
    from twisted.internet.endpoints import SSL4ServerEndpoint
    from twisted.internet.ssl import Certificate, PrivateCertificate

    options = listener.options
    key = Path(options["privateKey"]).read_bytes()
    cert = Path(options.get("certKey") or options["privateKey"]).read_bytes()
    authority = Certificate.loadPEM(Path(options[CLIENT_CA]).read_bytes())
    context = PrivateCertificate.loadPEM(cert + b"\n" + key).options(authority)
    return SSL4ServerEndpoint(
        reactor,
        listener.port,
        context,
        backlog=int(options.get("backlog", DEFAULT_BACKLOG)),
        interface=listener.address,
    )


class ListenerService(Service):
    """Listen on one parsed endpoint with a stream factory or a datagram protocol."""

    def __init__(
        self,
        owner: str,
        listener: Listener,
        reactor: Any,
        factory: IProtocolFactory | None = None,
        datagram: DatagramProtocol | None = None,
        max_packet_size: int = 65536,
        tls_handshake: Callable[[IProtocolFactory], IProtocolFactory] | None = None,
    ) -> None:
        """``tls_handshake`` wraps the factory of an ``ssl:`` listener (a handshake deadline)."""
        self.owner = owner
        self.listener = listener
        self.reactor = reactor
        self.factory = factory
        self.datagram = datagram
        self.max_packet_size = max_packet_size
        self.tls_handshake = tls_handshake
        self.port: IListeningPort | None = None
        self._log = get_logger("obsd.listen")
        self.name = f"{owner}:{listener.description}"

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if self.port is None:
            self._listen()

    def startService(self) -> None:
        super().startService()
        if self.port is None:
            self._listen()

    def _listen(self) -> None:
        listener = self.listener
        try:
            shared_fd = adopted(self.owner, listener.description)
            if shared_fd is not None:
                self.port = self._adopt(shared_fd)
            elif listener.type == "systemd":
                from obsd.net.systemd import adopt

                self.port = adopt(
                    self.reactor, listener.options, self.factory, self.datagram,
                    self.max_packet_size,
                )
            elif listener.type == "udp":
                assert self.datagram is not None
                self.port = self.reactor.listenUDP(
                    listener.port,
                    self.datagram,
                    interface=listener.address,
                    maxPacketSize=self.max_packet_size,
                )
            elif listener.type == "unixgram":
                assert self.datagram is not None
                self.port = self.reactor.listenUNIXDatagram(
                    listener.address, self.datagram, maxPacketSize=self.max_packet_size
                )
            else:
                assert self.factory is not None
                factory = self.factory
                if listener.type == "ssl" and self.tls_handshake is not None:
                    factory = self.tls_handshake(factory)
                if listener.type == "ssl" and CLIENT_CA in listener.options:
                    endpoint = mutual_tls_endpoint(self.reactor, listener)
                else:
                    endpoint = serverFromString(self.reactor, listener.endpoint_string)
                d = endpoint.listen(factory)
                result: list[Any] = []
                d.addBoth(result.append)
                if not result:
                    raise RuntimeError("endpoint did not listen at once")
                if isinstance(result[0], Failure):
                    result[0].raiseException()
                self.port = result[0]
        except Exception as exc:  # noqa: BLE001 - any bind error ends the start, clearly
            self._log.critical(
                "cannot listen", input=self.owner, endpoint=listener.description, error=str(exc)
            )
            raise SystemExit(
                f"obsd: {self.owner} cannot listen on {listener.description!r}: {exc}"
            ) from None
        address = self.port.getHost()
        self._log.info(
            "listening",
            input=self.owner,
            endpoint=listener.description,
            address=getattr(address, "host", None) or getattr(address, "name", None),
            port=getattr(address, "port", None),
        )

    def _adopt(self, fd: int) -> IListeningPort:
        """Listen on a socket shared by ``[daemon] workers`` (``obsd.net.shared``)."""
        from obsd.net.systemd import adopt_fd

        factory = self.factory
        if self.listener.type == "ssl" and factory is not None:
            from twisted.protocols.tls import TLSMemoryBIOFactory

            if self.tls_handshake is not None:
                factory = self.tls_handshake(factory)
            if CLIENT_CA in self.listener.options:
                endpoint = mutual_tls_endpoint(self.reactor, self.listener)
            else:
                endpoint = serverFromString(self.reactor, self.listener.endpoint_string)
            # the context the endpoint string describes; the socket is already bound
            context = endpoint._sslContextFactory
            factory = TLSMemoryBIOFactory(context, False, factory)
        port: IListeningPort = adopt_fd(
            self.reactor, fd, factory, self.datagram, self.max_packet_size
        )
        return port

    def stopService(self) -> defer.Deferred[None] | None:
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return None
        stopped = port.stopListening()
        return stopped if isinstance(stopped, defer.Deferred) else None
