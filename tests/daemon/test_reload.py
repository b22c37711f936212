"""SIGHUP reload: routes and outputs switch without losing an event; restarts are refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from obsd.config.loader import load_config
from obsd.daemon.reload import restart_parts
from obsd.daemon.topology import ObsdService, build_service
from tests.helpers import success_result_of

BASE = """
[daemon]
data_dir = '{tmp}/data'
metrics_interval = 0
[outputs.a]
type = "file"
path = '{tmp}/a.jsonl'
batch_timeout = 0.5
[outputs.b]
type = "file"
path = '{tmp}/{b_file}'
batch_timeout = 0.5
[[routes]]
match = {{ kind = ["log"] }}
outputs = ["{target}"]
"""


def write(tmp_path: Path, target: str = "a", b_file: str = "b.jsonl", extra: str = "") -> Path:
    path = tmp_path / "obsd.toml"
    path.write_text(BASE.format(tmp=tmp_path, target=target, b_file=b_file) + extra)
    return path


def lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["event"] for line in path.read_text().splitlines()]


@pytest.fixture(name="running")
def _running(tmp_path: Path) -> tuple[ObsdService, MemoryReactorClock]:
    reactor = MemoryReactorClock()
    service = build_service(load_config(str(write(tmp_path))), reactor, lock=False)
    service.startService()
    return service, reactor


def send(service: ObsdService, *names: str) -> None:
    for name in names:
        service.router.route({"kind": "log", "event": name, "level": "info", "source": "t"})


def stop(service: ObsdService, reactor: MemoryReactorClock) -> None:
    stopped = service.stopService()
    reactor.advance(1)
    success_result_of(stopped)


class TestApply:
    def test_route_change_switches_between_two_events(
        self, tmp_path: Path, running: tuple[ObsdService, Any]
    ) -> None:
        """Events before the reload land in a, events after it in b; both outputs keep running."""
        service, reactor = running
        outputs = dict(service.outputs)
        send(service, "e1", "e2")
        write(tmp_path, target="b")
        assert success_result_of(service.reloader.reload()) is True
        send(service, "e3", "e4")
        assert service.outputs == outputs  # unchanged outputs are kept, queues and all
        stop(service, reactor)
        assert lines(tmp_path / "a.jsonl") == ["e1", "e2"]
        assert lines(tmp_path / "b.jsonl") == ["e3", "e4"]

    def test_changed_output_is_rebuilt_and_the_old_one_drained(
        self, tmp_path: Path, running: tuple[ObsdService, Any]
    ) -> None:
        """A changed output gets a new instance; the old one drains what it held."""
        service, reactor = running
        write(tmp_path, target="b")
        success_result_of(service.reloader.reload())
        send(service, "e1", "e2")  # queued in b (batch_timeout not reached)
        old_b = service.outputs["b"]
        write(tmp_path, target="b", b_file="b2.jsonl")
        reloaded = service.reloader.reload()
        send(service, "e3")
        assert service.outputs["b"] is not old_b
        assert not old_b.running
        reactor.advance(1)
        assert success_result_of(reloaded) is True
        stop(service, reactor)
        assert lines(tmp_path / "b.jsonl") == ["e1", "e2"]
        assert lines(tmp_path / "b2.jsonl") == ["e3"]
        assert service.telemetry.value("obsd.output.b.sent") == 3


class TestRefusals:
    def test_listener_change_needs_a_restart(
        self, tmp_path: Path, running: tuple[ObsdService, Any]
    ) -> None:
        """A changed [http] is not applied: the whole old config keeps running."""
        service, reactor = running
        before = service.config
        write(tmp_path, target="b", extra="[http]\nlisten = ['tcp:0:interface=127.0.0.1']\n")
        assert success_result_of(service.reloader.reload()) is False
        assert service.config is before
        send(service, "e1")
        stop(service, reactor)
        assert lines(tmp_path / "a.jsonl") == ["e1"]

    def test_broken_config_is_refused(self, tmp_path: Path, running: tuple[ObsdService, Any]) -> None:
        """A config with problems is logged and ignored."""
        service, reactor = running
        (tmp_path / "obsd.toml").write_text("bogus = 1\n")
        assert success_result_of(service.reloader.reload()) is False
        assert service.config.outputs.keys() == {"a", "b"}
        stop(service, reactor)

    @pytest.mark.parametrize(
        ("change", "parts"),
        [
            ({"daemon": {"log_level": "debug"}}, ["daemon"]),
            ({"inputs": {}}, []),
            ({"derived_metrics": {"enabled": True}}, ["derived_metrics"]),
            ({"outputs": {"file": {"batch_size": 2}}}, []),
        ],
    )
    def test_restart_parts(self, tmp_path: Path, change: dict[str, Any], parts: list[str]) -> None:
        """Only outputs and routes are applied in place."""
        from obsd.config.loader import parse_config

        base = {"daemon": {"data_dir": str(tmp_path)}, "outputs": {"file": {}}}
        assert restart_parts(parse_config(base), parse_config({**base, **change})) == parts


class SyncThreadPool:
    """Runs "thread" jobs at once, so a disk buffer's IO is synchronous in tests."""

    def callInThreadWithCallback(self, on_result: Any, f: Any, *args: Any, **kw: Any) -> None:
        try:
            result = f(*args, **kw)
        except Exception as exc:  # noqa: BLE001
            on_result(False, Failure(exc))
        else:
            on_result(True, result)


class SyncReactor(MemoryReactorClock):
    """MemoryReactorClock with a thread pool that runs jobs in place."""

    def getThreadPool(self) -> SyncThreadPool:
        return SyncThreadPool()

    def callFromThread(self, f: Any, *args: Any, **kw: Any) -> None:
        f(*args, **kw)


DISK = """
[outputs.a.buffer]
type = "disk"
"""


class TestDiskBufferHandover:
    def test_spool_passes_to_the_successor(self, tmp_path: Path) -> None:
        """A changed disk-buffered output: what the old one held is replayed by the new one, once."""
        reactor = SyncReactor()
        write(tmp_path, extra=DISK)
        service = build_service(load_config(str(tmp_path / "obsd.toml")), reactor, lock=False)
        service.startService()
        old = service.outputs["a"]
        never: list[defer.Deferred[None]] = []

        def stuck(batch: list[bytes]) -> defer.Deferred[None]:
            never.append(defer.Deferred())
            return never[-1]

        old.queues[""].destination = type("Stuck", (), {"key": "", "send": staticmethod(stuck)})()
        send(service, "e1", "e2")
        reactor.advance(0.5)  # the batch goes out and hangs
        assert len(never) == 1
        write(tmp_path, extra=DISK.replace('type = "disk"', 'type = "disk"\nmax_events = 5000'))
        reloaded = service.reloader.reload()
        send(service, "e3")  # while the old one closes its spool: held
        assert not reloaded.called
        assert service.router._routes["log"][0].outputs[0].held[0]["event"] == "e3"
        reactor.advance(0)  # the old one's drain deadline (0 s): its spool keeps e1, e2
        assert success_result_of(reloaded) is True
        assert service.outputs["a"] is not old and service.outputs["a"].running
        send(service, "e4")
        reactor.advance(1)
        stop(service, reactor)
        assert lines(tmp_path / "a.jsonl") == ["e1", "e2", "e3", "e4"]
