"""Fast JSON reading returns exactly what ``json.loads`` returns, on the inputs that differ."""

from __future__ import annotations

import json
import math

import pytest

from obsd.codecs.jsonread import loads

SAME = [
    '{"event": "user.login", "user": "guido", "attempt": 3, "ok": true, "x": null}',
    '{"id": 1180591620717411303424}',  # 2**70: orjson would make it a float
    '{"n": -9223372036854775809, "m": 18446744073709551615}',
    '{"s": "\\ud800 lone surrogate"}',  # orjson refuses it
    '{"big": 1e400, "neg": -1e400}',  # Python's json: inf
    '{"a": [1, 2.5, "\\u00e9"], "b": {"c": {}}, "a": "last wins"}',
    '{"pi": 3.141592653589793, "tiny": 5e-324, "long_fraction": 0.12345678901234567890}',
]


class TestSameAsTheStandardLibrary:
    @pytest.mark.parametrize("text", SAME)
    def test_text_and_bytes(self, text: str) -> None:
        for data in (text, text.encode("utf-8", "surrogatepass")):
            assert repr(loads(data)) == repr(json.loads(data))

    def test_nan_and_infinity_as_python_writes_them(self) -> None:
        found = loads('{"a": NaN, "b": Infinity, "c": -Infinity}')
        assert math.isnan(found["a"]) and found["b"] == math.inf and found["c"] == -math.inf

    def test_utf16_bytes_are_read_as_the_standard_library_reads_them(self) -> None:
        data = '{"é": 1}'.encode("utf-16")
        assert loads(data) == json.loads(data) == {"é": 1}

    @pytest.mark.parametrize("text", ["", "{", '{"a": }', "[1,]", '{"a": 1} x'])
    def test_malformed_raises_the_standard_librarys_error(self, text: str) -> None:
        with pytest.raises(json.JSONDecodeError):
            loads(text)
