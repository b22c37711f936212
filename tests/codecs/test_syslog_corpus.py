"""The syslog corpus: every line's obsd reading, and where obsd and rsyslog disagree.

``tests/data/syslog/cases.jsonl`` holds the 140 lines gathered from go-syslog,
rsyslog, syslog-ng and Vector (see its README), ``obsd-cases.jsonl`` obsd's own;
both carry rsyslog 8.2302's reading of each line (``rsyslog_parsed``) and obsd's
expected fields (``obsd_expected``).  ``docs/syslog-vs-rsyslog.rst`` lists every
line where the two read differently; a test recomputes that set.

Run ``python -m tests.codecs.test_syslog_corpus table`` to print the table rows
and ``... expected`` to rewrite ``obsd_expected`` (review the diff!).
"""

from __future__ import annotations

import base64
import csv
import datetime
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from obsd.codecs.syslog import FACILITY_NAMES, SEVERITY_NAMES, parse_syslog

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "syslog"
CORPUS_FILES = ("cases.jsonl", "obsd-cases.jsonl")
TABLE = ROOT / "docs" / "syslog-vs-rsyslog.rst"
#: When the oracle ran (rsyslog inferred year-less stamps' year from it), in UTC.
RECEIVED_AT = datetime.datetime(2026, 11, 24, 1, 30, tzinfo=datetime.UTC).timestamp()
#: The oracle ran rsyslog with TZ=UTC.
TIMEZONE = datetime.UTC
COMPARED = (
    "facility",
    "severity",
    "timestamp",
    "host",
    "appname",
    "procid",
    "msgid",
    "sd",
    "msg",
)


def load_cases() -> list[dict[str, Any]]:
    """Every corpus case, upstream ones first."""
    cases: list[dict[str, Any]] = []
    for name in CORPUS_FILES:
        with (DATA / name).open(encoding="utf-8") as lines:
            cases.extend(json.loads(line) for line in lines if line.strip())
    return cases


def read(case: dict[str, Any]) -> dict[str, Any]:
    """obsd's reading of one case."""
    return parse_syslog(
        base64.b64decode(case["raw_base64"]), received_at=RECEIVED_AT, timezone=TIMEZONE
    )


def _iso(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ"
    )


def expected_view(fields: dict[str, Any]) -> dict[str, Any]:
    """obsd's fields as stored in the corpus: the timestamp as ISO text or ``received_at``."""
    view = dict(fields)
    stamp = view["timestamp"]
    view["timestamp"] = "received_at" if stamp == RECEIVED_AT else _iso(stamp)
    return view


# --- the comparison with rsyslog -------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BACKSLASH_X = re.compile(r"\\x[0-9a-f]{2}")


def _rsyslog_escape(text: str) -> str:
    """Control characters the way rsyslog shows them (``#011`` for a tab)."""
    return _CONTROL.sub(lambda m: f"#{ord(m.group()):03o}", text)


def _rsyslog_epoch(stamp: str | None) -> float | str | None:
    if stamp is None:
        return None
    try:
        return datetime.datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return stamp  # rsyslog wrote something that is not a time


def _lower_sd(sd: dict[str, dict[str, str]] | None) -> dict[str, dict[str, str]] | None:
    if not sd:
        return None
    return {
        k.lower(): {p.lower(): v for p, v in params.items()} for k, params in sd.items()
    }


def rsyslog_view(case: dict[str, Any]) -> dict[str, Any] | None:
    """rsyslog's reading, with its conventions (fromhost as hostname, ``-``) undone."""
    r = case["rsyslog_parsed"]
    if not isinstance(r, dict):
        return None
    pri_valid = isinstance(r["pri"], int)
    msg = r["msg"]
    if r["protocol_version"] == "0" and msg[:1] == " ":
        msg = msg[1:]  # rsyslog keeps the space after "tag:"
    msg = _BACKSLASH_X.sub("\ufffd", msg)  # the oracle shows invalid UTF-8 as \xNN
    if msg[:1] == "\ufeff":
        msg = msg[1:]  # obsd drops the BOM that marks MSG as UTF-8 (RFC 5424 6.4)

    def field(value: str) -> str | None:
        return None if value in ("", "-") else value

    return {
        "facility": r["facility"] if pri_valid else None,
        "severity": r["severity"] if pri_valid else None,
        "timestamp": None
        if r["timestamp_source"] == "receiver"
        else _rsyslog_epoch(r["timestamp"]),
        "host": None if r["hostname"] in ("127.0.0.1", "-", "") else r["hostname"],
        "appname": field(r["app_name"]),
        "procid": field(r["procid"]),
        "msgid": field(r["msgid"]),
        "sd": _lower_sd(r.get("parsed", {}).get("rfc5424-sd")),
        "msg": msg,
    }


