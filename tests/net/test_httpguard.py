"""The guarded HTTP site: connection caps, header and body timeouts, early 413s.

Each test replays one hostile client of issue 14 on a ``StringTransport`` and a
``Clock``: what it was allowed to make obsd hold, and what it was answered.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Request

from obsd.net import httpguard
from obsd.net.httpguard import DEFAULT_MAX_BODY, GuardedSite, HttpGuard, HttpLimits
from obsd.net.web import HttpRoot
from obsd.ops.telemetry import Telemetry

LIMIT = 100


class Echo(Resource):
    """Answers with the body's length; takes bodies up to ``LIMIT`` bytes."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []

    def max_body_bytes(self, path: bytes, headers: Headers) -> int:
        return LIMIT

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        body = request.content.read()
        self.bodies.append(body)
        return str(len(body)).encode()

    def render_GET(self, request: Request) -> bytes:
        return b"ok"


class Throttle:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def warning(self, key: str, event: str, **fields: Any) -> None:
        self.lines.append((key, event, fields))


class Server:
    """A guarded site on a clock, and helpers to connect to it."""

    def __init__(self, **limits: Any) -> None:
        self.clock = Clock()
        self.telemetry = Telemetry()
        self.throttle = Throttle()
        self.echo = Echo()
        root = HttpRoot()
        root.mount(("echo",), self.echo)
        self.guard = HttpGuard(HttpLimits(**limits), self.telemetry, self.throttle, "obsd.http.")
        self.site = GuardedSite(root, self.guard, self.clock)

    def connect(self, host: str = "127.0.0.1", port: int = 40000) -> tuple[Any, StringTransport]:
        address = IPv4Address("TCP", host, port)
        channel = self.site.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        channel.makeConnection(transport)
        return channel, transport

    def refused(self, what: str) -> int:
        return self.telemetry.counters()[f"obsd.http.refused.{what}"]


def status_of(transport: StringTransport) -> int:
    return int(transport.value().split(b" ", 2)[1])


def detail_of(transport: StringTransport) -> str:
    return str(json.loads(transport.value().split(b"\r\n\r\n", 1)[1])["detail"])


def post(length: int | None, *, extra: bytes = b"") -> bytes:
    head = b"POST /echo HTTP/1.1\r\nHost: obsd\r\n"
    if length is None:
        head += b"Transfer-Encoding: chunked\r\n"
    else:
        head += b"Content-Length: %d\r\n" % length
    return head + extra + b"\r\n"


@pytest.fixture
def server() -> Server:
    return Server()


