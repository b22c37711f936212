"""Config loading: every class of problem gives its ``key.path: reason`` line."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from obsd import registry
from obsd.__main__ import main
from obsd.config.loader import load_config, load_default, parse_config, summary
from obsd.errors import ConfigError


@pytest.fixture(autouse=True)
def _metric_only_output(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.OUTPUT_MODULES, "metricsonly", "tests.fake_outputs")


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(text), env=env or {})
    return info.value.problems


class TestProblems:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("bogus = 1", "bogus: unknown key"),
            ("[daemon]\ndata_dirr = 'x'", "daemon.data_dirr: unknown key"),
            ("[daemon]\nshutdown_timeout = 'soon'", "daemon.shutdown_timeout: expected a number, got 'soon'"),
            ("[daemon]\nshutdown_timeout = -1", "daemon.shutdown_timeout: must be at least 0"),
            ("[outputs.file]\nbuffer = { when_full = 'explode' }",
             "outputs.file.buffer.when_full: expected one of 'block', 'drop_newest', 'drop_oldest'"),
            ("[outputs.x]\ntype = 'nosuch'", "outputs.x.type: unknown output type 'nosuch'"),
            ("[outputs.nosuch]", "outputs.nosuch: unknown output type 'nosuch'"),
            ("[inputs.nosuch]", "inputs.nosuch: unknown input type 'nosuch'"),
            ("[http]\nlisten = ['tcp:notaport']", "http.listen[0]: bad endpoint 'tcp:notaport'"),
            ("[http]\nlisten = ['udp:9000']", "http.listen[0]: 'udp' listeners are not accepted here"),
            ("[http]\nlisten = ['tcp:70000']", "http.listen[0]: bad endpoint 'tcp:70000': port 70000 is out of range"),
            ("[http]\nlisten = ['tcp:9000', 'tcp:9000:interface=127.0.0.1']",
             "http.listen[1]: 'tcp:9000:interface=127.0.0.1' would bind the same tcp address and port as http.listen[0]"),
            ("[outputs.file]\n[[routes]]\noutputs = ['nope']", "routes[0].outputs: no output named 'nope'"),
            ("[outputs.m]\ntype = 'metricsonly'\n[[routes]]\nmatch = { kind = 'log' }\noutputs = ['m']",
             "routes[0].outputs: output 'm' (type metricsonly) cannot take 'log' events (it takes: metric)"),
            ("[outputs.file]\n[[routes]]\nmatch = { kind = 'logs' }\noutputs = ['file']",
             "routes[0].match.kind: unknown kind 'logs'"),
            ("[outputs.file]\n[[routes]]\nmatch = { level = 'loud' }\noutputs = ['file']",
             "routes[0].match.level: unknown level 'loud'"),
            ("[pipeline]\nprocessors = ['no.such.module:f']", "pipeline.processors[0]: cannot load 'no.such.module:f'"),
            ("[pipeline]\nprocessors = ['nocolon']", "pipeline.processors[0]: cannot load 'nocolon': expected 'module:callable'"),
            ("[outputs.file]\npath = '${OBSD_NOT_SET}'", "outputs.file.path: environment variable OBSD_NOT_SET is not set"),
            ("[http]\nlisten = ['ssl:9443:privateKey=k.pem:clientCA=/no/such/ca.pem']",
             "http.listen[0]: bad endpoint 'ssl:9443:privateKey=k.pem:clientCA=/no/such/ca.pem': clientCA file"),
            ("[http]\nlisten = ['tcp:9000']\n[inputs.sentry]",
             "inputs.sentry.projects: empty, so any key is accepted, but http.listen[0]"),
            ("[outputs.file]\nbuffer = { high_watermark = 2.0 }",
             "outputs.file.buffer.high_watermark: must be above 0 and at most 1, got 2.0"),
            ("[outputs.file]\nbuffer = { low_watermark = 0 }",
             "outputs.file.buffer.low_watermark: must be above 0 and at most 1, got 0"),
            ("[daemon]\nworkers = 'many'",
             "daemon.workers: expected an integer or one of 'auto', got 'many'"),
            ("[daemon]\nworkers = 0", "daemon.workers: must be at least 1 or 'auto', got 0"),
        ],
    )
    def test_each_problem_class(self, text: str, expected: str) -> None:
        """Each kind of mistake is reported at its key path with what is wrong."""
        found = problems(text)
        assert any(line.startswith(expected) for line in found), found

    def test_refused_value_is_not_also_a_missing_argument(self) -> None:
        """A bad required value is one problem at its key, not also attrs' __init__ message."""
        found = problems("[inputs.sentry]\nprojects = [{id = 'abc', keys = [42]}]")
        assert "inputs.sentry.projects[0].id: expected an integer, got 'abc'" in found
        assert "inputs.sentry.projects[0].keys[0]: expected a string, got 42" in found
        assert not [line for line in found if "__init__" in line], found

    def test_missing_required_value_named_by_key(self) -> None:
        """A required key left out is named at its own path."""
        found = problems("[inputs.sentry]\nprojects = [{keys = ['" + "k" * 32 + "']}]")
        assert "inputs.sentry.projects[0].id: a value is required" in found

    def test_every_problem_is_listed(self) -> None:
        """All problems come back at once, not just the first."""
        found = problems("bogus = 1\n[daemon]\nshutdown_timeout = 'x'\n[outputs.nosuch]\n")
        assert len(found) == 3

    def test_toml_syntax_error(self, tmp_path: Path) -> None:
        """A TOML syntax error names the file and the position."""
        path = tmp_path / "bad.toml"
        path.write_text("[daemon\n")
        with pytest.raises(ConfigError) as info:
            load_config(str(path))
        assert info.value.problems[0].startswith(f"{path}: TOML syntax error")


