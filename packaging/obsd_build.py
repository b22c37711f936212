"""obsd's build backend: setuptools, plus twistd's plugin as a real file in editable wheels.

twistd finds plugins by listing the ``twisted/plugins`` directories on
``sys.path``.  A regular wheel installs ``twisted/plugins/obsd_plugin.py`` into
site-packages, so ``twistd obsd`` works.  A modern editable wheel
(``pip install -e .``) installs only an import finder that maps ``obsd`` to the
checkout; the checkout is not on ``sys.path``, so twistd never sees the plugin
and says "Unknown command: obsd".

This backend adds a plugin file to the editable wheel, next to Twisted's own
plugins, exactly where a regular install puts ``obsd_plugin.py``.  That file
runs the checkout's ``twisted/plugins/obsd_plugin.py`` (one lazy
``ServiceMaker`` line), so an edit of the plugin in the checkout (a moved
``obsd.daemon.tap``, say) counts at once, as every other edit does through the
finder.  No ``.pth`` file and no ``editable_mode`` setting are involved, and
``pip uninstall obsd`` removes the file (it is in RECORD).
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import (  # noqa: F401 - the PEP 517/660 hooks we pass through
    build_sdist,
    build_wheel,
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    get_requires_for_build_wheel,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

#: the plugin, relative to the project root and to site-packages alike
PLUGIN = "twisted/plugins/obsd_plugin.py"
ROOT = Path(__file__).resolve().parent.parent


def build_editable(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    """setuptools' editable wheel, with the twistd plugin added as a real file."""
    name = _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
    add_file(Path(wheel_directory, name), PLUGIN, editable_plugin(ROOT / PLUGIN))
    return str(name)


def editable_plugin(source: Path) -> bytes:
    """The installed plugin of an editable install: it runs the checkout's plugin file."""
    return (
        '"""twistd\'s entry for obsd (pip install -e): runs the checkout\'s plugin."""\n'
        "from pathlib import Path as _Path\n\n"
        f"_SOURCE = _Path({str(source)!r})\n"
        'exec(compile(_SOURCE.read_text(encoding="utf-8"), str(_SOURCE), "exec"))\n'
    ).encode()


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def add_file(wheel: Path, arcname: str, data: bytes) -> None:
    """Rewrite ``wheel`` with ``arcname`` added and listed in its RECORD."""
    with zipfile.ZipFile(wheel) as source:
        entries = [(info, source.read(info)) for info in source.infolist()]
    record_name = next(i.filename for i, _ in entries if i.filename.endswith(".dist-info/RECORD"))
    line = f"{arcname},{_record_hash(data)},{len(data)}\n".encode()
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as target:
        for info, content in entries:
            if info.filename == arcname:
                continue  # a setuptools that ships it already: ours replaces it
            if info.filename == record_name:
                own = arcname.encode() + b","
                kept = [r for r in content.splitlines() if r and not r.startswith(own)]
                content = b"\n".join(kept) + b"\n" + line
            target.writestr(info, content)
        target.writestr(arcname, data)
    tmp.replace(wheel)
