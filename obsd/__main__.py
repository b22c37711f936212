"""``python -m obsd``: tools beside the daemon.

``check-config [--bind-test] [PATH]`` exits 0 with a summary of listeners,
outputs and routes, or 1 listing every problem as ``key.path: what is wrong``
(also files it names that are missing, directories obsd cannot write, and with
``--bind-test`` ports that are taken).  Secrets are
never printed.  ``tail [--url URL] [--match KEY=VALUE ...]`` follows the events
flowing through a running obsd.
"""

from __future__ import annotations

import argparse
import sys

from obsd.config.model import load_config, load_default, summary
from obsd.errors import ConfigError


def check_config(path: str | None, bind_test: bool = False) -> int:
    from obsd.cli.preflight import bind_problems, file_problems

    try:
        config = load_config(path) if path else load_default()
    except ConfigError as exc:
        print(f"{path or 'embedded default'}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 1
    problems = file_problems(config) + (bind_problems(config) if bind_test else [])
    if problems:
        print(f"{path or 'embedded default'}: {len(problems)} problem(s)", file=sys.stderr)
        for line in problems:
            print(line, file=sys.stderr)
        return 1
    print(summary(config))
    if bind_test:
        print("ports: all free")
    print("config OK")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m obsd", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check-config", help="check a config file and summarise it")
    check.add_argument("path", nargs="?", help="the TOML file (default: the embedded config)")
    check.add_argument(
        "--bind-test",
        action="store_true",
        help="also bind each tcp/udp listener's port for an instant to prove it is free",
    )
    tail = commands.add_parser("tail", help="follow the events flowing through a running obsd")
    tail.add_argument("--url", default=None, help="obsd's [http] address (default: http://127.0.0.1:9000)")
    tail.add_argument(
        "--match",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="kind=, source=, level= (minimum) or event= (glob); repeat to narrow",
    )
    args = parser.parse_args(argv)
    if args.command == "check-config":
        return check_config(args.path, args.bind_test)
    if args.command == "tail":
        from obsd.cli.tail import DEFAULT_URL, run_tail

        return run_tail(args.url or DEFAULT_URL, args.match)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
