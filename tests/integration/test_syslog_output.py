"""[outputs.syslog] against a real rsyslogd: RFC 5424 with octet counting, over TCP and TLS."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from tests.integration.fixtures.obsd import ObsdProcess
from tests.integration.fixtures.rsyslog_receiver import RsyslogReceiver
from tests.integration.relay_helpers import LOAD_TOKEN, post_events

pytestmark = pytest.mark.integration


def config(destination: str, extra: str = "") -> str:
    # events come in through a relay input, so the test controls every field
    return f"""
[daemon]
data_dir = '{{data_dir}}'
metrics_interval = 0

[http]
listen = ['tcp:0:interface=127.0.0.1']

[inputs.relay]
tokens = [{{name = "load", token = "{LOAD_TOKEN}"}}]

[outputs.syslog]
destination = '{destination}'
batch_timeout = 0.05
{extra}
"""


class TestRsyslogReceives:
    @pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
    def test_fields_arrive_as_sent(
        self, obsd_process: Callable[..., ObsdProcess], rsyslog_receiver: RsyslogReceiver,
        tls: bool,
    ) -> None:
        """rsyslog parses PRI, host, app, procid, msgid, SD and a multi-line UTF-8 message."""
        rx = rsyslog_receiver
        if tls:
            proc = obsd_process(config(f"tls:localhost:{rx.tls_port}",
                                       f"ca_file = '{rx.ca_file}'\n"))
        else:
            proc = obsd_process(config(f"tcp:127.0.0.1:{rx.tcp_port}"))
        uid = uuid.uuid4().hex[:10]
        events = [
            {"id": f"{uid}-{i}", "kind": "log", "event": f"héllo {uid} {i}\nsecond line",
             "timestamp": 1_700_000_000.25 + i, "host": "web1.example", "appname": "shop",
             "procid": "4242", "msgid": "ORDER", "level": "warning", "facility": "local4",
             "sd": {"order@32473": {"id": str(i), "note": 'q"]'}}, "source": "syslog"}
            for i in range(20)
        ]
        assert post_events(f"http://127.0.0.1:{proc.port('http')}", events)[0] == 200
        mine = lambda: [m for m in rx.received() if uid in m.get("msg", "")]  # noqa: E731
        rx.wait_for(lambda: len(mine()) >= 20, what=f"20 messages with {uid}")
        got = sorted(mine(), key=lambda m: int(m["msg"].split()[2]))
        assert len(got) == 20
        first = got[0]
        assert first["pri"] == str(20 * 8 + 4)
        assert (first["host"], first["app"], first["procid"], first["msgid"]) == (
            "web1.example", "shop", "4242", "ORDER")
        assert first["sd"] == '[order@32473 id="0" note="q\\"\\]"]'
        assert first["msg"] == f"héllo {uid} 0\nsecond line"
        assert first["input"] == ("imtcp" if tls else "imptcp")
        assert proc.stop() == 0
