"""The interpreter is part of the answer: the same benchmark on each CPython 3.11 the machine has.

Run ``python -m bench.interpreters [--quick] [--count N]``.  It runs
``bench.syslog`` (obsd's syslog TCP -> file path, beside rsyslog and the bare
framer) once with the interpreter running this command (in CI, pyenv's 3.11,
built without profile-guided optimisation) and once with the distribution's
``/usr/bin/python3`` (Debian builds it with PGO and LTO), each in a venv of
its own with obsd installed (the distribution's venv is made once and cached
under ``~/.cache/obsd-tests``).  The interpreters alternate, round by round
(3 rounds; 1 with ``--quick``), so other load on a shared machine hits both;
it prints obsd's median messages per CPU-second with each, and their ratio:
what choosing the interpreter buys.  An interpreter
older than 3.11 is skipped (Debian's PyPy is a 3.9 and cannot run obsd).
Loopback only; bounded like ``bench.syslog``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("OBSD_TEST_CACHE", Path.home() / ".cache" / "obsd-tests"))
DISTRIBUTION = Path("/usr/bin/python3")


def version(python: Path | str) -> tuple[int, int, str]:
    out = subprocess.run(
        [str(python), "-c", "import sys, platform; print(*sys.version_info[:2], "
         "platform.python_version())"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout.split()
    return int(out[0]), int(out[1]), out[2]


def venv_for(python: Path) -> Path:
    """A venv of ``python`` with obsd (editable) and its dependencies, made once and cached."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:12]
    _, _, full = version(python)
    home = CACHE / f"venv-{python.name}-{full}-{digest}"
    interpreter = home / "bin" / "python"
    if interpreter.exists():
        return interpreter
    subprocess.run([str(python), "-m", "venv", str(home)], check=True, timeout=300)
    subprocess.run([str(interpreter), "-m", "pip", "install", "-q", "-e", str(ROOT)],
                   check=True, timeout=900)
    return interpreter


def syslog_rates(python: Path | str, count: int) -> dict[tuple[str, str], float]:
    """obsd's messages per CPU-second per (payload, framing) from one ``bench.syslog`` run."""
    done = subprocess.run(
        [str(python), "-m", "bench.syslog", "--count", str(count)],
        cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"bench.syslog with {python} failed:\n{done.stdout}{done.stderr}")
    rates = {}
    for line in done.stdout.splitlines():
        fields = line.split()
        if len(fields) == 8 and fields[0] == "obsd":
            rates[fields[1], fields[2]] = float(fields[7])
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.interpreters",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small load (CI)")
    parser.add_argument("--count", type=int, default=0, help="messages per load")
    parser.add_argument("--rounds", type=int, default=0, help="rounds (medians)")
    args = parser.parse_args(argv)
    # quick: still enough CPU time per load (>= 50 ms) for a per-CPU-second rate
    count = args.count or (20_000 if args.quick else 200_000)
    rounds = args.rounds or (1 if args.quick else 3)
    pythons: dict[str, Path | str] = {"this (sys.executable)": sys.executable}
    skipped = []
    if DISTRIBUTION.exists():
        major, minor, full = version(DISTRIBUTION)
        if (major, minor) >= (3, 11):
            pythons[f"{DISTRIBUTION} {full}"] = venv_for(DISTRIBUTION)
        else:
            skipped.append(f"{DISTRIBUTION} {full}: obsd needs 3.11")
    else:
        skipped.append(f"{DISTRIBUTION}: not installed")
    runs: dict[str, list[dict[tuple[str, str], float]]] = {name: [] for name in pythons}
    for _ in range(rounds):
        for name, python in pythons.items():
            runs[name].append(syslog_rates(python, count))
    results = {
        name: {key: statistics.median(r[key] for r in done) for key in done[0]}
        for name, done in runs.items()
    }
    names = list(results)
    print(f"bench.syslog, {count} messages per load, obsd messages per CPU-second "
          f"(median of {rounds}); {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    for name, python in pythons.items():
        print(f"  {name}: {version(python)[2]} ({python})")
    header = f"{'payload':<9}{'framing':<8}" + "".join(f"{n[:24]:>26}" for n in names)
    if len(names) == 2:
        header += f"{'ratio':>8}"
    print(header)
    ratios = []
    for key in results[names[0]]:
        row = f"{key[0]:<9}{key[1]:<8}" + "".join(f"{results[n].get(key, 0):>26.0f}"
                                                   for n in names)
        if len(names) == 2 and results[names[0]].get(key):
            ratio = results[names[1]].get(key, 0) / results[names[0]][key]
            ratios.append(ratio)
            row += f"{ratio:>8.2f}"
        print(row)
    if ratios:
        print(f"{names[1]} / {names[0]}: median {statistics.median(ratios):.2f}")
    for line in skipped:
        print(f"not run: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
