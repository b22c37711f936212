"""ARCHITECTURE's steps are enough: a new output registered by name is built and routed to."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.testing import MemoryReactorClock

from obsd import registry
from obsd.config.loader import parse_config
from obsd.contracts import OutputModule
from obsd.daemon.topology import build_service
from tests.daemon import toy_output
from tests.helpers import success_result_of


def test_a_toy_output_is_loaded_built_and_routed_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry.OUTPUT_MODULES, "toy", "tests.daemon.toy_output")
    module: OutputModule = toy_output  # the contract, checked by mypy in obsd/conformance.py
    assert registry.output_module("toy") is module
    config = parse_config({
        "daemon": {"data_dir": str(tmp_path), "metrics_interval": 0},
        "outputs": {"shouty": {"type": "toy", "prefix": "LOUD", "batch_timeout": 0.5}},
    })
    assert config.outputs["shouty"] == toy_output.Config(
        type="toy", prefix="LOUD", batch_timeout=0.5
    )
    reactor = MemoryReactorClock()
    service = build_service(config, reactor, lock=False)
    service.startService()
    assert service.router is not None
    service.router.route({"kind": "log", "event": "hello", "level": "info", "source": "t"})
    service.router.route({"kind": "metric", "event": "m", "metric": "m", "value": 1.0})
    reactor.advance(0.5)
    assert toy_output.SENT["shouty"] == [[b"LOUD:hello"]]  # a log by default; no metrics
    stopped = service.stopService()
    reactor.advance(1)
    success_result_of(stopped)
