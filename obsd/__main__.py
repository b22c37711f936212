"""``python -m obsd``: the same as the ``obsd`` command (see ``obsd.cli.main``)."""

from __future__ import annotations

import sys

from obsd.cli.main import check_config, main

__all__ = ["check_config", "main"]

if __name__ == "__main__":
    sys.exit(main(prog="python -m obsd"))
