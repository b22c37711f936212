"""obsd's build backend: setuptools, plus twistd's plugin as a real file in editable wheels.

twistd finds plugins by listing the ``twisted/plugins`` directories on
``sys.path``.  A regular wheel installs ``twisted/plugins/obsd_plugin.py`` into
site-packages, so ``twistd obsd`` works.  A modern editable wheel
(``pip install -e .``) installs only an import finder that maps ``obsd`` to the
checkout; the checkout is not on ``sys.path``, so twistd never sees the plugin
and says "Unknown command: obsd".

This backend adds the plugin file itself to the editable wheel, next to
Twisted's own plugins, exactly where a regular install puts it.  The plugin is
one lazy ``ServiceMaker`` line that imports nothing of obsd; everything it
names (``obsd.tap``) is still loaded from the checkout through the finder, so
edits take effect at once.  Only an edit of the plugin file itself needs the
``pip install -e .`` again.  No ``.pth`` file and no ``editable_mode`` setting
are involved, and ``pip uninstall obsd`` removes the file (it is in RECORD).
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
    add_file(Path(wheel_directory, name), PLUGIN, (ROOT / PLUGIN).read_bytes())
    return str(name)


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
