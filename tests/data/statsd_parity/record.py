#!/usr/bin/env python3
"""Record what Etsy statsd 0.9.0 sends to Graphite for each parity case, into cases.json.

Run from anywhere: ``python tests/data/statsd_parity/record.py``.  It installs
the pinned npm package into ``~/.cache/obsd/etsy-statsd`` (not the repository;
``--statsd-dir`` to reuse another install), then, for each case, starts Etsy
statsd on 127.0.0.1 with a config whose graphite backend points at a small TCP
capture server in this script.  It waits for one empty flush (to learn the
flush phase and so that ``timestamp_lag`` exists, as in a long-running
statsd), then for each recorded interval sends the case's datagrams over UDP
and captures the next flush.  Graphite lines are stored without timestamps.

Cases are written in obsd's config names (``percentiles``,
``legacy_namespace`` ...) and translated to Etsy's here.  Where obsd differs
on purpose, the case says why (``obsd_differs``) and gives obsd's expected
lines (``obsd``); docs/statsd-differences.rst lists the same cases.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "cases.json"
STATSD_VERSION = "0.9.0"
DEFAULT_DIR = Path.home() / ".cache" / "obsd" / "etsy-statsd"
FLUSH_SECONDS = 2
TIMEOUT = 4 * FLUSH_SECONDS + 5


# -- the cases -------------------------------------------------------------
# Each: name, config (obsd names), flushes (a list of intervals, each a list
# of datagrams), and for deliberate differences obsd_differs + obsd (user
# lines per interval; internal lines are added by ``_internal``).


def _timer_values(name: str, values: list[float], per_packet: int = 100) -> list[str]:
    lines = [f"{name}:{value:g}|ms" for value in values]
    return [
        "\n".join(lines[i : i + per_packet]) for i in range(0, len(lines), per_packet)
    ]


TAGS = {"graphite_tags": True}

CASES: list[dict[str, Any]] = [
    # counters
    {"name": "counter_simple", "flushes": [["gorets:1|c"]]},
    {"name": "counter_sum", "flushes": [["gorets:1|c", "gorets:2|c\ngorets:3|c"]]},
    {
        "name": "counter_sample_rate",
        "flushes": [["gorets:1|c|@0.1", "gorets:1|c|@0.5"]],
    },
    {"name": "counter_sample_rate_above_one", "flushes": [["c:4|c|@2"]]},
    {
        "name": "counter_negative_and_float",
        "flushes": [["c:-3|c", "c:1.5|c", "c:0.25|c"]],
    },
    {"name": "counter_exponent_and_plus", "flushes": [["c:1e3|c", "d:+2|c"]]},
    {"name": "counter_idle_is_zero", "flushes": [["c:1|c"], []]},
    {
        "name": "flush_counts_off",
        "config": {"flush_counts": False},
        "flushes": [["c:5|c"]],
    },
    # timers
    {"name": "timer_single", "flushes": [["glork:320|ms"]]},
    {"name": "timer_ten_values", "flushes": [_timer_values("t", list(range(1, 11)))]},
    {
        "name": "timer_sample_rate",
        "flushes": [["glork:320|ms|@0.1", "glork:100|ms|@0.5"]],
    },
    {"name": "timer_fractional_values", "flushes": [["t:0.5|ms\nt:1.25|ms\nt:3|ms"]]},
    {"name": "timer_zero", "flushes": [["t:0|ms"]]},
    {"name": "timer_negative_is_bad", "flushes": [["t:-5|ms", "t:5|ms"]]},
    {"name": "timer_idle_counts_zero", "flushes": [["t:5|ms"], []]},
    {
        "name": "percentiles_several",
        "config": {"percentiles": [50, 90, 95, 99]},
        "flushes": [_timer_values("t", [v * 1.5 for v in range(20, 0, -1)])],
    },
    {
        "name": "percentile_99_9",
        "config": {"percentiles": [99.9]},
        "flushes": [_timer_values("t", list(range(1, 1001)))],
    },
    {
        "name": "percentile_negative",
        "config": {"percentiles": [-10, -50]},
        "flushes": [_timer_values("t", list(range(1, 21)))],
    },
    {
        "name": "percentile_rounds_to_none",
        "config": {"percentiles": [10]},
        "flushes": [_timer_values("t", [1, 2, 3])],
    },
    {
        "name": "percentile_rounds_half_up",
        "config": {"percentiles": [50]},
        "flushes": [_timer_values("t", [5, 1, 4, 2, 3])],
    },
    {
        "name": "percentile_single_value",
        "config": {"percentiles": [90, -90]},
        "flushes": [["t:7|ms"]],
    },
    {
        "name": "calculated_timer_metrics",
        "config": {
            "percentiles": [90],
            "calculated_timer_metrics": ["mean", "count", "upper_percent"],
        },
        "flushes": [_timer_values("t", list(range(1, 11)))],
    },
    {
        "name": "histogram_bins",
        "config": {
            "histogram": [
                {"metric": "foo", "bins": [10, 100, "inf"]},
                {"metric": "", "bins": [0.5, 2]},
            ]
        },
        "flushes": [
            ["foo.a:5|ms\nfoo.a:50|ms\nfoo.a:500|ms\nbar:0.1|ms\nbar:1|ms\nbar:9|ms"]
        ],
    },
    # gauges
    {"name": "gauge_simple", "flushes": [["gaugor:333|g"]]},
    {"name": "gauge_last_wins", "flushes": [["g:1|g\ng:2|g", "g:3|g"]]},
    {"name": "gauge_deltas", "flushes": [["g:10|g", "g:+5|g", "g:-3|g"]]},
    {"name": "gauge_delta_without_value", "flushes": [["g:-5|g", "h:+2.5|g"]]},
    {"name": "gauge_persists", "flushes": [["g:7|g"], []]},
    {"name": "gauge_delta_across_flushes", "flushes": [["g:7|g"], ["g:+1|g"]]},
    {"name": "gauge_sample_rate_ignored", "flushes": [["g:5|g|@0.5"]]},
    # sets
    {
        "name": "set_numbers",
        "flushes": [["uniques:765|s", "uniques:765|s", "uniques:766|s"]],
    },
    {"name": "set_strings", "flushes": [["users:alice|s\nusers:bob|s\nusers:alice|s"]]},
    {"name": "set_idle_counts_zero", "flushes": [["u:1|s"], []]},
    # lines and packets
    {"name": "several_values_per_line", "flushes": [["k:1|c:2|c", "t:1|ms:2|ms:3|ms"]]},
    {"name": "bad_value_beside_good_ones", "flushes": [["k:1|c:x|c:2|c"]]},
    {
        "name": "many_metrics_per_packet",
        "flushes": [["\n".join(f"m.{i}:{i}|c" for i in range(20))]],
    },
    {"name": "empty_lines", "flushes": [["a:1|c\n\n\nb:1|c\n"]]},
    {"name": "crlf_line_ends", "flushes": [["a:1|c\r\nb:2|ms\r\n"]]},
    {"name": "name_sanitised", "flushes": [["my metric/name!:1|c", "a  b:1|c"]]},
    {
        "name": "malformed_lines",
        "flushes": [
            [
                "nocolon",
                "foo:|c",
                "foo:1",
                "foo:abc|c",
                "foo:1|c|@x",
                "foo:1|c|@-1",
                "g:abc|g",
                "good:1|c",
            ]
        ],
    },
    # tags
    {
        "name": "tags_counter",
        "config": TAGS,
        "flushes": [["page.views:1|c|#env:prod,region:eu"]],
    },
    {
        "name": "tags_timer_gauge_set",
        "config": TAGS,
        "flushes": [["lat:10|ms|#env:prod", "temp:20|g|#room:a", "u:x|s|#env:prod"]],
    },
    {
        "name": "tags_with_sample_rate",
        "config": TAGS,
        "flushes": [["c:1|c|@0.5|#env:prod"]],
    },
    {
        "name": "tagged_and_untagged_are_distinct",
        "config": TAGS,
        "flushes": [["c:1|c", "c:2|c|#env:prod"]],
    },
    # namespaces and prefixes
    {
        "name": "legacy_namespace_off",
        "config": {"legacy_namespace": False},
        "flushes": [["c:1|c", "t:5|ms", "g:1|g", "s:a|s"]],
    },
    {
        "name": "legacy_namespace_off_prefixes",
        "config": {
            "legacy_namespace": False,
            "global_prefix": "app",
            "prefix_counter": "cnt",
            "prefix_timer": "tmr",
            "prefix_gauge": "gg",
            "prefix_set": "st",
            "prefix_stats": "mystatsd",
            "global_suffix": "host1",
        },
        "flushes": [["c:1|c", "t:5|ms", "g:1|g", "s:a|s"]],
    },
    {
        "name": "legacy_namespace_off_empty_prefixes",
        "config": {
            "legacy_namespace": False,
            "global_prefix": "",
            "prefix_counter": "",
        },
        "flushes": [["c:1|c", "g:1|g"]],
    },
    {
        "name": "legacy_namespace_ignores_prefixes",
        "config": {
            "global_prefix": "app",
            "prefix_counter": "cnt",
            "prefix_stats": "mystats",
            "global_suffix": "h",
        },
        "flushes": [["c:1|c", "t:5|ms"]],
    },
    # deleting idle stats
    {
        "name": "delete_idle_stats",
        "config": {"delete_idle_stats": True},
        "flushes": [["c:1|c\nt:1|ms\ng:1|g\ns:a|s"], []],
    },
    {
        "name": "delete_counters",
        "config": {"delete_counters": True},
        "flushes": [["c:1|c\nt:1|ms\ng:1|g\ns:a|s"], []],
    },
    {
        "name": "delete_timers",
        "config": {"delete_timers": True},
        "flushes": [["c:1|c\nt:1|ms\ng:1|g\ns:a|s"], []],
    },
    {
        "name": "delete_gauges",
        "config": {"delete_gauges": True},
        "flushes": [["c:1|c\nt:1|ms\ng:1|g\ns:a|s"], []],
    },
    {
        "name": "delete_sets",
        "config": {"delete_sets": True},
        "flushes": [["c:1|c\nt:1|ms\ng:1|g\ns:a|s"], []],
    },
    {
        "name": "delete_idle_stats_but_keep_gauges",
        "config": {"delete_idle_stats": True, "delete_gauges": False},
        "flushes": [["c:1|c\ng:1|g"], []],
    },
    {
        "name": "gauges_max_ttl",
        "config": {"delete_gauges": True, "gauges_max_ttl": 2},
        "flushes": [["g:1|g"], [], []],
    },
    # where Etsy is wrong and obsd differs on purpose
    {
        "name": "crash_on_space_in_sample_rate",
        "flushes": [["x:1|c|@ 0.5", "good:1|c"]],
        "obsd_differs": "Etsy statsd dies (TypeError in its sample-rate regex); obsd reads the rate as 0.5",
        "obsd": [
            ["stats.x 1", "stats_counts.x 2", "stats.good 0.5", "stats_counts.good 1"]
        ],
        "obsd_internal": [{"packets": 2, "lines": 2, "stats": 2}],
    },
    {
        "name": "type_h_is_a_timer",
        "flushes": [["gunicorn.backlog:3|h", "gunicorn.backlog:5|h"]],
        "obsd_differs": "Etsy counts unknown types, h included, as counters; obsd reads h as a DogStatsD timer",
        "obsd": "timer:gunicorn.backlog:3,5",
    },
    {
        "name": "type_d_is_a_timer",
        "flushes": [["lat:3|d"]],
        "obsd_differs": "Etsy counts d as a counter; obsd reads it as a DogStatsD distribution (timer)",
        "obsd": "timer:lat:3",
    },
    {
        "name": "unknown_type_is_bad",
        "flushes": [["x:1|zz", "y:1|c"]],
        "obsd_differs": "Etsy counts any unknown type as a counter; obsd counts the line as bad",
        "obsd": [["stats.y 0.5", "stats_counts.y 1"]],
        "obsd_internal": [{"bad": 1, "packets": 2, "lines": 2, "stats": 1}],
    },
    {
        "name": "sample_rate_with_exponent",
        "flushes": [["c:1|c|@1e-1"]],
        "obsd_differs": "Etsy accepts @1e-1 but reads only its leading digits (rate 1); obsd reads 0.1",
        "obsd": [["stats.c 5", "stats_counts.c 10"]],
        "obsd_internal": [{"packets": 1, "lines": 1, "stats": 1}],
    },
    {
        "name": "sample_rate_zero",
        "flushes": [["c:1|c|@0", "d:1|c"]],
        "obsd_differs": "Etsy divides by the zero rate and sends Infinity; obsd counts the line as bad",
        "obsd": [["stats.d 0.5", "stats_counts.d 1"]],
        "obsd_internal": [{"bad": 1, "packets": 2, "lines": 2, "stats": 1}],
    },
    {
        "name": "hex_and_infinite_values",
        "flushes": [["c:0x10|c", "d:Infinity|c", "e:1|c"]],
        "obsd_differs": "Etsy takes JavaScript numbers (0x10 is 16, Infinity is sent); obsd takes finite decimals only",
        "obsd": [["stats.e 0.5", "stats_counts.e 1"]],
        "obsd_internal": [{"bad": 2, "packets": 3, "lines": 3, "stats": 1}],
    },
    {
        "name": "empty_name",
        "flushes": [[":1|c", "e:1|c"]],
        "obsd_differs": "Etsy aggregates a metric with an empty name (stats. and stats_counts.); obsd counts the line as bad",
        "obsd": [["stats.e 0.5", "stats_counts.e 1"]],
        "obsd_internal": [{"bad": 1, "packets": 2, "lines": 2, "stats": 1}],
    },
    {
        "name": "negative_percentile_covering_all",
        "config": {"percentiles": [-90]},
        "flushes": [["t:1|ms\nt:3|ms"]],
        "obsd_differs": "Etsy reads before the start of its cumulative sums and sends NaN for sum_top90, "
        "sum_squares_top90 and mean_top90; obsd sends the sums of all values",
        "obsd": "timer_pct:t:-90:1,3",
    },
    {
        "name": "fractional_percentile_with_calculated_metrics",
        "config": {
            "percentiles": [90, 99.9],
            "calculated_timer_metrics": ["mean_percent"],
        },
        "flushes": [_timer_values("t", list(range(1, 11)))],
        "obsd_differs": "Etsy's calculatedTimerMetrics filter does not recognise mean_99_9 and drops it; "
        "obsd keeps every configured percentile",
        "obsd": [["stats.timers.t.mean_90 5", "stats.timers.t.mean_99_9 5.5"]],
        "obsd_internal": [{"packets": 1, "lines": 10, "stats": 1}],
    },
    {
        "name": "tags_flag",
        "config": TAGS,
        "flushes": [["c:1|c|#flag,env:prod"]],
        "obsd_differs": "Etsy sends a bare tag as ;flag, which carbon refuses; obsd sends ;flag=true",
        "obsd": [
            ["stats.c;env=prod;flag=true 0.5", "stats_counts.c;env=prod;flag=true 1"]
        ],
        "obsd_internal": [{"packets": 1, "lines": 1, "stats": 1}],
    },
    {
        "name": "tags_order_is_one_series",
        "config": TAGS,
        "flushes": [["c:1|c|#b:2,a:1", "c:1|c|#a:1,b:2"]],
        "obsd_differs": "Etsy keeps two series that carbon stores as one (the second point overwrites "
        "the first); obsd sorts tags and sums them",
        "obsd": [["stats.c;a=1;b=2 1", "stats_counts.c;a=1;b=2 2"]],
        "obsd_internal": [{"packets": 2, "lines": 2, "stats": 1}],
    },
]


def _internal(
    bad: int = 0, packets: int = 0, lines: int = 0, stats: int = 0, legacy: bool = True
) -> list[str]:
    """obsd's own lines for a default-config interval (numStats counts the 3 counters and the lag gauge)."""
    assert legacy
    out = []
    for name, value in (
        ("bad_lines_seen", bad),
        ("packets_received", packets),
        ("metrics_received", lines),
    ):
        out += [
            f"stats.statsd.{name} {value / FLUSH_SECONDS:g}",
            f"stats_counts.statsd.{name} {value}",
        ]
    return [
        *out,
        "stats.gauges.statsd.timestamp_lag 0",
        f"statsd.numStats {stats + 4}",
        "stats.statsd.processing_time 0",
    ]


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def _timer_lines(name: str, values: list[float], pcts: list[float]) -> list[str]:
    """A timer's lines computed directly from the definitions, for obsd's expected output."""
    values = sorted(values)
    n = len(values)
    mean = sum(values) / n
    mid = n // 2
    out = []
    for pct in pcts:
        k = n if n == 1 else int(abs(pct) / 100 * n + 0.5)
        chosen = values[:k] if pct > 0 else values[n - k :]
        tag = f"{pct:g}".replace(".", "_").replace("-", "top")
        out += [
            f"stats.timers.{name}.count_{tag} {k}",
            f"stats.timers.{name}.mean_{tag} {_number(sum(chosen) / k)}",
            (
                f"stats.timers.{name}.{'upper' if pct > 0 else 'lower'}_{tag} "
                f"{_number(chosen[-1] if pct > 0 else chosen[0])}"
            ),
            f"stats.timers.{name}.sum_{tag} {_number(sum(chosen))}",
            f"stats.timers.{name}.sum_squares_{tag} {_number(sum(v * v for v in chosen))}",
        ]
    std = (sum((v - mean) ** 2 for v in values) / n) ** 0.5
    median = values[mid] if n % 2 else (values[mid - 1] + values[mid]) / 2
    for stat, value in (
        ("std", std),
        ("upper", values[-1]),
        ("lower", values[0]),
        ("count", n),
        ("count_ps", n / FLUSH_SECONDS),
        ("sum", sum(values)),
        ("sum_squares", sum(v * v for v in values)),
        ("mean", mean),
        ("median", median),
    ):
        out.append(f"stats.timers.{name}.{stat} {_number(value)}")
    return out


