"""Sphinx configuration for obsd's documentation (``sphinx-build -W -b html docs docs/_build/html``)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# the checkout's obsd, so the reference is generated from the schema being documented
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE / "_ext"))

from obsd import __version__  # noqa: E402

project = "obsd"
author = "the obsd developers"
copyright = "the obsd developers"  # noqa: A001 - Sphinx's name
release = version = __version__

extensions = ["obsd_reference"]
templates_path: list[str] = []
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"
highlight_language = "none"

# Pages other work adds (howto/*, performance-*.rst, ...) are picked up by glob
# toctrees; a glob that matches nothing yet must not fail a -W build.
suppress_warnings = ["toc.empty_glob"]

html_theme = "furo"
html_title = f"obsd {release}"
html_static_path: list[str] = []