def obsd_view(fields: dict[str, Any]) -> dict[str, Any]:
    """obsd's reading in the same terms as ``rsyslog_view``."""
    return {
        "facility": FACILITY_NAMES.index(fields["facility"]),
        "severity": SEVERITY_NAMES.index(fields["severity"]),
        "timestamp": None
        if fields["timestamp"] == RECEIVED_AT
        else fields["timestamp"],
        "host": fields.get("host"),
        "appname": fields.get("appname"),
        "procid": fields.get("procid"),
        "msgid": fields.get("msgid"),
        "sd": _lower_sd(fields.get("sd")),
        "msg": _rsyslog_escape(fields["event"]),
    }


def _same(field: str, theirs: Any, ours: Any) -> bool:
    if field == "timestamp" and isinstance(theirs, float) and isinstance(ours, float):
        return abs(theirs - ours) < 1e-6
    return bool(theirs == ours)


def _show(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, float):
        return _iso(value).replace(".000000Z", "Z")
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def disagreements() -> list[tuple[str, str, str, str]]:
    """(case id, fields, rsyslog's values, obsd's values) for every case read differently."""
    rows = []
    for case in load_cases():
        ours = obsd_view(read(case))
        theirs = rsyslog_view(case)
        if theirs is None:
            rows.append((str(case["id"]), "output", "(no message)", _show(ours["msg"])))
            continue
        fields = [f for f in COMPARED if not _same(f, theirs[f], ours[f])]
        if fields:
            rows.append(
                (
                    str(case["id"]),
                    " ".join(fields),
                    "; ".join(_show(theirs[f]) for f in fields),
                    "; ".join(_show(ours[f]) for f in fields),
                )
            )
    return rows


def documented() -> list[tuple[str, str, str, str, str]]:
    """The rows of the csv-table in docs/syslog-vs-rsyslog.rst."""
    lines = TABLE.read_text(encoding="utf-8").splitlines()
    start = next(
        i
        for i, line in enumerate(lines)
        if line.startswith(".. csv-table:: Disagreements")
    )
    body = []
    for line in lines[start + 1 :]:
        if line.strip() and not line.startswith("   "):
            break
        if line.strip() and not line.lstrip().startswith(":"):
            body.append(line.strip())
    rows = csv.reader(body, skipinitialspace=True)
    # cells are reStructuredText: a literal ``*`` is written ``\\*``
    return [tuple(cell.replace("\\*", "*") for cell in row) for row in rows]  # type: ignore[misc]


def reasons() -> set[str]:
    """The reason keys the doc's legend defines (``:R-name:`` lines)."""
    text = TABLE.read_text(encoding="utf-8")
    return set(re.findall(r"^``(R-[a-z0-9-]+)``$", text, re.MULTILINE))


CASES = load_cases()


class TestCorpus:
    @pytest.mark.parametrize("case", CASES, ids=[str(c["id"]) for c in CASES])
    def test_expected_fields(self, case: dict[str, Any]) -> None:
        """obsd reads each corpus line exactly as recorded in ``obsd_expected``."""
        assert expected_view(read(case)) == case["obsd_expected"]

    def test_every_case_has_a_source(self) -> None:
        """Each line says where it came from, as the corpus README requires."""
        assert all(case["source"] for case in CASES)
        assert len({str(c["id"]) for c in CASES}) == len(CASES)


class TestDisagreementTable:
    def test_table_matches(self) -> None:
        """The documented table is exactly the set of lines where obsd and rsyslog differ."""
        assert [row[:4] for row in documented()] == disagreements()

    def test_every_row_has_a_known_reason(self) -> None:
        """Each row's reasons are defined in the legend below the table."""
        known = reasons()
        for row in documented():
            assert len(row) == 5
            assert set(row[4].split()) <= known, row

    def test_rsyslog_faults_are_in_the_table(self) -> None:
        """The rsyslog faults the corpus README names show up as disagreements."""
        ids = {row[0]: row for row in documented()}
        assert "timestamp" in ids["obsd-1"][1]  # 9-digit fraction
        assert "R-pri" in ids["3"][4].split()  # PRI above 191
        assert "R-version" in ids["21"][4]  # VERSION other than 1
        assert "R-8k" in ids["obsd-7"][4]  # 8 KiB cut


def _write_expected() -> None:
    for name in CORPUS_FILES:
        path = DATA / name
        cases = [
            json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
        ]
        with path.open("w", encoding="utf-8") as out:
            for case in cases:
                case["obsd_expected"] = expected_view(read(case))
                out.write(json.dumps(case, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["expected"]:
        _write_expected()
    elif sys.argv[1:] == ["table"]:
        table = {row[0]: row[4] for row in documented()} if TABLE.exists() else {}
        writer = csv.writer(sys.stdout, lineterminator="\n")
        for row in disagreements():
            sys.stdout.write("   ")
            writer.writerow([c.replace("*", "\\*") for c in [*row, table.get(row[0], "R-?")]])
    else:
        sys.exit("usage: python -m tests.codecs.test_syslog_corpus expected|table")
