"""Real syslog clients against a real obsd: util-linux logger, SysLogHandler, structlog.

One obsd runs for the module with syslog on UDP, TCP, TLS, a unix datagram and a
unix stream socket, writing to its file output; each test marks its messages
with a unique tag and checks the exact events that came out.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.fixtures.obsd import ObsdProcess, obsd_env
from tests.integration.fixtures.rsyslog import Rsyslog
from tests.integration.syslog_support import (
    iso_age,
    send_tcp,
    stable,
    start_obsd,
    syslog_config,
    wait_for_events,
)
from tests.tls_certs import make_certificates

pytestmark = pytest.mark.integration

HOST = socket.gethostname()


class SyslogObsd:
    """The running obsd and where to reach it."""

    def __init__(self, proc: ObsdProcess, data_dir: Path, sockets: Path, ca: Path) -> None:
        self.proc = proc
        self.data_dir = data_dir
        self.dgram = sockets / "dgram.sock"
        self.stream = sockets / "stream.sock"
        self.ca = ca
        self.udp = proc.port("syslog", "udp")
        self.tcp = proc.port("syslog", "tcp")
        self.tls = proc.port("syslog", "ssl")

    def events(self, marker: str, count: int) -> list[dict[str, Any]]:
        return wait_for_events(self.proc, self.data_dir, marker, count)


@pytest.fixture(name="obsd", scope="module")
def _obsd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyslogObsd]:
    workdir = tmp_path_factory.mktemp("syslog-obsd")
    sockets = Path(tmp_path_factory.mktemp("s"))
    certs = make_certificates()
    key, cert, ca = workdir / "key.pem", workdir / "cert.pem", workdir / "ca.pem"
    key.write_bytes(certs.server_key)
    cert.write_bytes(certs.server_cert + certs.ca_cert)
    ca.write_bytes(certs.ca_cert)
    data_dir = workdir / "data"
    proc = start_obsd(workdir, syslog_config(data_dir, sockets, (key, cert)))
    yield SyslogObsd(proc, data_dir, sockets, ca)
    assert proc.stop() == 0
    assert "Traceback" not in proc.output()


@pytest.fixture(name="tag")
def _tag() -> str:
    """A unique app name, so each test finds its own events."""
    return "t" + uuid.uuid4().hex[:12]


def logger_cmd() -> str:
    found = shutil.which("logger")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("util-linux logger is not installed (apt-get install bsdutils)")
        pytest.skip("util-linux logger is not installed")
    return found


def run_logger(*args: str) -> None:
    subprocess.run([logger_cmd(), *args], check=True, timeout=10, capture_output=True)


def common(tag: str, **fields: Any) -> dict[str, Any]:
    """The fields every event from this host with app name ``tag`` has."""
    return {
        "kind": "log",
        "source": "syslog",
        "host": HOST,
        "appname": tag,
        **fields,
    }


TIME_QUALITY = {"timeQuality": {"isSynced": "0", "tzKnown": "1"}}


class TestUtilLinuxLogger:
    @pytest.mark.parametrize(
        ("transport", "framing"),
        [("--udp", []), ("--tcp", []), ("--tcp", ["--octet-count"])],
    )
    def test_rfc5424(
        self, obsd: SyslogObsd, tag: str, transport: str, framing: list[str]
    ) -> None:
        """logger --rfc5424 over UDP, TCP with LF and TCP with octet counting: same event."""
        port = obsd.udp if transport == "--udp" else obsd.tcp
        run_logger(
            "--rfc5424", transport, *framing, "-n", "127.0.0.1", "-P", str(port), "-t", tag,
            "-p", "local3.warning", "--msgid", "ID9", "--id=4242",
            "--sd-id", "zoo@123", "--sd-param", 'tiger="hungry \\"x\\""', "disk nearly full",
        )
        [event] = obsd.events(tag, 1)
        assert stable(event) == common(
            tag,
            event="disk nearly full",
            level="warning",
            facility="local3",
            severity="warning",
            procid="4242",
            msgid="ID9",
            sd={**TIME_QUALITY, "zoo@123": {"tiger": 'hungry "x"'}},
            syslog_format="rfc5424",
        )
        assert event["peer"].startswith("127.0.0.1:")
        assert abs(iso_age(event["timestamp"])) < 30

    @pytest.mark.parametrize("transport", ["--udp", "--tcp"])
    def test_rfc3164(self, obsd: SyslogObsd, tag: str, transport: str) -> None:
        """logger --rfc3164: the BSD header's host, tag and pid become fields."""
        port = obsd.udp if transport == "--udp" else obsd.tcp
        run_logger(
            "--rfc3164", transport, "-n", "127.0.0.1", "-P", str(port), "-t", tag,
            "--id=77", "-p", "auth.err", "login failed",
        )
        [event] = obsd.events(tag, 1)
        assert stable(event) == common(
            tag,
            event="login failed",
            level="error",
            facility="auth",
            severity="err",
            procid="77",
            syslog_format="rfc3164",
        )
        assert abs(iso_age(event["timestamp"])) < 30

    @pytest.mark.parametrize("kind", ["dgram", "stream"])
    def test_unix_socket(self, obsd: SyslogObsd, tag: str, kind: str) -> None:
        """logger --socket to a unix datagram socket (/dev/log-style) and to a stream one."""
        path = obsd.dgram if kind == "dgram" else obsd.stream
        extra = ["--tcp"] if kind == "stream" else ["--udp"]
        run_logger("--socket", str(path), *extra, "-t", tag, "-p", "daemon.info", "local hello")
        [event] = obsd.events(tag, 1)
        assert stable(event) == common(
            tag,
            event="local hello",
            level="info",
            facility="daemon",
            severity="info",
            syslog_format="rfc3164",
        )
        assert event["peer"] == "unix"