def _obsd_expected(case: dict[str, Any]) -> list[list[str]] | None:
    """Expand a case's ``obsd`` shorthand into full expected lines per interval."""
    spec = case.get("obsd")
    if spec is None:
        return None
    if isinstance(spec, str):
        kind, name, *rest = spec.split(":")
        if kind == "timer":
            values = [float(v) for v in rest[0].split(",")]
            user = _timer_lines(name, values, [90])
        else:
            pct, values_text = rest
            values = [float(v) for v in values_text.split(",")]
            user = _timer_lines(name, values, [float(pct)])
        packets = len(case["flushes"][0])
        lines = sum(
            len([line for line in p.split("\n") if line]) for p in case["flushes"][0]
        )
        return [user + _internal(packets=packets, lines=lines, stats=1)]
    return [
        user + _internal(**internal)
        for user, internal in zip(spec, case["obsd_internal"], strict=True)
    ]


# -- running Etsy statsd -----------------------------------------------------


def install(statsd_dir: Path) -> Path:
    """Install the pinned statsd into ``statsd_dir`` (once) and return its package directory."""
    package = statsd_dir / "node_modules" / "statsd"
    manifest = package / "package.json"
    if (
        not manifest.exists()
        or json.loads(manifest.read_text())["version"] != STATSD_VERSION
    ):
        statsd_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "npm",
                "install",
                "--prefix",
                str(statsd_dir),
                "--no-audit",
                "--no-fund",
                "--ignore-scripts",
                f"statsd@{STATSD_VERSION}",
            ],
            check=True,
        )
    return package


