"""Syslog over TCP: obsd (syslog input -> file output) against rsyslog and a bare Twisted framer.

``python -m bench.syslog [--quick] [--profile]`` starts three receivers on
127.0.0.1 and feeds each, from a separate load process, the same bounded TCP
load: RFC 5424 lines and lines whose body is structlog JSON, each with LF and
with octet-counting framing.  It prints messages per wall second and per
receiver CPU-second (utime + stime from ``/proc/PID/stat``) and the ratios
obsd/rsyslog and obsd/bare.

- obsd: a real ``twistd -n obsd`` whose syslog input writes every event to
  its file output; done when the file holds every line.
- rsyslog: ``rsyslogd -n`` with imptcp into a file (omfile), done likewise.
- bare: a Twisted protocol that only frames messages (obsd's own framer) and
  counts them: obsd's ceiling on this machine.

``--profile`` runs obsd under twistd's cProfile and prints its top 15
functions.  Loopback only; every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAYLOADS = ("rfc5424", "json")
FRAMINGS = ("lf", "octet")


def make_lines(payload: str, count: int) -> list[bytes]:
    """``count`` distinct syslog lines of one kind."""
    if payload == "rfc5424":
        return [
            b"<165>1 2024-05-06T07:08:09.%06dZ web01.example.com checkout 4242 ID47 "
            b'[origin@32473 ip="10.1.2.3"] order %d paid by customer 1234 in 0.042 s'
            % (i % 10**6, i)
            for i in range(count)
        ]
    return [
        b'<14>1 2024-05-06T07:08:09.%06dZ web01.example.com checkout 4242 - - {"event": '
        b'"user.login", "user": "guido", "attempt": %d, "level": "info", '
        b'"timestamp": "2024-05-06T07:08:09.123456Z"}' % (i % 10**6, i)
        for i in range(count)
    ]


def frame(lines: list[bytes], framing: str) -> bytes:
    if framing == "lf":
        return b"".join(line + b"\n" for line in lines)
    return b"".join(b"%d %s" % (len(line), line) for line in lines)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LineCounter:
    """Counts complete lines in a growing file, reading only what is new."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.count = 0

    def update(self) -> int:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return self.count
        end = data.rfind(b"\n") + 1
        self.count += data.count(b"\n", 0, end)
        self.offset += end
        return self.count