def handler_for(obsd: SyslogObsd, transport: str) -> logging.handlers.SysLogHandler:
    if transport == "udp":
        return logging.handlers.SysLogHandler(("127.0.0.1", obsd.udp))
    if transport == "tcp":
        return logging.handlers.SysLogHandler(("127.0.0.1", obsd.tcp), socktype=socket.SOCK_STREAM)
    return logging.handlers.SysLogHandler(str(obsd.stream if transport == "unix" else obsd.dgram))


@pytest.fixture(name="pylogger")
def _pylogger(tag: str) -> Iterator[logging.Logger]:
    log = logging.getLogger(f"obsd.tests.{tag}")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()


class TestSysLogHandler:
    @pytest.mark.parametrize("transport", ["udp", "tcp", "unix", "unixgram"])
    def test_messages(
        self, obsd: SyslogObsd, tag: str, pylogger: logging.Logger, transport: str
    ) -> None:
        """SysLogHandler over each transport: NUL-ended lines become one event each."""
        handler = handler_for(obsd, transport)
        handler.setFormatter(logging.Formatter(f"{tag}[%(process)d]: %(message)s"))
        pylogger.addHandler(handler)
        pylogger.warning("first %s", "message")
        pylogger.debug("second")
        handler.close()
        events = obsd.events(tag, 2)
        assert [stable(e) for e in events] == [
            common(
                tag, event="first message",
                level="warning", facility="user", severity="warning",
                procid=str(os.getpid()), syslog_format="rfc3164",
            ),
            common(
                tag, event="second", level="debug",
                facility="user", severity="debug", procid=str(os.getpid()),
                syslog_format="rfc3164",
            ),
        ]

    def test_traceback_over_tcp_is_one_event(
        self, obsd: SyslogObsd, tag: str, pylogger: logging.Logger
    ) -> None:
        """A multi-line traceback sent over TCP (NUL framing) arrives as ONE event."""
        handler = handler_for(obsd, "tcp")
        handler.setFormatter(logging.Formatter(f"{tag}: %(message)s"))
        pylogger.addHandler(handler)
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            pylogger.exception("division failed")
        pylogger.error("after")
        handler.close()
        first, second = obsd.events(tag, 2)
        lines = first["event"].splitlines()
        assert lines[0] == "division failed"
        assert lines[1] == "Traceback (most recent call last):"
        assert lines[-1] == "ZeroDivisionError: division by zero"
        assert (first["level"], first["severity"]) == ("error", "err")
        assert second["event"] == "after"


STRUCTLOG_PROGRAM = textwrap.dedent(
    """
    import logging, logging.handlers, socket, sys
    import structlog

    handler = logging.handlers.SysLogHandler(
        ("127.0.0.1", int(sys.argv[1])), socktype=socket.SOCK_STREAM
    )
    handler.setFormatter(logging.Formatter(sys.argv[2] + "[%(process)d]: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    structlog.configure(
        processors=[
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
    )
    log = structlog.get_logger()
    log.info("user.login", user="guido", attempt=1)
    log.warning("user.logout", user="guido", level_hint="x", host="spoofed", tags=["a"])
    handler.close()
    print(__import__("os").getpid())
    """
)


class TestStructlogProgram:
    def test_json_keys_become_event_fields(self, obsd: SyslogObsd, tag: str) -> None:
        """A structlog JSONRenderer program logging into SysLogHandler: its keys are fields."""
        done = subprocess.run(
            [sys.executable, "-c", STRUCTLOG_PROGRAM, str(obsd.tcp), tag],
            check=True, timeout=30, capture_output=True, text=True, env=obsd_env(),
        )
        pid = done.stdout.strip()
        login, logout = obsd.events(tag, 2)
        assert stable(login) == common(
            tag, event="user.login", level="info", user="guido",
            attempt=1, facility="user", severity="info", procid=pid,
            syslog_format="rfc3164",
        )
        assert stable(logout) == common(
            tag, event="user.logout", level="warning", user="guido",
            level_hint="x", data_host="spoofed", data_tags=["a"], facility="user",
            severity="warning", procid=pid, syslog_format="rfc3164",
        )
        assert abs(iso_age(login["timestamp"])) < 30


