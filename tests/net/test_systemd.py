"""systemd's sockets: which descriptors were passed, and which one a listener names.

Adopting real sockets is tested with systemd-socket-activate in
tests/integration/test_systemd_activation.py; here only the bookkeeping.
"""

from __future__ import annotations

import pytest

from obsd.net.endpoints import parse_listener
from obsd.net.systemd import find_fd, inherited

STREAM_AND_DGRAM = frozenset({"tcp", "udp", "unixgram", "systemd"})


class TestInherited:
    def test_named_descriptors_from_three(self) -> None:
        """LISTEN_FDS counts from fd 3; LISTEN_FDNAMES names them in order."""
        env = {"LISTEN_PID": "42", "LISTEN_FDS": "3", "LISTEN_FDNAMES": "a:b:c"}
        assert inherited(env, pid=42) == [(3, "a"), (4, "b"), (5, "c")]

    def test_unnamed_descriptors(self) -> None:
        """Without names (systemd-socket-activate without --fdname) they are unnamed."""
        assert inherited({"LISTEN_PID": "42", "LISTEN_FDS": "2"}, pid=42) == [(3, ""), (4, "")]

    def test_meant_for_another_process(self) -> None:
        """A LISTEN_PID that is not this process means nothing was passed to it."""
        assert inherited({"LISTEN_PID": "41", "LISTEN_FDS": "2"}, pid=42) == []
        assert inherited({"LISTEN_PID": "42", "LISTEN_FDS": "x"}, pid=42) == []


class TestFindFd:
    PASSED = [(3, "syslog-udp"), (4, "syslog-tcp"), (5, "")]

    def test_by_name_and_index(self) -> None:
        """name= picks by FileDescriptorName, index= by position."""
        assert find_fd({"name": "syslog-tcp"}, self.PASSED) == 4
        assert find_fd({"index": "2"}, self.PASSED) == 5

    def test_missing_name_lists_what_was_passed(self) -> None:
        """A name systemd did not pass is a clear error naming what it did pass."""
        with pytest.raises(ValueError, match=r"no socket named 'statsd' \(passed: "
                           r"0=syslog-udp, 1=syslog-tcp, 2=\(unnamed\)\)"):
            find_fd({"name": "statsd"}, self.PASSED)

    def test_nothing_passed(self) -> None:
        """Nothing passed at all says how sockets get lost: unnamed ones."""
        with pytest.raises(ValueError, match="passed: none; unnamed sockets are lost"):
            find_fd({"index": "0"}, [])


class TestSystemdListener:
    @pytest.mark.parametrize(
        "description", ["systemd:name=syslog-udp", "systemd:index=0",
                        "systemd:domain=INET6:name=x", "systemd:domain=UNIX:index=3"],
    )
    def test_accepted(self, description: str) -> None:
        """A name or an index, with an optional domain check."""
        listener = parse_listener(description, STREAM_AND_DGRAM)
        assert (listener.type, listener.family) == ("systemd", "systemd")

    @pytest.mark.parametrize(
        ("description", "reason"),
        [
            ("systemd:domain=INET", "name= .* or its index="),
            ("systemd:name=a:index=0", "name= .* or its index="),
            ("systemd:domain=IPX:index=0", "domain= must be INET, INET6 or UNIX"),
            ("systemd:index=-1", "index= counts from 0"),
            ("systemd:index=one", "invalid literal"),
        ],
    )
    def test_refused(self, description: str, reason: str) -> None:
        """Each mistake is named."""
        with pytest.raises(ValueError, match=reason):
            parse_listener(description, STREAM_AND_DGRAM)
