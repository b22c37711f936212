"""Live tail: the router's tap, server-side filters, slow clients dropped from, the CLI's rendering."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock, StringTransport

from obsd.cli.tail import render_line, tail_url
from obsd.config.loader import parse_config
from obsd.daemon.topology import ObsdService, build_service
from obsd.ops.tail import MatchError, TailClient, TapSet, parse_match
from obsd.ops.telemetry import Telemetry
from obsd.pipeline.router import Router
from tests.helpers import success_result_of

LOG = {"kind": "log", "event": "user.login", "level": "warning", "source": "syslog", "_raw": b"x"}


def event(**fields: Any) -> dict[str, Any]:
    return {**LOG, **fields}


class TestParseMatch:
    @pytest.mark.parametrize(
        ("match", "fields", "expected"),
        [
            ([], {}, True),
            (["kind=log"], {}, True),
            (["kind=metric"], {}, False),
            (["kind=metric", "kind=log"], {}, True),
            (["source=syslog"], {}, True),
            (["source=statsd"], {}, False),
            (["level=warning"], {"level": "error"}, True),
            (["level=warning"], {"level": "info"}, False),
            (["event=user.*"], {}, True),
            (["event=order.*"], {}, False),
            (["kind=log", "level=err", "event=user.*"], {"level": "critical"}, True),
        ],
    )
    def test_match_like_a_route(self, match: list[str], fields: dict[str, Any], expected: bool) -> None:
        """A tail filter takes exactly what a route with the same match would."""
        assert parse_match(match)(event(**fields)) is expected

    @pytest.mark.parametrize("bad", ["kind", "color=red", "kind=bogus", "level=loud"])
    def test_refuses_what_it_cannot_use(self, bad: str) -> None:
        """Unknown keys, kinds and levels are refused, not ignored."""
        with pytest.raises(MatchError):
            parse_match([bad])


class TestTapSet:
    def test_router_sees_none_when_nobody_listens(self) -> None:
        """The router's tap is None without listeners, the one listener, or a fan-out."""
        router = Router({}, [], {}, {}, Telemetry())
        taps = TapSet(router)
        seen: list[str] = []
        first, second = (lambda e: seen.append("a")), (lambda e: seen.append("b"))
        taps.add(first)
        assert router.tap is first
        taps.add(second)
        router.route(event())
        assert seen == ["a", "b"]
        taps.remove(first)
        taps.remove(second)
        assert router.tap is None


class TestTailClient:
    def test_slow_client_is_dropped_from_not_waited_on(self) -> None:
        """While paused, a client buffers a few lines, drops the rest and says how many on resume."""
        written: list[bytes] = []
        tel = Telemetry()
        client = TailClient(written.append, parse_match(["kind=log"]), tel, buffer_size=2)
        client(event(event="a"))
        client.pauseProducing()
        for name in "bcdef":
            client(event(event=name))
        client({"kind": "metric", "event": "ignored"})
        assert [json.loads(w)["event"] for w in written] == ["a"]
        client.resumeProducing()
        lines = [json.loads(w) for w in written]
        assert [line.get("event") for line in lines[:3]] == ["a", "b", "c"]
        assert lines[3] == {"_tail": "missed", "missed": 3}
        assert (tel.value("obsd.tail.sent"), tel.value("obsd.tail.missed")) == (3, 3)
        client(event(event="g"))
        assert json.loads(written[-1])["event"] == "g"

    def test_private_keys_are_dropped(self) -> None:
        """Lines hold the normalised event without its private _ keys."""
        written: list[bytes] = []
        TailClient(written.append, parse_match([]), Telemetry())(event())
        assert "_raw" not in json.loads(written[0])


def make_service(tmp_path: Path) -> tuple[ObsdService, MemoryReactorClock]:
    reactor = MemoryReactorClock()
    config = parse_config({
        "daemon": {"data_dir": str(tmp_path)},
        "http": {"listen": ["tcp:0:interface=127.0.0.1"]},
        "outputs": {"file": {}},
    })
    return build_service(config, reactor, lock=False), reactor