class TestBodySize:
    def test_content_length_over_the_limit_is_refused_before_the_body(
        self, server: Server
    ) -> None:
        """A 50 MB Content-Length gets 413 from the headers alone; nothing is buffered."""
        channel, transport = server.connect()
        channel.dataReceived(post(50_000_000))
        assert status_of(transport) == 413
        assert detail_of(transport) == (
            f"request body exceeded the size limit: limit is {LIMIT} bytes"
        )
        assert transport.disconnecting
        channel.dataReceived(b"x" * 10_000)  # the body the client sends anyway is dropped
        assert channel.requests[-1].content is None  # not even a buffer was made
        assert server.echo.bodies == []
        assert server.refused("too_large") == 1
        (line,) = server.throttle.lines
        assert line[2]["reason"] == "too_large" and line[2]["peer"] == "127.0.0.1:40000"

    def test_no_100_continue_for_a_body_that_will_be_refused(self, server: Server) -> None:
        channel, transport = server.connect()
        channel.dataReceived(post(LIMIT + 1, extra=b"Expect: 100-continue\r\n"))
        assert b"100 Continue" not in transport.value()
        assert status_of(transport) == 413

    def test_a_chunked_body_is_cut_off_at_the_limit(self, server: Server) -> None:
        """A body that never ends is refused at the byte that crosses the limit."""
        channel, transport = server.connect()
        channel.dataReceived(post(None))
        for _ in range(LIMIT // 10):
            channel.dataReceived(b"a\r\n" + b"y" * 10 + b"\r\n")
        assert transport.value() == b""
        channel.dataReceived(b"1\r\nz\r\n")
        assert status_of(transport) == 413
        buffered = channel.requests[-1].content.tell()
        channel.dataReceived(b"a\r\n" + b"y" * 10 + b"\r\n0\r\n\r\n")
        assert channel.requests[-1].content.tell() == buffered == LIMIT
        assert server.echo.bodies == []

    def test_bodies_within_the_limit_are_served_on_a_kept_alive_connection(
        self, server: Server
    ) -> None:
        channel, transport = server.connect()
        channel.dataReceived(post(LIMIT) + b"x" * LIMIT)
        channel.dataReceived(post(None) + b"3\r\nabc\r\n0\r\n\r\n")
        assert server.echo.bodies == [b"x" * LIMIT, b"abc"]
        assert transport.value().count(b"HTTP/1.1 200 OK") == 2
        assert not transport.disconnecting

    def test_paths_without_a_limit_take_the_default(self) -> None:
        root = HttpRoot()
        root.mount(("api",), Resource())
        root.mount(("api", "echo"), Echo())
        none = Headers()
        assert root.max_body_bytes(b"/api/echo/x", none) == LIMIT
        assert root.max_body_bytes(b"/api/other", none) == DEFAULT_MAX_BODY
        assert root.max_body_bytes(b"/", none) == DEFAULT_MAX_BODY


class TestTimeouts:
    def test_half_sent_headers_time_out(self, server: Server) -> None:
        """A slowloris client is answered 408 and closed after header_timeout."""
        channel, transport = server.connect()
        channel.dataReceived(b"POST /echo HTTP/1.1\r\nHost: ob")
        server.clock.advance(9.9)
        channel.dataReceived(b"s")  # bytes that trickle in do not extend the deadline
        assert transport.value() == b""
        server.clock.advance(0.1)
        assert status_of(transport) == 408
        assert transport.disconnecting
        assert server.refused("header_timeout") == 1

    def test_a_connection_that_sends_nothing_is_closed_quietly(self, server: Server) -> None:
        """No 408 to a silent connection: a browser's preconnect would take it as an answer."""
        _, transport = server.connect()
        server.clock.advance(9.9)
        assert not transport.disconnecting
        server.clock.advance(0.1)
        assert transport.value() == b""
        assert transport.disconnecting
        assert server.refused("header_timeout") == 1

    def test_the_timeout_answer_says_which_deadline_passed(self, server: Server) -> None:
        channel, transport = server.connect()
        channel.dataReceived(b"G")
        server.clock.advance(10)
        assert status_of(transport) == 408
        assert detail_of(transport) == "request headers did not arrive within 10.0 s"

    def test_a_stalled_body_times_out_but_a_trickling_one_does_not(
        self, server: Server
    ) -> None:
        channel, transport = server.connect()
        channel.dataReceived(post(10) + b"12345")
        server.clock.advance(29)
        channel.dataReceived(b"6")
        server.clock.advance(29)
        assert transport.value() == b""
        server.clock.advance(1)
        assert status_of(transport) == 408
        assert server.refused("body_timeout") == 1
        assert server.echo.bodies == []

    def test_a_kept_alive_connection_waits_for_the_idle_timeout_only(
        self, server: Server
    ) -> None:
        channel, transport = server.connect()
        channel.dataReceived(b"GET /echo HTTP/1.1\r\nHost: obsd\r\n\r\n")
        assert status_of(transport) == 200
        server.clock.advance(59)
        assert not transport.disconnecting
        server.clock.advance(1)
        assert transport.disconnecting
        assert server.refused("header_timeout") == 0

    def test_the_next_request_on_a_connection_has_its_own_header_deadline(
        self, server: Server
    ) -> None:
        channel, transport = server.connect()
        channel.dataReceived(b"GET /echo HTTP/1.1\r\nHost: obsd\r\n\r\n")
        server.clock.advance(30)
        channel.dataReceived(b"GET /echo HTTP/1.1\r\n")
        server.clock.advance(10)
        assert transport.value().endswith(b'{"detail": "request headers did not arrive within 10.0 s"}\n')


class TestConnectionCaps:
    def test_past_max_connections_a_sender_gets_503(self) -> None:
        server = Server(max_connections=2)
        first, _ = server.connect(port=1)
        server.connect(port=2)
        _, third = server.connect(port=3)
        assert status_of(third) == 503
        assert b"Retry-After: 1\r\n" in third.value()
        assert third.disconnecting
        assert server.refused("connections") == 1
        first.connectionLost(None)
        _, fourth = server.connect(port=4)
        assert fourth.value() == b"" and not fourth.disconnecting

    def test_one_address_cannot_take_every_slot(self) -> None:
        """The attacker on 127.0.0.2 is held to its share; 127.0.0.1 still gets in."""
        server = Server(max_connections_per_peer=2)
        held = [server.connect("127.0.0.2", port) for port in (1, 2)]
        _, refused = server.connect("127.0.0.2", 3)
        assert status_of(refused) == 429
        assert server.refused("peer") == 1
        channel, honest = server.connect("127.0.0.1", 4)
        channel.dataReceived(b"GET /echo HTTP/1.1\r\nHost: obsd\r\n\r\n")
        assert status_of(honest) == 200
        assert server.guard.slots.per_peer == {"127.0.0.2": 2, "127.0.0.1": 1}
        for channel, _ in held:
            channel.connectionLost(None)
        assert server.guard.slots.per_peer == {"127.0.0.1": 1}
        assert server.guard.slots.open == 1

    def test_refused_connections_are_not_counted_as_open(self) -> None:
        server = Server(max_connections=1)
        server.connect(port=1)
        refused, _ = server.connect(port=2)
        refused.connectionLost(None)
        assert server.guard.slots.open == 1


class HalfCloseable(StringTransport):
    """A TCP-like transport: the answer is sent, then the write side closes."""

    write_closed = False
    aborted = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True

    def abortConnection(self) -> None:
        self.aborted = True


def test_a_refused_client_is_read_a_moment_longer_so_it_sees_the_answer(
    server: Server,
) -> None:
    """Closing with the client's body unread would reset the connection and lose the 413."""
    address = IPv4Address("TCP", "127.0.0.1", 1)
    channel = server.site.buildProtocol(address)
    transport = HalfCloseable(peerAddress=address)
    channel.makeConnection(transport)
    channel.dataReceived(post(LIMIT * 2))
    assert status_of(transport) == 413
    assert transport.write_closed and not transport.aborted
    channel.dataReceived(b"x" * LIMIT)
    server.clock.advance(httpguard.LINGER_SECONDS)
    assert transport.aborted


def test_a_connection_refused_at_the_cap_is_closed_at_once() -> None:
    """A flood of refused connects must not hold descriptors for the linger time."""
    server = Server(max_connections=1)
    server.connect(port=1)
    address = IPv4Address("TCP", "127.0.0.1", 2)
    channel = server.site.buildProtocol(address)
    transport = HalfCloseable(peerAddress=address)
    channel.makeConnection(transport)
    assert status_of(transport) == 503
    assert transport.disconnecting and not transport.write_closed
    assert not any(
        call.func == transport.abortConnection for call in server.clock.getDelayedCalls()
    )


def test_a_form_post_is_not_parsed_into_args(server: Server) -> None:
    """No obsd endpoint takes HTML forms: Twisted's Content-Type parse is skipped, the body kept.

    (It cost about 27 CPU-us per POST, a tenth of a Sentry store request.)
    """
    seen: list[dict[bytes, list[bytes]]] = []
    render = server.echo.render_POST

    def render_post(request: Request) -> bytes:
        seen.append(dict(request.args or {}))
        return render(request)

    server.echo.render_POST = render_post  # type: ignore[method-assign]
    channel, transport = server.connect()
    body = b"a=1&b=2"
    form = b"Content-Type: application/x-www-form-urlencoded\r\n"
    channel.dataReceived(post(len(body), extra=form) + body)
    assert status_of(transport) == 200
    assert seen == [{}] and server.echo.bodies == [body]
