"""check-config's look at the machine: files a config names, writable directories."""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import pytest

from obsd.__main__ import main
from obsd.cli.preflight import file_problems
from obsd.config.loader import parse_config
from obsd.config.model import ObsdConfig, OutputConfig
from obsd.config.schema import setting


@attrs.frozen(kw_only=True)
class TlsOutputConfig(OutputConfig):
    """An output config with the usual TLS file settings."""

    ca_file: str = setting("")
    cert_file: str = setting("")


def config_with(tmp_path: Path, **files: str) -> ObsdConfig:
    base = parse_config({"daemon": {"data_dir": str(tmp_path / "data")}}, path=str(tmp_path / "obsd.toml"))
    return attrs.evolve(base, outputs={"central": TlsOutputConfig(type="file", **files)})


class TestFiles:
    def test_all_present(self, tmp_path: Path) -> None:
        """Existing readable files, relative to the config's directory, pass."""
        (tmp_path / "ca.pem").write_text("x")
        assert file_problems(config_with(tmp_path, ca_file="ca.pem")) == []

    @pytest.mark.parametrize(
        ("files", "expected"),
        [
            ({"ca_file": "missing.pem"}, "outputs.central.ca_file: '{tmp}/missing.pem' does not exist"),
            ({"cert_file": "."}, "outputs.central.cert_file: '{tmp}' is not a file"),
        ],
    )
    def test_missing_files_named(self, tmp_path: Path, files: dict[str, str], expected: str) -> None:
        """Each missing or wrong file is one problem naming its key."""
        assert file_problems(config_with(tmp_path, **files)) == [expected.format(tmp=tmp_path)]

    @pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
    def test_unwritable_file_output_dir(self, tmp_path: Path) -> None:
        """A file output whose directory obsd cannot write in is a problem."""
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        config = parse_config({
            "daemon": {"data_dir": str(tmp_path / "data")},
            "outputs": {"file": {"path": str(locked / "sub" / "events.jsonl")}},
        })
        assert file_problems(config) == [f"outputs.file.path: '{locked}' is not writable"]

    def test_data_dir_where_no_directory_can_be_made(self, tmp_path: Path) -> None:
        """/proc/nope passed check-config (root passes access()) and then failed in twistd."""
        config = parse_config({"daemon": {"data_dir": "/proc/nope"}})
        assert file_problems(config) == [
            "daemon.data_dir: cannot create directories in '/proc': No such file or directory"
        ]

    def test_file_output_dir_is_a_file(self, tmp_path: Path) -> None:
        """A file output path under a plain file cannot work."""
        (tmp_path / "plain").write_text("")
        config = parse_config({
            "daemon": {"data_dir": str(tmp_path / "data")},
            "outputs": {"file": {"path": str(tmp_path / "plain" / "events.jsonl")}},
        })
        assert file_problems(config) == [f"outputs.file.path: '{tmp_path}/plain' is not a directory"]

    def test_check_config_reports_them(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """check-config exits 1 and lists what is missing."""
        (tmp_path / "plain").write_text("")
        path = tmp_path / "obsd.toml"
        path.write_text(
            f"[daemon]\ndata_dir = '{tmp_path}/data'\n"
            f"[outputs.file]\npath = '{tmp_path}/plain/x.jsonl'\n"
        )
        assert main(["check-config", str(path)]) == 1
        assert "outputs.file.path:" in capsys.readouterr().err
