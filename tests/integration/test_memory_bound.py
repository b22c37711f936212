"""``[daemon] max_memory``: under an offered load well above what the output takes, obsd's
RSS stays under the ceiling (backpressure and spooling, not growth), and nothing the
syslog TCP input accepted is lost."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.integration.fixtures.obsd import ObsdProcess

pytestmark = pytest.mark.integration

CEILING = 200 * 1024 * 1024
OFFERED_PER_SECOND = 20_000
SECONDS = 4.0
SINK_DOCS_PER_SECOND = 2_000  # a tenth of the offered load


class ThrottledBulk(BaseHTTPRequestHandler):
    """An Elasticsearch ``_bulk`` stand-in that takes a fixed number of documents a second."""

    received = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        docs = body.count(b"\n") // 2
        time.sleep(docs / SINK_DOCS_PER_SECOND)
        with ThrottledBulk.lock:
            ThrottledBulk.received += docs
        answer = json.dumps({"errors": False, "items": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(name="sink")
def _sink() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ThrottledBulk)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


CONFIG = """
[daemon]
data_dir = '{data_dir}'
max_memory = %d
metrics_interval = 0
shutdown_timeout = 2.0
[inputs.syslog]
listen = ['tcp:0:interface=127.0.0.1']
[outputs.elasticsearch]
urls = ['{url}']
template = false
batch_size = 500
[outputs.elasticsearch.buffer]
type = "disk"
max_events = 10000000
max_bytes = 1073741824
memory_events = 5000
""".replace("%d", str(CEILING))


class TestMemoryBound:
    def test_rss_stays_under_the_ceiling(
        self, obsd_process: Callable[..., ObsdProcess], sink: str
    ) -> None:
        """Ten times the load the sink takes, for seconds: RSS never passes max_memory."""
        proc = obsd_process(CONFIG.replace("{url}", sink))
        port = proc.port("syslog", "tcp")
        peak = 0
        sent = 0
        stop = threading.Event()

        def watch() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, rss(proc.pid))
                time.sleep(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        line = b"<14>1 2026-11-24T01:02:03Z web1 app 1 - - a log line that pads the record a bit\n"
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.settimeout(30)
            began = time.monotonic()
            while time.monotonic() - began < SECONDS:
                due = int((time.monotonic() - began) * OFFERED_PER_SECOND)
                if due > sent:
                    conn.sendall(line * (due - sent))
                    sent = due
                else:
                    time.sleep(0.005)
        stop.set()
        watcher.join()
        assert peak < CEILING, f"peak RSS {peak / 2**20:.0f} MiB"
        assert proc.proc is not None and proc.proc.poll() is None  # obsd stayed up throughout
        assert proc.stop() == 0
        # what the input accepted is in the spool or delivered: nothing is dropped
        status_drops = [e for e in proc.log_events() if e.get("event") == "output queue dropped events"]
        assert status_drops == []
