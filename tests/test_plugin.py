"""twistd finds obsd, and the daemon is wired as the config says."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins

from obsd.config.loader import load_default, parse_config
from obsd.daemon.topology import build_service
from tests.helpers import success_result_of


class TestPlugin:
    def test_discovered_with_tapname(self) -> None:
        """getPlugins(IServiceMaker) offers tapname 'obsd'."""
        import twisted.plugins

        names = {p.tapname for p in getPlugins(IServiceMaker, twisted.plugins)}
        assert "obsd" in names


class TestTopology:
    def test_default_listens_and_stops(self, tmp_path: Path) -> None:
        """The default config binds its listeners and stops with a fired Deferred."""
        reactor = MemoryReactorClock()
        config = parse_config({"daemon": {"data_dir": str(tmp_path)},
                               "http": {"listen": ["tcp:9000:interface=127.0.0.1"]},
                               "outputs": {"file": {}}})
        service = build_service(config, reactor)
        service.privilegedStartService()
        service.startService()
        assert [(port, iface) for port, _f, _b, iface in reactor.tcpServers] == [(9000, "127.0.0.1")]
        success_result_of(service.stopService())
        assert reactor.getDelayedCalls() == []

    def test_listeners_bind_before_privileges_drop(self, tmp_path: Path) -> None:
        """Ports are bound in privilegedStartService, which twistd runs before --uid/--gid."""
        reactor = MemoryReactorClock()
        config = parse_config({"daemon": {"data_dir": str(tmp_path)},
                               "http": {"listen": ["tcp:514:interface=127.0.0.1"]}})
        service = build_service(config, reactor)
        service.privilegedStartService()
        assert [port for port, *_ in reactor.tcpServers] == [514]
        service.startService()
        assert len(reactor.tcpServers) == 1  # not bound a second time
        success_result_of(service.stopService())

    def test_second_obsd_on_same_data_dir_refuses(self, tmp_path: Path) -> None:
        """The data_dir lock stops a second instance, and is released on stop."""
        config = parse_config({"daemon": {"data_dir": str(tmp_path)}})
        first = build_service(config, MemoryReactorClock())
        with pytest.raises(SystemExit, match="another obsd is running"):
            build_service(config, MemoryReactorClock())
        first.startService()
        success_result_of(first.stopService())
        build_service(config, MemoryReactorClock())

    def test_default_config_builds(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """The embedded default builds into a service."""
        monkeypatch.chdir(tmp_path)
        service = build_service(load_default(), MemoryReactorClock())
        assert set(service.outputs) == {"console", "file"}
