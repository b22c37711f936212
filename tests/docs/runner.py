"""Run a documentation page's commands as written, in a directory of their own.

A page marks what is run with Sphinx's ``:class:`` option on ``code-block``:

* ``:class: tested`` on a block with a ``:caption:`` writes the block to that
  file (``obsd.toml``, ``app.py``, ``/etc/rsyslog.d/60-obsd.conf``);
* ``:class: tested`` on a ``console`` block runs each ``$`` command with bash;
  it must exit 0.  Lines under a command are its expected output, matched like
  doctest's ELLIPSIS (``...`` matches anything); a command with expected output
  is retried until it exits 0 and matches (events arrive asynchronously), for at
  most ``EVENTUALLY`` seconds;
* ``:class: tested daemon`` starts each command in the background, as a reader
  starts it in a terminal of its own, and waits until it says it is ready.
  Starting the same command again stops the running one first (the page's
  "stop it and start it again"); every daemon is stopped with SIGTERM at the
  end and must exit 0.

Blocks without ``tested`` are never run.  What a test changes is explicit and
visible in the test: ``substitutions`` (the well-known ports become free ones,
so runs on a shared machine never collide; host paths such as ``/dev/log``
become paths in the run's directory) and ``stand_ins`` (a command that cannot
run here, such as ``sudo systemctl restart rsyslog``, is replaced by a
function that does the same to a private instance).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
#: seconds a command with expected output may take to produce it
EVENTUALLY = 30.0
#: what each program that a page runs in the background prints once it is ready
READY = {
    "twistd": "obsd started",
    "gunicorn": "Booting worker",
}


@dataclass
class Block:
    """One ``code-block`` of a page."""

    language: str
    caption: str
    classes: list[str]
    text: str
    line: int

    @property
    def tested(self) -> bool:
        return "tested" in self.classes


_DIRECTIVE = re.compile(r"^(\s*)\.\. code-block::\s*(\S*)\s*$")
_OPTION = re.compile(r"^\s+:([a-z-]+):\s*(.*)$")


def blocks(page: Path) -> list[Block]:
    """Every ``code-block`` of a page, in order."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found = []
    i = 0
    while i < len(lines):
        match = _DIRECTIVE.match(lines[i])
        if not match:
            i += 1
            continue
        start = i + 1
        indent = len(match.group(1))
        options: dict[str, str] = {}
        i += 1
        while i < len(lines) and (option := _OPTION.match(lines[i])):
            options[option.group(1)] = option.group(2).strip()
            i += 1
        body: list[str] = []
        while i < len(lines) and (
            not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent
        ):
            body.append(lines[i])
            i += 1
        while body and not body[-1].strip():
            body.pop()
        while body and not body[0].strip():
            body.pop(0)
        margin = min((len(b) - len(b.lstrip()) for b in body if b.strip()), default=0)
        text = "\n".join(b[margin:] for b in body) + "\n"
        found.append(
            Block(match.group(2), options.get("caption", ""),
                  options.get("class", "").split(), text, start)
        )
    return found


@dataclass
class Command:
    """One ``$`` command of a console block and the output it should print."""

    text: str
    expected: str


def commands(block: Block) -> list[Command]:
    """The ``$`` commands of a console block (``\\`` continues a line)."""
    found: list[Command] = []
    lines = block.text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.startswith("$ "):
            raise ValueError(f"line {block.line}: output before any command: {line!r}")
        text = line[2:]
        while text.endswith("\\") and i + 1 < len(lines):
            i += 1
            text = text[:-1] + " " + lines[i].strip()
        i += 1
        expected = []
        while i < len(lines) and not lines[i].startswith("$ "):
            expected.append(lines[i])
            i += 1
        found.append(Command(text, "\n".join(expected).strip()))
    return found


def matches(expected: str, output: str) -> bool:
    """doctest's ELLIPSIS: ``...`` in ``expected`` matches any text."""
    pattern = ".*".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, output.strip(), re.DOTALL) is not None


def page_env() -> dict[str, str]:
    """The shell a reader has: this interpreter's ``bin`` first on ``PATH``.

    ``PYTHONPATH`` names the checkout only because twistd does not find plugins
    of an editable install (the install issue's fix removes the need); keep it here.
    """
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("TERM", None)
    return env