class TestTLS:
    def test_octet_counted_over_tls(self, obsd: SyslogObsd, tag: str) -> None:
        """An RFC 5425 client (Python's ssl module) sends octet-counted messages over TLS."""
        import ssl

        context = ssl.create_default_context(cafile=str(obsd.ca))
        messages = [
            f"<134>1 2024-05-06T07:08:09.123456+02:00 web01 {tag} 12 - - over tls".encode(),
            f"<134>1 2024-05-06T07:08:10Z web01 {tag} 12 - - second\nline".encode(),
        ]
        with (
            socket.create_connection(("127.0.0.1", obsd.tls), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(b"".join(b"%d %s" % (len(m), m) for m in messages))
        first, second = obsd.events(tag, 2)
        assert stable(first) == {
            "kind": "log", "source": "syslog", "host": "web01", "appname": tag, "procid": "12",
            "event": "over tls", "level": "info", "facility": "local0", "severity": "info",
            "syslog_format": "rfc5424",
        }
        assert first["timestamp"] == "2024-05-06T05:08:09.123456Z"
        assert second["event"] == "second\nline"


class RsyslogObsd(SyslogObsd):
    """An obsd on the ports rsyslog forwards to."""

    def __init__(self, proc: ObsdProcess, data_dir: Path, rsyslog: Rsyslog) -> None:
        self.proc = proc
        self.data_dir = data_dir
        self.rsyslog = rsyslog


@pytest.fixture(name="rsyslog_obsd", scope="module")
def _rsyslog_obsd(
    tmp_path_factory: pytest.TempPathFactory, rsyslog: Rsyslog
) -> Iterator[RsyslogObsd]:
    workdir = tmp_path_factory.mktemp("rsyslog-obsd")
    data_dir = workdir / "data"
    listen = [
        f"tcp:{rsyslog.tcp_port}:interface=127.0.0.1",
        f"ssl:{rsyslog.tls_port}:interface=127.0.0.1:privateKey={rsyslog.server_key}"
        f":certKey={rsyslog.server_cert}",
    ]
    config = (
        f"[daemon]\ndata_dir = '{data_dir}'\n"
        f"[inputs.syslog]\nlisten = {json.dumps(listen)}\ntimezone = 'UTC'\n"
        "[outputs.file]\nbatch_timeout = 0.02\n"
    )
    proc = start_obsd(workdir, config)
    yield RsyslogObsd(proc, data_dir, rsyslog)
    assert proc.stop() == 0
    assert "Traceback" not in proc.output()


class TestRsyslogForwarding:
    @pytest.mark.parametrize("via", ["tcp", "tls"])
    def test_forwarded_from_local_socket(
        self, rsyslog_obsd: RsyslogObsd, tag: str, via: str
    ) -> None:
        """rsyslog forwards a local message over TCP (octet counting) or TLS: exact event."""
        rsyslog = rsyslog_obsd.rsyslog
        path = rsyslog.to_tcp if via == "tcp" else rsyslog.to_tls
        run_logger("--socket", str(path), "--udp", "-t", tag, "--id=321", "-p", "mail.err",
                   "queue stuck")
        [event] = rsyslog_obsd.events(tag, 1)
        assert stable(event) == common(
            tag, event="queue stuck", level="error", facility="mail", severity="err",
            procid="321", syslog_format="rfc5424",
        )
        assert abs(iso_age(event["timestamp"])) < 30

    def test_relayed_from_another_host(self, rsyslog_obsd: RsyslogObsd, tag: str) -> None:
        """An RFC 5424 line a remote host sent rsyslog keeps its host, stamp and data."""
        line = (
            f"<165>1 2003-10-11T22:14:15.003-07:00 web7.example.com {tag} 42 ID47 "
            f'[exampleSDID@32473 iut="3" eventSource="App\\lication"] {{"event": "order.paid", '
            f'"order": 17, "level": "warn"}}\n'
        ).encode()
        send_tcp(rsyslog_obsd.rsyslog.listen_port, line)
        [event] = rsyslog_obsd.events(tag, 1)
        assert stable(event) == {
            "kind": "log", "source": "syslog", "host": "web7.example.com", "appname": tag,
            "procid": "42", "msgid": "ID47", "facility": "local4", "severity": "notice",
            "event": "order.paid", "order": 17, "level": "warning",
            "sd": {"exampleSDID@32473": {"iut": "3", "eventSource": "App\\lication"}},
            "syslog_format": "rfc5424",
        }
        assert event["timestamp"] == "2003-10-12T05:14:15.003000Z"
