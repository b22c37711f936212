"""The Prometheus scrape output: statsd_exporter's semantics on a Clock."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest

from obsd.codecs import prometheus_text as text
from obsd.config.loader import parse_config
from obsd.config.model import ObsdConfig
from obsd.config.schema import Problems
from obsd.net.web import HttpRoot
from obsd.outputs.prometheus import (
    Config,
    MappingConfig,
    PrometheusOutput,
    check_config,
)
from obsd.outputs.promseries import quantile_of
from obsd.testing import make_output_context


def make(clock: Clock, tmp_path: Path, **settings: Any) -> tuple[PrometheusOutput, HttpRoot]:
    root = HttpRoot()
    context = make_output_context(clock, tmp_path, http=root)
    out = PrometheusOutput("prom", Config(type="prometheus", **settings), context)
    out.startService()
    return out, root


def statsd(name: str, mtype: str, stat: str, value: float, **tags: str) -> dict[str, Any]:
    return {"kind": "metric", "event": f"x.{name}.{stat}", "value": value, "timestamp": 1.0,
            "metric": name, "metric_type": mtype, "stat": stat, "tags": tags}


def scrape(root: HttpRoot) -> tuple[str, list[bytes]]:
    """GET the resource mounted at /metrics/data, as the site would reach it."""
    child: Any = root
    for segment in (b"metrics", b"data"):
        child = child.children[segment]
    request = DummyRequest([])
    body = child.render_GET(request)
    return body.decode(), request.responseHeaders.getRawHeaders(b"content-type") or []


class TestSemantics:
    def test_counter_is_cumulative_total(self, tmp_path: Path) -> None:
        """Each flush's count adds up; the per-second rate is not a series."""
        clock = Clock()
        out, root = make(clock, tmp_path)
        for count in (5, 7):
            out.accept(statsd("app.requests", "counter", "count", count, env="prod"))
            out.accept(statsd("app.requests", "counter", "rate", count / 10, env="prod"))
        body, ctype = scrape(root)
        assert ctype == [b"text/plain; version=0.0.4; charset=utf-8"]
        assert body == (
            "# HELP app_requests_total obsd counter\n"
            "# TYPE app_requests_total counter\n"
            'app_requests_total{env="prod"} 12.0\n'
        )

    def test_gauge_and_set(self, tmp_path: Path) -> None:
        out, root = make(Clock(), tmp_path)
        out.accept(statsd("temp", "gauge", "value", 40))
        out.accept(statsd("temp", "gauge", "value", 42))
        out.accept(statsd("users", "set", "count", 3))
        body, _ = scrape(root)
        assert "# TYPE temp gauge\ntemp 42.0\n" in body
        assert "# TYPE users gauge\nusers 3.0\n" in body

    def test_timer_is_a_summary_in_seconds(self, tmp_path: Path) -> None:
        """Quantiles of the last flush; _sum and _count cumulative, as statsd_exporter."""
        out, root = make(Clock(), tmp_path)
        for count, total, median, p90 in ((4, 100.0, 25.0, 40.0), (2, 50.0, 25.0, 30.0)):
            for stat, value in (("count", count), ("sum", total), ("median", median),
                                ("upper_90", p90), ("mean", total / count)):
                out.accept(statsd("db.query", "timer", stat, value))
        body, _ = scrape(root)
        assert body == (
            "# HELP db_query StatsD timer, seconds\n"
            "# TYPE db_query summary\n"
            'db_query{quantile="0.5"} 0.025\n'
            'db_query{quantile="0.9"} 0.03\n'
            "db_query_sum 0.15\n"
            "db_query_count 6.0\n"
        )

    def test_other_metrics_are_gauges(self, tmp_path: Path) -> None:
        out, root = make(Clock(), tmp_path)
        out.accept({"kind": "metric", "event": "obsd.events.log", "value": 9, "tags": {}})
        body, _ = scrape(root)
        assert "# TYPE obsd_events_log gauge\nobsd_events_log 9.0\n" in body

    def test_stale_series_dropped(self, tmp_path: Path) -> None:
        clock = Clock()
        out, root = make(clock, tmp_path, stale_after=60.0)
        out.accept(statsd("old", "gauge", "value", 1))
        clock.advance(30)
        out.accept(statsd("new", "gauge", "value", 2))
        clock.advance(31)
        body, _ = scrape(root)
        assert "old" not in body
        assert "new 2.0" in body
        assert out.context.telemetry.value("obsd.output.prom.stale_dropped") == 1

    def test_not_a_number_dead_lettered(self, tmp_path: Path) -> None:
        out, _ = make(Clock(), tmp_path)
        out.accept(statsd("x", "gauge", "value", "12"))  # type: ignore[arg-type]
        assert out.context.telemetry.value("obsd.output.prom.encode_errors") == 1
        assert "value is not a number" in (tmp_path / "dead-letter.jsonl").read_text()


