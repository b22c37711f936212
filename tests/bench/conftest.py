"""The one way bench tests run a benchmark: ``python -m bench.NAME --quick`` from the checkout."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

RunQuick = Callable[..., str]


def run_quick(module: str, timeout: float = 300.0) -> str:
    """Run a benchmark's ``--quick``; its stdout, or a failure with everything it printed.

    cwd is the checkout so ``-m bench.X`` finds the benchmarks; obsd itself comes from
    the venv's install, as a user's would.
    """
    done = subprocess.run(
        [sys.executable, "-m", module, "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(name="run_quick")
def _run_quick() -> RunQuick:
    return run_quick
