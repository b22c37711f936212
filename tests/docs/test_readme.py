"""README.rst's try-it lines, run as written against a real ``twistd obsd`` on the embedded default."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from obsd.config import loader
from tests.docs.runner import ROOT, Command, PageRun
from tests.docs.test_howtos import ports

pytestmark = pytest.mark.integration

README = ROOT / "README.rst"


def try_it_lines() -> list[str]:
    """The indented commands of README's "Try it" section."""
    text = README.read_text()
    section = text[text.index("\nTry it\n") : text.index("\nDocumentation\n")]
    return [
        line.strip()
        for line in section.splitlines()
        if re.match(r"\s{6}(logger|echo|python) ", line)
    ]


class TestTryIt:
    def test_lines_reach_obsd(self, tmp_path: Path) -> None:
        """logger, nc, sentry-sdk and raven from README arrive in the embedded default's file."""
        for program in ("logger", "nc"):
            if shutil.which(program) is None:
                pytest.skip(f"{program} is not installed")
        lines = try_it_lines()
        assert len(lines) == 4
        run = PageRun(README, tmp_path, substitutions=ports(9000, 8125, 5514))
        # the embedded default, with free ports: `twistd -n obsd` as README starts it
        (tmp_path / "obsd.toml").write_text(run.substitute(loader.default_config_text()))
        try:
            run.start_daemon("twistd -n obsd --config obsd.toml")
            for line in lines:
                run.run_command(Command(line, ""), daemon=False, block=None)
            for text in (
                '"event":"hello from logger"',
                '"event":"hello from sentry-sdk"',
                '"event":"hello from raven"',
                '"event":"stats_counts.x"',  # flushed after 10 s
            ):
                command = f"grep -m1 -o '{text}' obsd-data/events.jsonl"
                run.run_command(Command(command, text), daemon=False, block=None)
        finally:
            codes = run.stop_all()
        assert codes == [0]