def connect(service: ObsdService, query: str) -> tuple[Any, StringTransport]:
    from obsd.net.httpguard import HttpGuard, HttpLimits
    from obsd.net.web import make_site

    guard = HttpGuard(HttpLimits(), service.telemetry, service.throttle, "obsd.http.")
    site = make_site(service.http_root, service.reactor, guard)
    protocol = site.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(
        f"GET /api/obsd/v1/tail?{query} HTTP/1.1\r\nHost: obsd\r\n\r\n".encode()
    )
    return protocol, transport


def chunks(transport: StringTransport) -> list[dict[str, Any]]:
    body = transport.value().partition(b"\r\n\r\n")[2]
    return [json.loads(line) for line in body.split(b"\r\n") if line.startswith(b"{")]


class TestTailResource:
    def test_streams_matching_events_over_http(self, tmp_path: Path) -> None:
        """A client gets a start marker, then only the events its filter matches, chunked."""
        service, _ = make_service(tmp_path)
        service.startService()
        _, transport = connect(service, "match=kind%3Dlog&match=event%3Duser.*")
        assert b"Transfer-Encoding: chunked" in transport.value()
        service.router.route(event(event="user.login"))
        service.router.route(event(event="order.paid"))
        lines = chunks(transport)
        assert lines[0] == {"_tail": "started", "match": ["kind=log", "event=user.*"]}
        assert [line["event"] for line in lines[1:]] == ["user.login"]
        assert service.telemetry.value("obsd.tail.clients") == 1
        success_result_of(service.stopService())
        assert service.router.tap is None
        assert transport.value().endswith(b"0\r\n\r\n")

    def test_bad_filter_is_400(self, tmp_path: Path) -> None:
        """An unknown match key is answered 400 with the reason."""
        service, _ = make_service(tmp_path)
        _, transport = connect(service, "match=color%3Dred")
        assert transport.value().startswith(b"HTTP/1.1 400")
        assert b"bad match 'color=red'" in transport.value()

    def test_client_that_leaves_unhooks_the_tap(self, tmp_path: Path) -> None:
        """When the connection closes, the client is removed and routing pays nothing again."""
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        service, _ = make_service(tmp_path)
        protocol, _ = connect(service, "")
        assert service.router.tap is not None
        protocol.connectionLost(Failure(ConnectionDone()))
        assert service.router.tap is None

    def test_transport_backpressure_drops_for_that_client_only(self, tmp_path: Path) -> None:
        """When the transport pauses a client, routing goes on; the client later learns what it missed."""
        from obsd.ops import tail

        service, _ = make_service(tmp_path)
        _, transport = connect(service, "")
        transport.producer.pauseProducing()  # the kernel buffer is full
        before = len(chunks(transport))
        for i in range(tail.CLIENT_BUFFER + 5):
            service.router.route(event(event=f"e{i}"))
        assert len(chunks(transport)) == before
        assert service.telemetry.value("obsd.router.routed") == tail.CLIENT_BUFFER + 5
        transport.producer.resumeProducing()
        lines = chunks(transport)
        assert len(lines) == 1 + tail.CLIENT_BUFFER + 1
        assert lines[-1] == {"_tail": "missed", "missed": 5}


class TestRender:
    def test_events_to_out_markers_to_err(self) -> None:
        """Events are rendered by ConsoleRenderer; markers go to stderr."""
        import structlog

        out, err = io.StringIO(), io.StringIO()
        renderer = structlog.dev.ConsoleRenderer(colors=False)
        render_line(b'{"_tail":"missed","missed":4}\n', renderer, out, err)
        render_line(
            b'{"event":"user.login","level":"warning","timestamp":1704164645.5,"user":"ann"}\n',
            renderer, out, err,
        )
        assert "missed 4 events" in err.getvalue()
        line = out.getvalue()
        assert line.startswith("2024-01-02T03:04:05.500Z [warning  ] user.login")
        assert "user=ann" in line

    def test_url(self) -> None:
        """Filters become repeated match parameters."""
        assert tail_url("http://h:9/", ["kind=log", "event=a.*"]) == (
            "http://h:9/api/obsd/v1/tail?match=kind%3Dlog&match=event%3Da.%2A"
        )
