"""graypy, a GELF client from PyPI, logging to a real obsd over UDP (chunked), TCP and HTTP."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from tests.integration.fixtures.obsd import ObsdProcess
from tests.integration.test_sentry_forwarding import file_events

pytestmark = pytest.mark.integration

PROGRAM = """
import hashlib, logging, sys
import graypy
transport, port = sys.argv[1], int(sys.argv[2])
if transport == "udp":
    handler = graypy.GELFUDPHandler("127.0.0.1", port)  # chunks past 1420 bytes
elif transport == "tcp":
    handler = graypy.GELFTCPHandler("127.0.0.1", port)
else:
    handler = graypy.GELFHTTPHandler("127.0.0.1", port, path="/gelf")
log = logging.getLogger("shop.orders")
log.setLevel(logging.DEBUG)
log.addHandler(handler)
log.warning("card declined", extra={"order": 17, "customer": "c-9"})
# hex of hashes: compresses poorly, so UDP must chunk it
big = "".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(800))
log.info("big report", extra={"report": big})
handler.close()
print(len(big))
"""

CONFIG = """
[daemon]
data_dir = "{data_dir}"
[http]
listen = ["tcp:0:interface=127.0.0.1"]
[inputs.gelf]
listen = ["udp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1"]
[outputs.file]
batch_timeout = 0.05
"""


def gelf_events(proc: ObsdProcess) -> list[dict[str, Any]]:
    return [e for e in file_events(proc) if e.get("source") == "gelf"]


def metrics(proc: ObsdProcess) -> dict[str, float]:
    """obsd's own GELF input counters, read from its /metrics page."""
    from urllib.request import urlopen

    with urlopen(f"http://127.0.0.1:{proc.port('http')}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("obsd_input_gelf_")
    }


@pytest.fixture(name="obsd_gelf", scope="module")
def _obsd_gelf(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.integration.fixtures.obsd import ObsdProcess, twistd_args

    workdir = tmp_path_factory.mktemp("obsd-gelf")
    config = workdir / "obsd.toml"
    config.write_text(CONFIG.replace("{data_dir}", str(workdir / "data")))
    proc = ObsdProcess(workdir, twistd_args(config))
    proc.data_dir = workdir / "data"  # type: ignore[attr-defined]
    proc.start()
    yield proc
    proc.stop()


class TestGraypy:
    @pytest.mark.parametrize("transport", ["udp", "tcp", "http"])
    def test_messages_arrive_field_by_field(
        self, obsd_gelf: ObsdProcess, transport: str
    ) -> None:
        """graypy's messages arrive as log events, the large one whole (chunked over UDP)."""
        port = obsd_gelf.port("http") if transport == "http" else obsd_gelf.port("gelf", transport)
        before = len(gelf_events(obsd_gelf))
        result = subprocess.run(
            [sys.executable, "-c", PROGRAM, transport, str(port)],
            capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0, result.stderr
        big_size = int(result.stdout.strip().splitlines()[-1])
        obsd_gelf.wait_for(lambda: len(gelf_events(obsd_gelf)) >= before + 2, timeout=20,
                           what=f"graypy's {transport} messages")
        warning, report = gelf_events(obsd_gelf)[before : before + 2]
        assert warning["kind"] == "log"
        assert warning["event"] == "card declined"
        assert warning["level"] == "warning"
        assert warning["facility"] == "shop.orders"
        assert warning["order"] == 17
        assert warning["customer"] == "c-9"
        assert warning["gelf_version"] == "1.0"
        assert warning["host"]
        assert warning["timestamp"].endswith("Z")  # the sender's time, as the file writes it
        assert warning["peer"].startswith("127.0.0.1:")
        assert report["event"] == "big report"
        assert report["level"] == "info"
        assert len(report["report"]) == big_size
        assert not [e for e in obsd_gelf.log_events() if e.get("event") == "bad GELF message skipped"]
        counters = metrics(obsd_gelf)
        assert counters.get("obsd_input_gelf_bad_messages_total", 0) == 0
        assert counters.get("obsd_input_gelf_incomplete_total", 0) == 0
        if transport == "udp":  # the large message came in chunks, put back together
            assert counters["obsd_input_gelf_chunks_total"] > 2