class TestSecrets:
    def test_env_and_file_secrets(self, tmp_path: Path) -> None:
        """Strings take ${VAR}; a secret key's *_file twin reads it from a file."""
        (tmp_path / "pw").write_text("hunter2\n")
        path = tmp_path / "obsd.toml"
        path.write_text(
            "[outputs.m]\ntype = 'metricsonly'\nurl = 'http://${HOST}:1'\npassword_file = 'pw'\n"
        )
        config = load_config(str(path), env={"HOST": "10.0.0.1"})
        out = config.outputs["m"]
        assert out.url == "http://10.0.0.1:1"  # type: ignore[attr-defined]
        assert out.password == "hunter2"  # type: ignore[attr-defined]

    def test_secret_never_printed(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """check-config shows *** for secrets, in the summary and in problems."""
        path = tmp_path / "obsd.toml"
        path.write_text("[outputs.m]\ntype = 'metricsonly'\npassword = 'hunter2'\n")
        assert main(["check-config", str(path)]) == 0
        out = capsys.readouterr().out
        assert "hunter2" not in out and "password=***" in out
        path.write_text("[outputs.m]\ntype = 'metricsonly'\npassword = 12345\n")
        assert main(["check-config", str(path)]) == 1
        err = capsys.readouterr().err
        assert "12345" not in err and "outputs.m.password: expected a string, got ***" in err


class TestDefault:
    def test_default_is_loopback_only(self) -> None:
        """The embedded default listens on 127.0.0.1 only and checks clean."""
        config = load_default()
        assert config.http_listeners() and all(l.is_loopback for l in config.http_listeners())
        for cfg in config.inputs.values():
            for description in getattr(cfg, "listen", []):
                assert "interface=127.0.0.1" in description
        assert "console (console)" in summary(config)

    def test_check_config_summary(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """check-config exits 0 and lists listeners, outputs and routes."""
        path = tmp_path / "obsd.toml"
        path.write_text(
            "[http]\nlisten = ['tcp:9100:interface=127.0.0.1']\n[outputs.file]\n"
            "[[routes]]\nmatch = { kind = ['log', 'error'], level = 'warning' }\noutputs = ['file']\n"
        )
        assert main(["check-config", str(path)]) == 0
        out = capsys.readouterr().out
        assert "http: tcp:9100:interface=127.0.0.1" in out
        assert "file (file)" in out
        assert "[0] kind=['log', 'error'] level=warning -> file" in out

    @pytest.mark.parametrize(
        "example", sorted((Path(__file__).parents[2] / "examples").glob("*.toml")),
        ids=lambda p: p.name,
    )
    def test_examples_config_checks_clean(self, example: Path) -> None:
        """Every file in examples/ (obsd.toml is the complete reference) is a valid config."""
        load_config(str(example), env={"OBSD_ES_PASSWORD": "x"})