class Receiver:
    """A receiver process and how to tell how many messages it has handled."""

    name = ""
    proc: subprocess.Popen[bytes]
    port: int

    def handled(self) -> int:
        raise NotImplementedError

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _wait(predicate: Any, timeout: float, what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {proc.returncode}")
        time.sleep(0.02)
    raise RuntimeError(f"{what}: timed out after {timeout} s")


class ObsdReceiver(Receiver):
    name = "obsd"

    def __init__(self, workdir: Path, profile: Path | None) -> None:
        self.port = free_port()
        data = workdir / "obsd-data"
        config = workdir / "obsd.toml"
        config.write_text(
            f"[daemon]\ndata_dir = '{data}'\nlog_format = 'json'\nmetrics_interval = 0\n"
            f"[inputs.syslog]\nlisten = ['tcp:{self.port}:interface=127.0.0.1']\n"
            "timezone = 'UTC'\n[outputs.file]\nmax_bytes = 1099511627776\n"
        )
        self.counter = LineCounter(data / "events.jsonl")
        self.log = workdir / "obsd.log"
        args = [sys.executable, "-c", TWISTD, "--pidfile", ""]
        if profile is not None:
            args += ["--profile", str(profile), "--profiler", "cprofile", "--savestats"]
        args += ["-n", "obsd", "--config", str(config)]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(args, cwd=workdir, env=env, stdout=log,
                                         stderr=subprocess.STDOUT)
        _wait(lambda: b'"obsd started"' in self.log.read_bytes(), 60, "obsd start", self.proc)

    def handled(self) -> int:
        return self.counter.update()


class RsyslogReceiver(Receiver):
    name = "rsyslog"

    def __init__(self, workdir: Path, binary: str) -> None:
        self.port = free_port()
        out = workdir / "rsyslog-out.log"
        config = workdir / "rsyslog.conf"
        config.write_text(
            f'global(workDirectory="{workdir}" maxMessageSize="64k")\n'
            'module(load="imptcp")\n'
            f'input(type="imptcp" address="127.0.0.1" port="{self.port}" ruleset="bench" '
            'SupportOctetCountedFraming="on")\n'
            'ruleset(name="bench") {\n'
            f'  action(type="omfile" file="{out}" template="RSYSLOG_FileFormat")\n'
            "}\n"
        )
        self.counter = LineCounter(out)
        log = workdir / "rsyslog.log"
        with log.open("wb") as handle:
            self.proc = subprocess.Popen(
                [binary, "-n", "-f", str(config), "-i", str(workdir / "rsyslog.pid")],
                cwd=workdir, stdout=handle, stderr=subprocess.STDOUT,
            )
        _wait(lambda: _accepts(self.port), 30, "rsyslog start", self.proc)

    def handled(self) -> int:
        return self.counter.update()


class BareReceiver(Receiver):
    name = "bare"

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.count_file = workdir / "bare.count"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.syslog", "--bare", str(self.port), str(self.count_file)],
            cwd=ROOT, env=env,
        )
        _wait(lambda: _accepts(self.port), 30, "bare receiver start", self.proc)

    def handled(self) -> int:
        try:
            return int(self.count_file.read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def run_bare(port: int, count_file: Path) -> None:
    """The bare receiver: frame each connection (auto-detected) and count the messages."""
    from twisted.internet import reactor, task
    from twisted.internet.protocol import Factory, Protocol

    from obsd.codecs.framing import make_framer

    state = {"count": 0, "written": -1}

    class Counting(Protocol):
        def connectionMade(self) -> None:
            self.framer = make_framer("auto")

        def dataReceived(self, data: bytes) -> None:
            state["count"] += len(self.framer.feed(data))

        def connectionLost(self, reason: Any = None) -> None:
            state["count"] += len(self.framer.flush())
            write()

    def write() -> None:
        if state["count"] != state["written"]:
            count_file.write_text(str(state["count"]))
            state["written"] = state["count"]

    factory = Factory.forProtocol(Counting)
    factory.noisy = False
    reactor.listenTCP(port, factory, interface="127.0.0.1")  # type: ignore[attr-defined,arg-type]
    task.LoopingCall(write).start(0.02)
    reactor.run()  # type: ignore[attr-defined]


def run_sender(port: int, path: Path) -> None:
    """The load process: send a prepared file over one connection, then close."""
    data = path.read_bytes()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        view = memoryview(data)
        for start in range(0, len(data), 1 << 16):
            sock.sendall(view[start : start + (1 << 16)])


def measure(receiver: Receiver, load: Path, count: int, timeout: float) -> dict[str, float]:
    """Send one load to ``receiver``; wall and CPU seconds until it handled every message."""
    before = receiver.handled()
    target = before + count
    cpu0 = cpu_seconds(receiver.proc.pid)
    start = time.monotonic()
    sender = subprocess.Popen(
        [sys.executable, "-m", "bench.syslog", "--send", str(receiver.port), str(load)], cwd=ROOT
    )
    deadline = start + timeout
    while receiver.handled() < target:
        if time.monotonic() > deadline:
            sender.kill()
            sender.wait()
            raise RuntimeError(
                f"{receiver.name}: handled {receiver.handled() - before} of {count} "
                f"in {timeout} s"
            )
        time.sleep(0.005)
    wall = time.monotonic() - start
    cpu = cpu_seconds(receiver.proc.pid) - cpu0
    sender.wait(30)
    # CPU time is counted in clock ticks: below 50 ms a per-CPU-second rate means nothing
    cpu_rate = count / cpu if cpu >= 0.05 else float("nan")
    return {"wall": wall, "cpu": cpu, "rate": count / wall, "cpu_rate": cpu_rate}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.syslog", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a small load, for CI (seconds)")
    parser.add_argument("--count", type=int, default=0, help="messages per load")
    parser.add_argument("--profile", action="store_true", help="profile obsd (cProfile top 15)")
    parser.add_argument("--bare", nargs=2, metavar=("PORT", "COUNTFILE"), help=argparse.SUPPRESS)
    parser.add_argument("--send", nargs=2, metavar=("PORT", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bare:
        run_bare(int(args.bare[0]), Path(args.bare[1]))
        return 0
    if args.send:
        run_sender(int(args.send[0]), Path(args.send[1]))
        return 0
    count = args.count or (5_000 if args.quick else 200_000)
    timeout = 60.0 if args.quick else 300.0
    workdir = Path(tempfile.mkdtemp(prefix="obsd-bench-syslog-"))
    profile = workdir / "obsd.prof" if args.profile else None
    loads = {}
    for payload in PAYLOADS:
        lines = make_lines(payload, count)
        for framing in FRAMINGS:
            path = workdir / f"{payload}-{framing}.load"
            path.write_bytes(frame(lines, framing))
            loads[payload, framing] = path
    receivers: list[Receiver] = []
    results: dict[tuple[str, str, str], dict[str, float]] = {}
    missing: list[str] = []
    try:
        receivers.append(ObsdReceiver(workdir, profile))
        binary = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd"
                                                if Path("/usr/sbin/rsyslogd").exists() else None)
        if binary:
            receivers.append(RsyslogReceiver(workdir, binary))
        else:
            missing.append("rsyslog (rsyslogd not installed: apt-get install rsyslog)")
        receivers.append(BareReceiver(workdir))
        for receiver in receivers:
            for (payload, framing), load in loads.items():
                results[receiver.name, payload, framing] = measure(receiver, load, count, timeout)
    finally:
        for receiver in receivers:
            receiver.stop()
    print(f"syslog over TCP, {count} messages per load, receivers on 127.0.0.1, "
          f"{os.cpu_count()} CPUs")
    header = (f"{'receiver':<9}{'payload':<9}{'framing':<8}{'msgs':>8}{'wall s':>8}"
              f"{'msg/s':>10}{'cpu s':>7}{'msg/cpu-s':>11}")
    print(header)
    print("-" * len(header))
    for (name, payload, framing), r in results.items():
        print(f"{name:<9}{payload:<9}{framing:<8}{count:>8}{r['wall']:>8.2f}{r['rate']:>10.0f}"
              f"{r['cpu']:>7.2f}{r['cpu_rate']:>11.0f}")
    for line in missing:
        print(f"not run: {line}")
    print()
    print(f"{'ratio':<24}{'payload':<9}{'framing':<8}{'wall':>7}{'cpu':>7}")
    for peer in ("rsyslog", "bare"):
        for payload in PAYLOADS:
            for framing in FRAMINGS:
                other = results.get((peer, payload, framing))
                mine = results.get(("obsd", payload, framing))
                if other and mine:
                    print(f"{'obsd/' + peer:<24}{payload:<9}{framing:<8}"
                          f"{mine['rate'] / other['rate']:>7.2f}"
                          f"{mine['cpu_rate'] / other['cpu_rate']:>7.2f}")
    aim = min(results["obsd", "rfc5424", f]["cpu_rate"] for f in FRAMINGS)
    print()
    if aim == aim:  # not NaN
        verdict = "met" if aim >= 50_000 else f"missed by {1 - aim / 50_000:.0%}"
        print(f"aim: >= 50000 RFC 5424 lines per obsd CPU-second; measured {aim:.0f} ({verdict})")
    else:
        print("aim: not judged (the load was too short to measure CPU time)")
    if profile is not None and profile.exists():
        print()
        print("obsd profile, top 15 by internal time:")
        pstats.Stats(str(profile)).sort_stats("tottime").print_stats(15)
    if profile is None:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(json.dumps({"profile": str(profile)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