def etsy_config(
    config: dict[str, Any], port: int, mgmt_port: int, graphite_port: int
) -> dict[str, Any]:
    """Translate a case's obsd config into Etsy statsd's config object."""
    graphite: dict[str, Any] = {}
    etsy: dict[str, Any] = {
        "address": "127.0.0.1",
        "port": port,
        "mgmt_address": "127.0.0.1",
        "mgmt_port": mgmt_port,
        "graphiteHost": "127.0.0.1",
        "graphitePort": graphite_port,
        "backends": ["./backends/graphite"],
        "flushInterval": FLUSH_SECONDS * 1000,
        "automaticConfigReload": False,
        "graphite": graphite,
    }
    names = {
        "percentiles": "percentThreshold",
        "delete_idle_stats": "deleteIdleStats",
        "delete_counters": "deleteCounters",
        "delete_timers": "deleteTimers",
        "delete_gauges": "deleteGauges",
        "delete_sets": "deleteSets",
        "gauges_max_ttl": "gaugesMaxTTL",
        "flush_counts": "flush_counts",
        "prefix_stats": "prefixStats",
        "histogram": "histogram",
        "calculated_timer_metrics": "calculatedTimerMetrics",
    }
    graphite_names = {
        "legacy_namespace": "legacyNamespace",
        "global_prefix": "globalPrefix",
        "prefix_counter": "prefixCounter",
        "prefix_timer": "prefixTimer",
        "prefix_gauge": "prefixGauge",
        "prefix_set": "prefixSet",
        "global_suffix": "globalSuffix",
    }
    for key, value in config.items():
        if key in names:
            etsy[names[key]] = value
        elif key in graphite_names:
            graphite[graphite_names[key]] = value
        elif key != "graphite_tags":  # Etsy always sends tags as ;k=v
            raise KeyError(f"no Etsy name for {key}")
    return etsy


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class CaptureServer:
    """A TCP server that queues each connection's bytes: one Etsy flush per connection."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.flushes: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                chunks = []
                while chunk := conn.recv(65536):
                    chunks.append(chunk)
            self.flushes.put(b"".join(chunks))

    def close(self) -> None:
        self.sock.close()


def _strip_timestamps(payload: bytes) -> list[str]:
    return [line.rsplit(" ", 1)[0] for line in payload.decode().splitlines() if line]


def record_case(package: Path, case: dict[str, Any]) -> dict[str, Any]:
    """Run Etsy statsd for one case and return the case with Etsy's output."""
    capture = CaptureServer()
    port = _free_port(socket.SOCK_DGRAM)
    mgmt_port = _free_port(socket.SOCK_STREAM)
    config = etsy_config(case.get("config", {}), port, mgmt_port, capture.port)
    result = {key: case[key] for key in ("name", "flushes")}
    result["config"] = case.get("config", {})
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp, "config.js")
        config_path.write_text(json.dumps(config))
        stderr_path = Path(tmp, "stderr")
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                ["node", "stats.js", str(config_path)],
                cwd=package,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            capture.flushes.get(timeout=TIMEOUT)  # the empty first flush
            etsy: list[list[str]] | None = []
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                for packets in case["flushes"]:
                    for packet in packets:
                        udp.sendto(packet.encode(), ("127.0.0.1", port))
                    try:
                        payload = capture.flushes.get(timeout=TIMEOUT)
                    except queue.Empty:
                        if process.poll() is None:
                            raise
                        etsy = None
                        break
                    assert etsy is not None
                    etsy.append(_strip_timestamps(payload))
            time.sleep(0.2)
            if process.poll() is not None:
                etsy = None
        finally:
            process.kill()
            process.wait()
            capture.close()
        result["etsy"] = etsy
        if etsy is None:
            error = [
                line for line in stderr_path.read_text().splitlines() if "Error" in line
            ]
            result["etsy_crashed"] = error[0] if error else "exited"
    if "obsd_differs" in case:
        result["obsd_differs"] = case["obsd_differs"]
        result["obsd"] = _obsd_expected(case)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--statsd-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument(
        "--only", help="record only the case with this name (others kept)"
    )
    args = parser.parse_args()
    package = install(args.statsd_dir)
    todo = [case for case in CASES if args.only in (None, case["name"])]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        recorded = {
            case["name"]: case
            for case in pool.map(lambda c: record_case(package, c), todo)
        }
    previous = (
        json.loads(OUTPUT.read_text())["cases"] if args.only and OUTPUT.exists() else []
    )
    by_name = {case["name"]: case for case in previous} | recorded
    cases = [by_name[case["name"]] for case in CASES if case["name"] in by_name]
    document = {
        "recorded_with": f"statsd@{STATSD_VERSION} (npm), node {subprocess.check_output(['node', '--version'], text=True).strip()}",
        "flush_interval": FLUSH_SECONDS,
        "cases": cases,
    }
    OUTPUT.write_text(json.dumps(document, indent=1) + "\n")
    print(
        f"recorded {len(recorded)} cases into {os.path.relpath(OUTPUT)}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
