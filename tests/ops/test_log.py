"""obsd's own log: Twisted's per-connection chatter is debug, not info."""

from __future__ import annotations

import io
import json

import pytest
from twisted.logger import LogLevel

from obsd.ops.log import ObsdLogObserver


def twisted_event(text: str, level: LogLevel = LogLevel.info) -> dict[str, object]:
    return {"log_format": "{msg}", "msg": text, "log_level": level, "log_time": 0.0,
            "log_namespace": "twisted.web.client._HTTP11ClientFactory"}


class TestChatter:
    @pytest.mark.parametrize("text", [
        "Starting factory <twisted.web.client._HTTP11ClientFactory object at 0x1>",
        "Stopping factory <twisted.web.client._HTTP11ClientFactory object at 0x1>",
        "Starting protocol <obsd.inputs.statsd.StatsdDatagramProtocol object at 0x2>",
        "Stopping protocol <obsd.inputs.statsd.StatsdDatagramProtocol object at 0x2>",
    ])
    def test_chatter_is_not_shown_at_info(self, text: str) -> None:
        """Factory and protocol start/stop lines are dropped at the info level."""
        out = io.StringIO()
        ObsdLogObserver(out, "json", level="info")(twisted_event(text))
        assert out.getvalue() == ""

    def test_chatter_is_debug(self) -> None:
        """At the debug level they are shown, as debug."""
        out = io.StringIO()
        ObsdLogObserver(out, "json", level="debug")(twisted_event("Starting factory <f>"))
        assert json.loads(out.getvalue())["level"] == "debug"

    def test_other_twisted_lines_stay(self) -> None:
        """Twisted's other info lines (a port starting) are still shown."""
        out = io.StringIO()
        ObsdLogObserver(out, "json")(twisted_event("Site starting on 9000"))
        assert json.loads(out.getvalue())["event"] == "Site starting on 9000"

    def test_warnings_pass_at_warning_level(self) -> None:
        """A Twisted warning is kept when the level is warning; info is not."""
        out = io.StringIO()
        observer = ObsdLogObserver(out, "json", level="warning")
        observer(twisted_event("port starting"))
        observer(twisted_event("something odd", LogLevel.warn))
        assert [json.loads(x)["event"] for x in out.getvalue().splitlines()] == ["something odd"]
