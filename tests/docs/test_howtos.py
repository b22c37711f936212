"""The five job pages' commands, run as written against a real ``twistd obsd`` and real clients.

Each test runs one page with ``tests/docs/runner.py``: the page's files are
written, its commands run in order in a fresh directory, and each command's
printed output is checked.  The ports the pages name become free ports, host
paths (``/dev/log``, ``/etc/rsyslog.d``) become paths in the run's directory,
and each command that cannot run here is replaced by a stand-in named below.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.docs.runner import DOCS, PageRun
from tests.integration.fixtures.es import EsNode
from tests.integration.fixtures.rsyslog import rsyslogd_binary, stop_process

pytestmark = pytest.mark.integration

HOWTO = DOCS / "howto"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ports(*numbers: int) -> dict[str, str]:
    """A free port for each port the page names (UDP and TCP listeners share the number)."""
    return {str(n): str(free_port()) for n in numbers}


def need(program: str) -> None:
    if shutil.which(program) is None:
        message = f"{program} is not installed"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


class TestSyslogTarget:
    def test_page_runs(self, tmp_path: Path) -> None:
        """logger over UDP, through a real rsyslogd using the page's forwarding file, and to /dev/log."""
        need("logger")
        binary = rsyslogd_binary()
        rsyslog_socket = tmp_path / "rsyslog.sock"
        started: list[subprocess.Popen[bytes]] = []

        def restart_rsyslog(run: PageRun) -> None:
            """Stand-in for ``sudo systemctl restart rsyslog``: a private rsyslogd with the page's file."""
            config = tmp_path / "rsyslog.conf"
            config.write_text(
                f'global(workDirectory="{tmp_path}")\n'
                'module(load="imuxsock" SysSock.Use="off")\n'
                f'input(type="imuxsock" Socket="{rsyslog_socket}" RateLimit.Interval="0")\n'
                f'include(file="{tmp_path}/etc/rsyslog.d/*.conf")\n'
            )
            log = (tmp_path / "rsyslog.log").open("ab")
            started.append(subprocess.Popen(
                [binary, "-n", "-f", str(config), "-i", str(tmp_path / "rsyslog.pid")],
                cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
            ))
            deadline = time.monotonic() + 15
            while not rsyslog_socket.exists():
                assert started[-1].poll() is None, (tmp_path / "rsyslog.log").read_text()
                assert time.monotonic() < deadline, "rsyslogd did not create its socket"
                time.sleep(0.05)

        def to_rsyslog(command: str) -> str:
            """``logger`` without an address writes to /dev/log: here, to the private rsyslogd."""
            if command.startswith("logger ") and " -n " not in command and " -u " not in command:
                return command.replace("logger ", f"logger -u {rsyslog_socket} ", 1)
            return command

        run = PageRun(
            HOWTO / "syslog-target.rst", tmp_path,
            substitutions={
                **ports(5514),
                "/etc/rsyslog.d/": f"{tmp_path}/etc/rsyslog.d/",
                "/dev/log": str(tmp_path / "dev-log"),
            },
            stand_ins={"sudo systemctl restart rsyslog": restart_rsyslog},
            rewrite=to_rsyslog,
        )
        try:
            run.run()
        finally:
            for proc in started:
                stop_process(proc)
        assert "stand-in for: sudo systemctl restart rsyslog" in run.transcript


class TestGunicornStatsd:
    def test_page_runs(self, tmp_path: Path) -> None:
        """gunicorn's --statsd-host metrics reach obsd's StatsD input and are flushed as metrics."""
        need("curl")
        PageRun(HOWTO / "gunicorn-statsd.rst", tmp_path, substitutions=ports(8125, 8000)).run()


class TestSentryDsn:
    def test_page_runs(self, tmp_path: Path) -> None:
        """sentry-sdk and raven scripts with the page's DSN report to obsd, and the events arrive."""
        PageRun(HOWTO / "sentry-dsn.rst", tmp_path, substitutions=ports(9000)).run()


class TestElasticsearch:
    def test_page_runs(self, tmp_path: Path, es_node: EsNode) -> None:
        """A syslog line sent with logger is found in the real node with the page's search."""
        need("logger")
        need("curl")
        substitutions = {**ports(5514), "9200": str(es_node.http_port)}
        PageRun(HOWTO / "elasticsearch.rst", tmp_path, substitutions=substitutions).run()


class TestCentralTier:
    def test_page_runs(self, tmp_path: Path) -> None:
        """A log line and a StatsD counter sent to the agent arrive in central's file."""
        need("logger")
        need("nc")
        PageRun(HOWTO / "central-tier.rst", tmp_path, substitutions=ports(5514, 8125, 9443)).run()