@dataclass
class Daemon:
    command: str
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class PageRun:
    """A page's tested blocks run in ``workdir``; ``transcript`` records what ran."""

    page: Path
    workdir: Path
    substitutions: dict[str, str] = field(default_factory=dict)
    stand_ins: dict[str, Callable[[PageRun], None]] = field(default_factory=dict)
    rewrite: Callable[[str], str] = lambda command: command
    env: dict[str, str] = field(default_factory=page_env)
    daemons: list[Daemon] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)

    def substitute(self, text: str) -> str:
        for old, new in self.substitutions.items():
            if old.isdigit():  # a port: not inside a longer number
                text = re.sub(rf"(?<!\d){old}(?!\d)", new, text)
            else:
                text = text.replace(old, new)
        return text

    def run(self) -> None:
        """Run every tested block of the page in order, then stop what it started."""
        try:
            tested = [b for b in blocks(self.page) if b.tested]
            assert tested, f"{self.page} has no tested blocks"
            for block in tested:
                if block.language == "console":
                    for command in commands(block):
                        self.run_command(command, daemon="daemon" in block.classes, block=block)
                else:
                    self.write_file(block)
        finally:
            codes = self.stop_all()
        assert codes == [0] * len(codes), f"daemons exited with {codes}:\n{self.logs()}"

    def write_file(self, block: Block) -> None:
        if not block.caption:
            raise ValueError(f"{self.page}:{block.line}: a tested file block needs :caption:")
        target = Path(self.substitute(block.caption))
        path = target if target.is_absolute() else self.workdir / target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.substitute(block.text))
        self.transcript.append(f"wrote {path}")

    def run_command(self, command: Command, *, daemon: bool, block: Block | None) -> None:
        if command.text in self.stand_ins:
            self.transcript.append(f"stand-in for: {command.text}")
            self.stand_ins[command.text](self)
            return
        text = self.rewrite(self.substitute(command.text))
        self.transcript.append(f"$ {text}")
        if daemon:
            self.start_daemon(text)
            return
        deadline = time.monotonic() + (EVENTUALLY if command.expected else 0)
        expected = self.substitute(command.expected)
        while True:
            done = subprocess.run(
                ["bash", "-c", text], cwd=self.workdir, env=self.env,
                capture_output=True, text=True, timeout=60, check=False,
            )
            output = done.stdout + done.stderr
            if done.returncode == 0 and (not command.expected or matches(expected, output)):
                return
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{self.page.name}:{block.line if block else '?'}: {text!r} exited {done.returncode}, "
                    f"printed:\n{output}\nexpected:\n{expected or '(exit 0)'}\n{self.logs()}"
                )
            time.sleep(0.2)

    def start_daemon(self, text: str, timeout: float = 30.0) -> None:
        for running in [d for d in self.daemons if d.command == text]:
            code = self.stop(running)
            self.daemons.remove(running)
            assert code == 0, f"{text!r} exited {code} when stopped:\n{running.output()}"

        program = Path(text.split()[0]).name
        ready = READY[program]
        log = self.workdir / f"daemon-{len(self.transcript)}-{program}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                ["bash", "-c", f"exec {text}"], cwd=self.workdir, env=self.env,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        daemon = Daemon(text, proc, log)
        self.daemons.append(daemon)
        deadline = time.monotonic() + timeout
        while ready not in daemon.output():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{text!r} did not say {ready!r}:\n{daemon.output()}")
            time.sleep(0.05)

    def stop(self, daemon: Daemon, timeout: float = 30.0) -> int:
        if daemon.proc.poll() is None:
            os.kill(daemon.proc.pid, signal.SIGTERM)
            try:
                daemon.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                daemon.proc.kill()
                daemon.proc.wait()
        return daemon.proc.returncode

    def stop_all(self) -> list[int]:
        return [self.stop(d) for d in reversed(self.daemons)]

    def logs(self) -> str:
        return "\n".join(f"--- {d.command}\n{d.output()[-3000:]}" for d in self.daemons)
