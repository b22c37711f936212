"""check-config --bind-test binds each port for an instant: a taken port is a problem."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from obsd.__main__ import main

pytestmark = pytest.mark.integration


class TestBindTest:
    @pytest.mark.parametrize("kind", ["tcp", "udp"])
    def test_taken_port_then_free(self, tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
        """A port another socket holds fails the check; once released the check passes."""
        holder = socket.socket(type=socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
        holder.bind(("127.0.0.1", 0))
        if kind == "tcp":
            holder.listen()
        port = holder.getsockname()[1]
        config = tmp_path / "obsd.toml"
        listen = f"tcp:{port}:interface=127.0.0.1" if kind == "tcp" else f"udp:{port}:interface=127.0.0.1"
        if kind == "tcp":
            config.write_text(f"[daemon]\ndata_dir = '{tmp_path}/data'\n[http]\nlisten = ['{listen}']\n")
        else:
            from obsd import registry

            udp_inputs = [n for n in ("statsd", "syslog") if n in registry.INPUT_MODULES]
            if not udp_inputs:
                pytest.skip("no input with udp listeners (statsd, syslog) on this branch")
            config.write_text(
                f"[daemon]\ndata_dir = '{tmp_path}/data'\n"
                f"[inputs.{udp_inputs[0]}]\nlisten = ['{listen}']\n"
            )
        try:
            assert main(["check-config", "--bind-test", str(config)]) == 1
            assert f"port {port} is in use on 127.0.0.1" in capsys.readouterr().err
        finally:
            holder.close()
        assert main(["check-config", "--bind-test", str(config)]) == 0
        assert "ports: all free" in capsys.readouterr().out
