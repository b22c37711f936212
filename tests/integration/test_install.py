"""Both install modes, as a user gets them: a fresh venv, no ``PYTHONPATH``, any directory.

One session-wide wheelhouse holds obsd's dependencies and setuptools (built
with this venv's pip, which reuses its cache), so the fresh venv installs with
``--no-index`` in seconds and from nothing but what ``pip install .`` would
fetch.  The venv is created once and takes the two installs in the order the
README gives them: ``pip install .``, then ``pip install -e .`` over it (the
order that broke twistd's plugin discovery).  After each, ``twistd -n obsd``
and ``twistd -ny tac/obsd.tac`` start from an unrelated directory, log
"obsd started", and exit 0 on SIGTERM.  The checkout is copied first, so the
editable install points at the copy and never writes into this worktree.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
#: what is not part of the project when copying the checkout
IGNORED = shutil.ignore_patterns(
    ".git", ".venv", "venv", "*.egg-info", "build", "dist", "obsd-data", "__pycache__",
    ".*_cache", "node_modules", "dropin.cache", "es-runner",
)


def _run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def _user_env() -> dict[str, str]:
    """This environment without the test venv or a PYTHONPATH: a user's shell."""
    return {
        k: v for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME") and not k.startswith("PYTEST")
    }


@pytest.fixture(name="project", scope="module")
def _project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of this checkout (tracked and new files alike, no venv or caches)."""
    target = tmp_path_factory.mktemp("checkout") / "obsd"
    shutil.copytree(ROOT, target, ignore=IGNORED)
    return target


@pytest.fixture(name="wheelhouse", scope="module")
def _wheelhouse(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """obsd's wheel, its dependencies' wheels and setuptools, built once."""
    house = tmp_path_factory.mktemp("wheelhouse")
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(house), str(project),
         "setuptools>=77"],
        timeout=600,
    )
    return house


@pytest.fixture(name="venv", scope="module")
def _venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv with nothing but pip."""
    venv = tmp_path_factory.mktemp("venv") / "v"
    _run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    yield venv
    shutil.rmtree(venv, ignore_errors=True)


def _pip_install(venv: Path, wheelhouse: Path, *what: str) -> None:
    _run([str(venv / "bin" / "pip"), "install", "-q", "--no-index", "--find-links",
          str(wheelhouse), *what], env=_user_env(), timeout=300)


def _config(workdir: Path) -> Path:
    config = workdir / "obsd.toml"
    config.write_text(
        f"[daemon]\ndata_dir = '{workdir / 'data'}'\n"
        "[http]\nlisten = ['tcp:0:interface=127.0.0.1']\n"
        "[inputs.statsd]\nlisten = ['udp:0:interface=127.0.0.1']\n[outputs.file]\n"
    )
    return config


def _start_and_stop(args: list[str], cwd: Path, env: dict[str, str]) -> list[dict[str, object]]:
    """Run until "obsd started", SIGTERM, and return its log lines (exit 0 asserted)."""
    log = cwd / "obsd.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if b'"obsd started"' in log.read_bytes():
                break
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"no 'obsd started' within 60 s:\n{log.read_text()}")
        assert proc.poll() is None, f"exited {proc.returncode}:\n{log.read_text()}"
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = []
    for line in log.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def _check_both_commands(venv: Path, project: Path, tmp_path: Path) -> None:
    """``twistd -n obsd`` and ``twistd -ny tac/obsd.tac`` from a directory of their own."""
    env = _user_env()
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    for name, args in {
        "plugin": lambda c: ["twistd", "-n", "obsd", "--config", str(c)],
        "tac": lambda c: ["twistd", "-ny", str(project / "tac" / "obsd.tac")],
    }.items():
        workdir = tmp_path / name
        workdir.mkdir()
        config = _config(workdir)
        events = _start_and_stop(args(config), workdir, {**env, "OBSD_CONFIG": str(config)})
        listening = {e.get("input") for e in events if e.get("event") == "listening"}
        assert listening == {"http", "statsd"}, (name, events)


def _obsd_location(venv: Path) -> Path:
    done = _run([str(venv / "bin" / "python"), "-c", "import obsd; print(obsd.__file__)"],
                env=_user_env(), cwd="/")
    return Path(done.stdout.strip()).resolve()


class TestInstallModes:
    """In module order: the regular install first, then the editable one over it."""

    def test_pip_install_dot_runs_from_anywhere(
        self, venv: Path, wheelhouse: Path, project: Path, tmp_path: Path
    ) -> None:
        """After `pip install .`, twistd finds obsd (plugin and .tac) with no PYTHONPATH."""
        _pip_install(venv, wheelhouse, "obsd")
        assert "site-packages" in str(_obsd_location(venv))
        _check_both_commands(venv, project, tmp_path)

    def test_pip_install_editable_runs_from_anywhere(
        self, venv: Path, wheelhouse: Path, project: Path, tmp_path: Path
    ) -> None:
        """After `pip install -e .` over it, twistd still finds obsd, and runs the checkout's code."""
        _pip_install(venv, wheelhouse, "-e", str(project))
        assert _obsd_location(venv).is_relative_to(project)
        _check_both_commands(venv, project, tmp_path)
        _run([str(venv / "bin" / "pip"), "uninstall", "-y", "-q", "obsd"], env=_user_env())
        plugins = list(venv.glob("lib/python*/site-packages/twisted/plugins/obsd_plugin.py"))
        assert plugins == [], "pip uninstall left the plugin behind"
