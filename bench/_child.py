"""What every benchmark driver needs of its child processes.

Children (sinks, receivers, loads) speak one small protocol: they print
``@@``-marked JSON lines and answer commands read from stdin; the driver reads
their CPU time from /proc, so a busy machine skews wall times but not ratios.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def env() -> dict[str, str]:
    """The environment of a child: this checkout first on the path."""
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), out.get("PYTHONPATH")]))
    return out


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Proc:
    """A child process that answers ``@@``-marked JSON lines."""

    def __init__(self, args: list[str], stdin: bool = False, cwd: Path = ROOT) -> None:
        self.proc = subprocess.Popen(
            args,
            cwd=cwd,
            env=env(),
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.proc.args!r} exited ({self.proc.poll()})")
            if line.startswith("@@"):
                return json.loads(line[2:])  # type: ignore[no-any-return]

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"


def start_obsd(
    workdir: Path, config: str, inputs: set[str], timeout: float = 30.0
) -> tuple[subprocess.Popen[bytes], Path, dict[str, int]]:
    """A real ``twistd -n obsd`` on ``config``: the process, its log, and each input's port.

    Ports come from obsd's "listening" log lines (listen strings use port 0); it
    fails with the log's tail unless every one of ``inputs`` listened in time.
    """
    path = workdir / "obsd.toml"
    path.write_text(config)
    log = workdir / "obsd.log"
    args = [sys.executable, "-c", TWISTD, "--pidfile", "", "-n", "obsd", "--config", str(path)]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=workdir, env=env(), stdout=out, stderr=subprocess.STDOUT)
    ports: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not inputs <= ports.keys() and proc.poll() is None:
        for line in log.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "listening" and event.get("port"):
                ports.setdefault(event["input"], int(event["port"]))
        time.sleep(0.05)
    if not inputs <= ports.keys():
        proc.kill()
        raise RuntimeError(f"obsd did not start:\n{log.read_text()[-3000:]}")
    return proc, log, ports