class TestNames:
    @pytest.mark.parametrize(
        ("dotted", "expected"),
        [("a.b-c", "a_b_c"), ("9lives", "_9lives"), ("ok:name", "ok:name")],
    )
    def test_escaping(self, dotted: str, expected: str) -> None:
        assert text.map_name(dotted, [], [])[0] == expected

    def test_glob_mapping(self, tmp_path: Path) -> None:
        """statsd_exporter's glob: one part per star, $n in name and labels."""
        mapping = MappingConfig(match="myapp.*.requests", name="myapp_requests",
                                labels={"host": "$1"})
        out, root = make(Clock(), tmp_path, mappings=[mapping])
        out.accept(statsd("myapp.web1.requests", "counter", "count", 3, code="200"))
        body, _ = scrape(root)
        assert 'myapp_requests_total{code="200",host="web1"} 3.0' in body

    def test_label_values_escaped(self) -> None:
        assert text.escape_label_value('a"b\\c\nd') == 'a\\"b\\\\c\\nd'

    @pytest.mark.parametrize(
        ("stat", "quantile"),
        [("median", "0.5"), ("upper_90", "0.9"), ("upper_99_9", "0.999"), ("mean", None),
         ("upper", None)],
    )
    def test_quantiles(self, stat: str, quantile: str | None) -> None:
        assert quantile_of(stat) == quantile


class TestConfig:
    def test_from_toml(self) -> None:
        config = parse_config(tomllib.loads(
            '[outputs.prometheus]\npath = "/scrape"\n'
            '[[outputs.prometheus.mappings]]\nmatch = "a.*"\nname = "a"\n'
            'labels = { part = "$1" }\n'
        ))
        out = config.outputs["prometheus"]
        assert isinstance(out, Config)
        assert out.mappings[0].labels == {"part": "$1"}

    @pytest.mark.parametrize("path", ["/metrics", "status", "/"])
    def test_path_problems(self, path: str) -> None:
        problems = Problems()
        check_config("prom", Config(type="prometheus", path=path), ObsdConfig(), problems)
        assert problems.lines and problems.lines[0].startswith("outputs.prom.path:")


class TestMount:
    def test_scrape_below_obsd_metrics(self, tmp_path: Path) -> None:
        """The status page mounts /metrics after outputs; /metrics/data still reaches the scrape."""
        from twisted.web.resource import getChildForRequest

        from obsd.net.web import PrometheusResource
        from obsd.ops.telemetry import Telemetry
        from obsd.outputs.prometheus import ScrapeResource

        _, root = make(Clock(), tmp_path)
        root.mount(("metrics",), PrometheusResource(Telemetry()))
        for path, expected in (([b"metrics", b"data"], ScrapeResource),
                               ([b"metrics"], PrometheusResource)):
            request = DummyRequest(path)
            assert isinstance(getChildForRequest(root, request), expected)


class TestWorkers:
    """``[daemon] workers``: a scrape reaching one worker adds the others' series."""

    def test_counters_add_up_gauges_and_quantiles_are_the_newest(self, tmp_path: Path) -> None:
        from twisted.internet import defer

        clock = Clock()
        mine, _ = make(clock, tmp_path / "a")
        theirs, _ = make(clock, tmp_path / "b")
        mine.accept(statsd("app.requests", "counter", "count", 5))
        mine.accept(statsd("temp", "gauge", "value", 40))
        clock.advance(1)
        theirs.accept(statsd("app.requests", "counter", "count", 7))
        theirs.accept(statsd("temp", "gauge", "value", 42))
        theirs.accept(statsd("only.there", "gauge", "value", 1))

        other = DummyRequest([])
        other.args = {b"local": [b"json"]}
        their_json = theirs.scrape.render_GET(other)

        class Peers:
            def gather(self, path: str) -> Any:
                assert path == "/metrics/data?local=json"
                import json

                return defer.succeed([(1, json.loads(their_json))])

        mine.scrape.join_workers(Peers())
        request = DummyRequest([])
        mine.scrape.render_GET(request)
        body = b"".join(request.written).decode()
        assert "app_requests_total 12.0\n" in body
        assert "temp 42.0\n" in body
        assert "only_there 1.0\n" in body
        local = DummyRequest([])  # ?local is this worker's own
        local.args = {b"local": [b"1"]}
        alone = mine.scrape.render_GET(local).decode()
        assert "app_requests_total 5.0\n" in alone
        assert "only_there" not in alone
