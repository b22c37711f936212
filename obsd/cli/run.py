"""``obsd run``: twistd in the foreground with no pid file.

The same as ``twistd --nodaemon --pidfile= obsd [--config PATH]``, run in this
process.  Without a pid file a stale ``twistd.pid`` (left by a kill -9 or a
crash) never blocks the next run; obsd's data_dir lock still refuses a second
obsd on the same data.
"""

from __future__ import annotations

import sys


def twistd_argv(config: str | None, extra: list[str] | None = None) -> list[str]:
    """twistd's arguments for ``obsd run``."""
    argv = ["twistd", "--nodaemon", "--pidfile=", *(extra or []), "obsd"]
    if config:
        argv += ["--config", config]
    return argv


def run(config: str | None, extra: list[str] | None = None) -> int:
    """Hand the process to twistd's runner; returns only if twistd does."""
    from twisted.scripts.twistd import run as twistd_run

    sys.argv = twistd_argv(config, extra)
    twistd_run()
    return 0
