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


class Picture(HTMLParser):
    """The flow picture's elements: nodes, route edges, their numbers and sparklines."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: list[str] = []
        self.edges: list[str] = []
        self.texts: dict[str, str] = {}
        self.sparks: dict[str, str] = {}
        self.flow_at: str | None = None
        self._into: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        if tag == "g" and "data-node" in found:
            self.nodes.append(found["data-node"])
        if tag == "path" and "data-edge" in found:
            self.edges.append(found["data-edge"])
        if tag == "polyline" and "data-series" in found:
            self.sparks[found["data-series"]] = found.get("points", "")
        if "data-flow-at" in found:
            self.flow_at = found["data-flow-at"]
        for key in ("data-node-rate", "data-edge-rate", "data-node-queued"):
            if key in found:
                self._into = f"{key}={found[key]}"

    def handle_data(self, data: str) -> None:
        if self._into is not None:
            self.texts[self._into] = self.texts.get(self._into, "") + data.strip()

    def handle_endtag(self, tag: str) -> None:
        self._into = None


FLOW_CONFIG = """
[daemon]
data_dir = '{data_dir}'
metrics_interval = 0
[http]
listen = ["tcp:0:interface=127.0.0.1"]
[inputs.syslog]
listen = ["tcp:0:interface=127.0.0.1"]
timezone = "UTC"
[inputs.statsd]
listen = ["udp:0:interface=127.0.0.1"]
flush_interval = 1
[outputs.file]
batch_timeout = 0.05
[outputs.console]
[[routes]]
match = { kind = ["log"] }
outputs = ["file"]
[[routes]]
match = { kind = ["metric"] }
outputs = ["console"]
[[routes]]
match = { kind = ["log"], event = "user.*" }
outputs = ["console"]
"""


class TestFlowPicture:
    def test_picture_matches_status_after_known_traffic(
        self, obsd_process: Callable[..., ObsdProcess], chromium: Chromium, tmp_path: Path
    ) -> None:
        """One node per input and output, one arrow per route, rates and queues equal to /status."""
        proc = obsd_process(FLOW_CONFIG)
        base = f"http://127.0.0.1:{proc.port('http')}"
        send_syslog(proc.port("syslog"), [f"user.login number {i}" for i in range(120)])
        send_syslog(proc.port("syslog"), [f"other.thing {i}" for i in range(30)])

        def sampled() -> bool:  # two history samples after the traffic, non-zero rates
            doc = get_json(f"{base}/status")
            return len(doc["history"]["times"]) >= 3 and doc["flow"]["edges"][0]["rate"] > 0

        proc.wait_for(sampled, timeout=30, what="three history samples with traffic")
        for _attempt in range(5):  # read the page between two samples: same flow.at
            before = get_json(f"{base}/status")
            picture = Picture()
            picture.feed(chromium.dump_dom(base + "/"))
            after = get_json(f"{base}/status")
            if before["flow"]["at"] == after["flow"]["at"]:
                break
        else:
            raise AssertionError("the page was never read between two samples")
        flow = before["flow"]
        assert picture.flow_at == str(flow["at"])
        assert sorted(picture.nodes) == ["input.statsd", "input.syslog", "output.console",
                                         "output.file"]
        assert sorted(picture.edges) == ["0:file", "1:console", "2:console"]
        shown = {k: v for k, v in picture.texts.items()}
        for node in flow["inputs"]:
            assert shown[f"data-node-rate=input.{node['name']}"] == f"{node['rate']:.2f}/s"
        for node in flow["outputs"]:
            assert shown[f"data-node-rate=output.{node['name']}"] == f"{node['rate']:.2f}/s"
            assert shown[f"data-node-queued=output.{node['name']}"] == f"queue {node['queued']}"
        for edge in flow["edges"]:
            key = f"data-edge-rate={edge['route']}:{edge['output']}"
            assert shown[key] == f"{edge['rate']:.2f}/s"
        # 150 lines went to route 0, the 120 "user.*" ones to route 2, over the same span
        rates = {e["route"]: e["rate"] for e in flow["edges"]}
        assert rates["0"] == pytest.approx(rates["2"] * 150 / 120)
        # a sparkline per component rate and per queue, with a point per history sample
        assert set(picture.sparks) == {"input.syslog.rate", "input.statsd.rate",
                                       "output.file.rate", "output.file.queued",
                                       "output.console.rate", "output.console.queued"}
        samples = len(after["history"]["times"])
        assert len(picture.sparks["output.file.rate"].split()) in (samples - 1, samples)
        shot = chromium.screenshot(base + "/", tmp_path / "status.png", size="1200,900")
        assert shot.stat().st_size > 10_000
        if os.environ.get("OBSD_UPDATE_SCREENSHOT"):  # the docs' picture
            shutil.copyfile(shot, ROOT / "docs" / "status-page.png")
        assert proc.stop() == 0
