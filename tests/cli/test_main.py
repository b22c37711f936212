"""The ``obsd`` command: run is twistd without a pid file; check-config warns of no inputs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from obsd.cli import main as cli
from obsd.cli.run import twistd_argv


class TestRun:
    def test_twistd_argv(self) -> None:
        """obsd run is twistd in the foreground, no pid file, the obsd plugin, the config."""
        assert twistd_argv("/etc/obsd.toml") == [
            "twistd", "--nodaemon", "--pidfile=", "obsd", "--config", "/etc/obsd.toml"]
        assert twistd_argv(None) == ["twistd", "--nodaemon", "--pidfile=", "obsd"]

    def test_run_hands_over_to_twistd(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """`obsd run --config X` runs twistd's runner in this process with those arguments."""
        seen: list[list[str]] = []
        import twisted.scripts.twistd

        monkeypatch.setattr(twisted.scripts.twistd, "run", lambda: seen.append(list(sys.argv)))
        monkeypatch.setattr(sys, "argv", ["obsd"])
        assert cli.main(["run", "--config", "x.toml"]) == 0
        assert seen == [["twistd", "--nodaemon", "--pidfile=", "obsd", "--config", "x.toml"]]


class TestCheckConfig:
    def test_no_inputs_is_ok_but_warned(self, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
        """A config with only an output passes, with a clear warning line."""
        path = tmp_path / "obsd.toml"
        path.write_text(f"[daemon]\ndata_dir = '{tmp_path}'\n[outputs.file]\n")
        assert cli.main(["check-config", str(path)]) == 0
        out = capsys.readouterr().out.splitlines()
        assert "warning: no inputs configured: obsd will receive nothing" in out
        assert out[-1] == "config OK"

    def test_inputs_no_warning(self, capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """The embedded default has inputs: no warning."""
        monkeypatch.chdir(tmp_path)
        assert cli.main(["check-config"]) == 0
        assert "warning" not in capsys.readouterr().out

    def test_config_option_is_the_path(self, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
        """--config PATH works like the positional PATH (as for obsd run)."""
        path = tmp_path / "bad.toml"
        path.write_text("bogus = 1\n")
        assert cli.main(["check-config", "--config", str(path)]) == 1
        assert "bogus: unknown key" in capsys.readouterr().err
