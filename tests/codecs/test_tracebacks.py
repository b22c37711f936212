"""Python tracebacks in log events, read into Sentry's exception interface."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from structlog.processors import dict_tracebacks, format_exc_info

from obsd.codecs.tracebacks import (
    exception_values,
    module_for,
    parse_dict_tracebacks,
    parse_traceback_text,
)


def _inner() -> None:
    raise KeyError("missing")


def _outer() -> None:
    try:
        _inner()
    except KeyError as exc:
        raise ValueError("bad\nthing") from exc


def _rendered(processor: Any) -> Any:
    try:
        _outer()
    except ValueError:
        return processor(None, "error", {"event": "x", "exc_info": sys.exc_info()})["exception"]
    raise AssertionError("unreachable")


TEXT_311 = """Traceback (most recent call last):
  File "/srv/app/handlers.py", line 12, in handle
    result = compute(payload["n"])
             ^^^^^^^^^^^^^^^^^^^^^^
  File "/usr/lib/python3/dist-packages/lib/calc.py", line 3, in compute
    return 1 / n
           ~~^~~
ZeroDivisionError: division by zero
"""

DURING = """Traceback (most recent call last):
  File "a.py", line 1, in f
    g()
OSError: [Errno 2] No such file

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "a.py", line 5, in main
    f()
myapp.errors.LoadError
"""


class TestText:
    def test_format_exc_info_chain(self) -> None:
        """structlog's format_exc_info text gives the cause first, then the raised one."""
        values = parse_traceback_text(_rendered(format_exc_info))
        assert values is not None
        assert [(v["type"], v["value"]) for v in values] == [
            ("KeyError", "'missing'"),
            ("ValueError", "bad\nthing"),
        ]
        inner_frames = values[0]["stacktrace"]["frames"]
        assert [f["function"] for f in inner_frames] == ["_outer", "_inner"]
        assert inner_frames[-1]["context_line"] == 'raise KeyError("missing")'
        assert inner_frames[-1]["filename"] == __file__
        assert inner_frames[-1]["module"] == "test_tracebacks"

    def test_markers_and_packages(self) -> None:
        """Python 3.11's ^^^ markers are skipped; site/dist-packages give dotted modules."""
        values = parse_traceback_text(TEXT_311)
        assert values is not None
        (value,) = values
        assert (value["type"], value["value"]) == ("ZeroDivisionError", "division by zero")
        frames = value["stacktrace"]["frames"]
        assert [(f["lineno"], f["context_line"]) for f in frames] == [
            (12, 'result = compute(payload["n"])'),
            (3, "return 1 / n"),
        ]
        assert frames[1]["module"] == "lib.calc"
        assert frames[1]["in_app"] is False
        assert frames[0]["in_app"] is True

    def test_during_handling_and_dotted_type(self) -> None:
        """A dotted type without a value gives module and type; both blocks are kept."""
        values = parse_traceback_text(DURING)
        assert values is not None
        assert values[0]["type"] == "OSError"
        assert values[0]["value"] == "[Errno 2] No such file"
        assert values[1] == {
            "type": "LoadError",
            "value": "",
            "module": "myapp.errors",
            "stacktrace": {"frames": [values[1]["stacktrace"]["frames"][0]]},
        }

    @pytest.mark.parametrize("text", ["", "just a message", "Error: nothing\n  at x"])
    def test_not_a_traceback(self, text: str) -> None:
        """Text without a traceback header gives None."""
        assert parse_traceback_text(text) is None


class TestDictTracebacks:
    def test_structlog_dicts(self) -> None:
        """dict_tracebacks' list (raised first) is reversed into Sentry's order (cause first)."""
        values = parse_dict_tracebacks(_rendered(dict_tracebacks))
        assert values is not None
        assert [(v["type"], v["value"]) for v in values] == [
            ("KeyError", "'missing'"),
            ("ValueError", "bad\nthing"),
        ]
        frames = values[0]["stacktrace"]["frames"]
        assert [f["function"] for f in frames] == ["_outer", "_inner"]
        assert all(f["filename"] == __file__ for f in frames)
        assert all(isinstance(f["lineno"], int) for f in frames)

    @pytest.mark.parametrize("value", [None, "x", [1, 2], [{"exc_value": "no type"}]])
    def test_not_a_stack_list(self, value: Any) -> None:
        """Anything but a list of stack dicts gives None."""
        assert parse_dict_tracebacks(value) is None


class TestExceptionValues:
    @pytest.mark.parametrize("key", ["exception", "exc_info", "exc_text"])
    def test_keys(self, key: str) -> None:
        """A traceback is found under exception, exc_info or exc_text."""
        values = exception_values({key: TEXT_311})
        assert values is not None
        assert values[0]["type"] == "ZeroDivisionError"

    def test_none(self) -> None:
        """An event without a traceback gives None."""
        assert exception_values({"event": "x", "exc_info": True}) is None


class TestModuleFor:
    @pytest.mark.parametrize(
        ("filename", "module"),
        [
            ("/srv/app/handlers.py", "handlers"),
            ("/v/lib/python3.11/site-packages/twisted/web/client.py", "twisted.web.client"),
            ("/v/lib/python3.11/site-packages/treq/__init__.py", "treq"),
            ("<string>", None),
            ("", None),
        ],
    )
    def test_guess(self, filename: str, module: str | None) -> None:
        """Modules are dotted below site-packages, else the file's stem."""
        assert module_for(filename) == module
