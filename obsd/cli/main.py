"""``obsd``: the command people type (also ``python -m obsd``).

``obsd run [--config PATH]`` runs the daemon in the foreground (twistd, no pid
file).  ``obsd check-config [--bind-test] [PATH]`` exits 0 with a summary of
listeners, outputs and routes, or 1 listing every problem as ``key.path: what
is wrong`` (also files it names that are missing, directories obsd cannot
write, and with ``--bind-test`` ports that are taken); secrets are never
printed; a config without inputs is OK but warned about.  ``obsd tail``
follows the events flowing through a running obsd; ``obsd top`` shows its
inputs, routes and outputs with rates and queue depths.
"""

from __future__ import annotations

import argparse
import sys

from obsd.cli.tail import DEFAULT_URL
from obsd.config.loader import config_warnings, load_config, load_default, summary
from obsd.errors import ConfigError


def check_config(path: str | None, bind_test: bool = False) -> int:
    """Print a summary (exit 0) or every problem (exit 1)."""
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
    for warning in config_warnings(config):
        print(f"warning: {warning}")
    print("config OK")
    return 0


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run obsd in the foreground (twistd, no pid file)")
    run.add_argument("--config", "-c", default=None, help="the TOML file (default: embedded)")
    check = commands.add_parser("check-config", help="check a config file and summarise it")
    check.add_argument("path", nargs="?", help="the TOML file (default: the embedded config)")
    check.add_argument("--config", "-c", dest="config", default=None, help="same as PATH")
    check.add_argument(
        "--bind-test",
        action="store_true",
        help="also bind each tcp/udp listener's port for an instant to prove it is free",
    )
    tail = commands.add_parser("tail", help="follow the events flowing through a running obsd")
    tail.add_argument("--url", default=DEFAULT_URL, help=f"obsd's [http] address ({DEFAULT_URL})")
    tail.add_argument(
        "--match",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="kind=, source=, level= (minimum) or event= (glob); repeat to narrow",
    )
    top = commands.add_parser("top", help="live view of inputs, outputs, rates and queues")
    top.add_argument("--url", default=DEFAULT_URL, help=f"obsd's [http] address ({DEFAULT_URL})")
    top.add_argument("--interval", type=float, default=2.0, help="seconds between frames")
    top.add_argument("--once", action="store_true", help="print one plain-text frame and exit")
    return parser


def main(argv: list[str] | None = None, prog: str = "obsd") -> int:
    args = _parser(prog).parse_args(argv)
    if args.command == "run":
        from obsd.cli.run import run

        return run(args.config)
    if args.command == "check-config":
        return check_config(args.path or args.config, args.bind_test)
    if args.command == "tail":
        from obsd.cli.tail import run_tail

        return run_tail(args.url, args.match)
    if args.command == "top":
        from obsd.cli.top import run_top

        return run_top(args.url, args.interval, args.once)
    return 2  # pragma: no cover - argparse rejects unknown commands


def console_main() -> None:
    """The ``obsd`` console script."""
    sys.exit(main())
