"""Spools that no configured output reads are named at start and in /status."""

from __future__ import annotations

import json
from pathlib import Path

from structlog.testing import capture_logs
from twisted.internet.testing import MemoryReactorClock

from obsd.config.loader import parse_config
from obsd.daemon.topology import build_service
from obsd.delivery.leftovers import find_orphans, spool_directory, write_records
from tests.ops.test_status import get


class TestOrphanSpools:
    def test_named_at_start_and_in_status(self, tmp_path: Path) -> None:
        """A spool of a removed output is reported with its size."""
        gone = tmp_path / "spool" / "old_es"
        write_records(gone, [b"{}", b"{}"], 4096)
        config = parse_config({
            "daemon": {"data_dir": str(tmp_path)},
            "outputs": {"file": {"path": str(tmp_path / "events.jsonl")}},
            "routes": [{"outputs": ["file"]}],
        })
        service = build_service(config, MemoryReactorClock(), lock=False)
        with capture_logs() as logs:
            service.startService()
        size = sum(p.stat().st_size for p in gone.glob("*.seg"))
        assert service.orphan_spools == {gone: size}
        (warning,) = [e for e in logs if "no configured output reads" in e["event"]]
        assert warning["spool"] == str(gone) and warning["bytes"] == size
        code, body = get(service, "/status")
        assert code == 200
        assert json.loads(body)["orphan_spools"] == {str(gone): size}
        service.stopService()


class TestFindOrphans:
    def test_owned_and_empty_spools_are_not_orphans(self, tmp_path: Path) -> None:
        """Only directories with data that no output owns are returned."""
        write_records(tmp_path / "spool" / "a", [b"x"], 4096)
        write_records(tmp_path / "spool" / "b" / "dest_1", [b"y"], 4096)
        (tmp_path / "spool" / "empty").mkdir()
        orphans = find_orphans(tmp_path, [spool_directory(tmp_path, "a")])
        assert list(orphans) == [spool_directory(tmp_path, "b", "dest:1")]
