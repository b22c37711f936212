"""librdkafka's log lines reach obsd's log, throttled (the client itself: tests/integration)."""

from __future__ import annotations

from twisted.internet.task import Clock

from obsd.net.kafka import ClientLog, client_settings
from obsd.ops.throttle import ThrottledLogger
from obsd.outputs.kafka import Config
from obsd.testing import ListLog

REFUSED = ("FAIL", "rdkafka#consumer-1",
           "127.0.0.1:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed: Connection refused")


def test_a_flood_of_failed_connections_is_one_line_per_window() -> None:
    """As confluent-kafka calls the logger: level, format, facility, client, text."""
    clock, lines = Clock(), ListLog()
    log = ClientLog(ThrottledLogger(lines, clock, 10.0), "input:kafka")
    for _ in range(150):  # librdkafka retries every ~50 ms while a broker is down
        log.log(40, "%s [%s] %s", *REFUSED)
        clock.advance(0.05)
    assert [line[:2] for line in lines.lines] == [("error", "kafka client")]
    fields = lines.lines[0][2]
    assert fields["facility"] == "FAIL" and "Connection refused" in fields["detail"]
    assert fields["owner"] == "input:kafka"
    clock.advance(10.0)  # the window closes with a count of the rest
    assert lines.lines[1][2]["more_like_this"] == 149


def test_warnings_stay_warnings_and_kinds_are_apart() -> None:
    clock, lines = Clock(), ListLog()
    log = ClientLog(ThrottledLogger(lines, clock, 10.0), "output:kafka")
    log.log(30, "%s [%s] %s", "REQTMOUT", "rdkafka#producer-1", "timed out")
    log.log(40, "%s [%s] %s", *REFUSED)
    assert [(level, fields["facility"]) for level, _, fields in lines.lines] == [
        ("warning", "REQTMOUT"), ("error", "FAIL")]


def test_the_client_gets_the_logger() -> None:
    log = ClientLog(None, "x")
    assert client_settings(Config(type="kafka"), "obsd-h", log)["logger"] is log
    assert "logger" not in client_settings(Config(type="kafka"), "obsd-h")
