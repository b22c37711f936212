"""The status page in a real browser: after N events, the rendered numbers are exactly N.

Events go in through every input this checkout has of syslog (lines over TCP)
and Sentry (store requests); a missing one skips its case, or fails it under CI.
"""

from __future__ import annotations

import os
import re
import shutil
import urllib.request
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.integration.fixtures.chromium import Chromium
from tests.integration.fixtures.obsd import ObsdProcess
from tests.integration.ops_support import (
    SENTRY_KEY,
    SENTRY_PROJECT,
    get_json,
    require_input,
    send_sentry,
    send_syslog,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """
[daemon]
data_dir = '{data_dir}'
metrics_interval = 0
[http]
listen = ["tcp:0:interface=127.0.0.1"]
[outputs.file]
batch_timeout = 0.05
"""

INPUTS = {
    "syslog": '[inputs.syslog]\nlisten = ["tcp:0:interface=127.0.0.1"]\ntimezone = "UTC"\n',
    "sentry": f"[inputs.sentry]\nprojects = [{{ id = {SENTRY_PROJECT}, keys = ['{SENTRY_KEY}'] }}]\n",
}
#: the counter each input keeps of the events it accepted
ACCEPTED = {"syslog": "received", "sentry": "events"}


class Cells(HTMLParser):
    """The value cells of the page: data-name -> text."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self.states: dict[str, str] = {}
        self._into: tuple[dict[str, str], str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("data-name"):
            self._into = (self.values, found["data-name"] or "")
        elif found.get("data-state"):
            self._into = (self.states, found["data-state"] or "")

    def handle_data(self, data: str) -> None:
        if self._into is not None:
            table, key = self._into
            table[key] = table.get(key, "") + data.strip()

    def handle_endtag(self, tag: str) -> None:
        self._into = None


class TestStatusPage:
    @pytest.mark.parametrize(("kind", "count"), [("syslog", 7), ("syslog", 250), ("sentry", 25)])
    def test_rendered_numbers_equal_what_was_sent(
        self,
        obsd_process: Callable[..., ObsdProcess],
        chromium: Chromium,
        kind: str,
        count: int,
        tmp_path: Path,
    ) -> None:
        """N events in: the DOM Chromium renders shows accepted = sent = N, state ok."""
        require_input(kind)
        proc = obsd_process(CONFIG + INPUTS[kind])
        base = f"http://127.0.0.1:{proc.port('http')}"
        texts = [f"user.login number {i}" for i in range(count)]
        if kind == "syslog":
            send_syslog(proc.port("syslog"), texts)
        else:
            send_sentry(base, texts)
        proc.wait_for(
            lambda: get_json(f"{base}/status")["outputs"]["file"]["counters"].get("sent") == count,
            what=f"{count} events sent by the file output",
        )
        cells = Cells()
        cells.feed(chromium.dump_dom(base + "/"))
        accepted = f"obsd.input.{kind}.{ACCEPTED[kind]}"
        assert cells.values[accepted] == str(count)
        assert cells.values["obsd.output.file.received"] == str(count)
        assert cells.values["obsd.output.file.sent"] == str(count)
        assert cells.values["obsd.output.file.queued"] == "0"
        assert cells.states == {"file": "ok"}
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        assert f"{accepted.replace('.', '_')}_total {count}.0" in metrics.splitlines()
        assert f"obsd_output_file_sent_total {count}.0" in metrics.splitlines()
        assert get_json(f"{base}/healthz") == {"status": "ok"}
        assert get_json(f"{base}/readyz")["reasons"] == []
        status = get_json(f"{base}/status")
        assert status["inputs"][kind]["counters"][ACCEPTED[kind]] == count
        assert re.fullmatch(r"\d+\.\d\d", f"{status['outputs']['file']['rates']['sent']:.2f}")
        shot = chromium.screenshot(base + "/", tmp_path / "status.png")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if count == 250 and os.environ.get("OBSD_UPDATE_SCREENSHOT"):  # the docs' picture (docs/reference/operations.rst)
            shutil.copyfile(shot, ROOT / "docs" / "status-page.png")
        assert proc.stop() == 0
