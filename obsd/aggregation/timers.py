"""Etsy statsd 0.9's timer statistics and number formatting in names, pure."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Final, NamedTuple

from obsd.aggregation.settings import StatsdSettings


def js_number(value: float | str) -> str:
    """Format a number as JavaScript's ``String(n)`` does, for names such as ``mean_99_9``."""
    if isinstance(value, str):
        return value
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    return repr(value)


def percentile_suffix(pct: float) -> str:
    """A percentile as Etsy writes it in names: 90 -> ``90``, 99.9 -> ``99_9``, -10 -> ``top10``."""
    return js_number(pct).replace(".", "_", 1).replace("-", "top", 1)


#: Etsy's filter maps ``mean_90`` to ``mean_percent``; obsd also maps ``mean_99_9``
#: (Etsy's pattern misses fractional percentiles and drops their stats).
_PERCENT_STAT = re.compile(r"_(top)?\d+(_\d+)?$")

class TimerStat(NamedTuple):
    """One statistic of a timer: its name suffix (``mean_90``) and value."""

    suffix: str
    value: float



def timer_stats(
    s: StatsdSettings, name: str, values: list[float], count: float
) -> list[TimerStat]:
    """Etsy's process_metrics for one timer, stat by stat (sorts ``values``)."""
    interval = s.flush_interval
    if not values:
        return [TimerStat("count", 0), TimerStat("count_ps", 0)]
    values.sort()
    n = len(values)
    low, high = values[0], values[-1]
    cumulative = list(_accumulate(values))
    cumulative_sq = list(_accumulate(v * v for v in values))
    out: list[TimerStat] = []
    for pct in s.percentiles:
        in_threshold = n
        total, total_sq, mean, boundary = low, low * low, low, high
        if n > 1:
            in_threshold = _js_round(abs(pct) / 100 * n)
            if in_threshold == 0:
                continue
            if pct > 0:
                boundary = values[in_threshold - 1]
                total = cumulative[in_threshold - 1]
                total_sq = cumulative_sq[in_threshold - 1]
            else:
                boundary = values[n - in_threshold]
                before = n - in_threshold - 1
                total = cumulative[-1] - (cumulative[before] if before >= 0 else 0.0)
                total_sq = cumulative_sq[-1] - (cumulative_sq[before] if before >= 0 else 0.0)
            mean = total / in_threshold
        suffix = percentile_suffix(pct)
        out.append(TimerStat("count_" + suffix, in_threshold))
        out.append(TimerStat("mean_" + suffix, mean))
        out.append(TimerStat(("upper_" if pct > 0 else "lower_") + suffix, boundary))
        out.append(TimerStat("sum_" + suffix, total))
        out.append(TimerStat("sum_squares_" + suffix, total_sq))
    total = cumulative[-1]
    mean = total / n
    mid = n // 2
    median = values[mid] if n % 2 else (values[mid - 1] + values[mid]) / 2
    out.extend(
        (
            TimerStat("std", math.sqrt(sum((v - mean) ** 2 for v in values) / n)),
            TimerStat("upper", high),
            TimerStat("lower", low),
            TimerStat("count", count),
            TimerStat("count_ps", count / interval),
            TimerStat("sum", total),
            TimerStat("sum_squares", cumulative_sq[-1]),
            TimerStat("mean", mean),
            TimerStat("median", median),
        )
    )
    for hist in s.histogram:
        if hist.metric in name:
            index = 0
            for edge in hist.bins:
                freq = 0
                while index < n and (edge == "inf" or values[index] < edge):  # type: ignore[operator]
                    freq += 1
                    index += 1
                bin_name = "bin_" + js_number(edge).replace(".", "_", 1)
                out.append(TimerStat("histogram." + bin_name, freq))
            break
    return out

def keep_timer_stat(s: StatsdSettings, suffix: str) -> bool:
    """Whether ``calculated_timer_metrics`` keeps this stat."""
    wanted = s.calculated_timer_metrics
    if not wanted:
        return True
    if suffix.startswith("histogram."):
        return "histogram" in wanted
    return _PERCENT_STAT.sub("_percent", suffix) in wanted


def exact_timer_stats(
    stats: list[TimerStat], exact: tuple[int, float, float, float, float]
) -> list[TimerStat]:
    """Stats from a reservoir with the exact ones (sum, mean, upper, lower, std) put back."""
    n, total, total_sq, low, high = exact
    mean = total / n
    known = {
        "sum": total,
        "sum_squares": total_sq,
        "mean": mean,
        "upper": high,
        "lower": low,
        "std": math.sqrt(max(total_sq / n - mean * mean, 0.0)),
    }
    return [TimerStat(stat.suffix, known.get(stat.suffix, stat.value)) for stat in stats]


def _accumulate(values: Iterable[float]) -> Iterable[float]:
    total = 0.0
    for value in values:
        total += value
        yield total


def _js_round(value: float) -> int:
    """JavaScript's ``Math.round``: halves go up (Python rounds them to even)."""
    return math.floor(value + 0.5)


__all__: Final = [
    "TimerStat",
    "exact_timer_stats",
    "js_number",
    "keep_timer_stat",
    "percentile_suffix",
    "timer_stats",
]
