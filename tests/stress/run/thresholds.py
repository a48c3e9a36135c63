"""--threshold expressions: parse them, and judge one against an observed value (no I/O).

Owns `Threshold` (one parsed expression), `parse_threshold`, the metric table `METRICS` and
`judge` (a `stress.report.results.ThresholdResult` from an observed value). What each metric
measures, over a run or one capacity step, is `stress.run.metrics`.

Syntax, k6-like: `METRIC OP VALUE[:abort[=DELAY]]`, e.g. `p95_duration<30s`,
`p99_first_output<5s:abort`, `error_rate<1%`, `host_load<8`, `host_load<=2/core`,
`peak_rss<2GiB`, `dropped_starts==0`. OP is one of < <= > >= == !=. Percentiles are `p<N>_`
before a per-attempt series (`p95_duration`, `p99.9_wall`), as are `avg_`, `med_`, `min_` and
`max_`. Values take their metric's unit: durations need one (`500ms`, `30s`, `1m`; k6 reads a
bare number as milliseconds, so a bare number is refused), rates are a fraction or a percentage
(`0.01`, `1%`), loads a number or `N/core`, sizes binary units (`512M`, `2GiB`), counts a
number. `NUMx` is relative to the first step of a --find-capacity search (`p95_duration<2x`).

Why `judge` returns "crossed" for a metric without data: a threshold the run could not measure
(no attempt printed anything, the service reports no pressure) has not been shown to hold, and a
silent pass would hide a typo'd or meaningless check. The capacity search's default criteria are
the exception (`required=False`): they skip what a service cannot tell.

Imports `stress.run.units`, `stress.report.results` and `cc_executor.settings.parse_size` only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from cc_executor.settings import parse_size
from stress.report.results import ThresholdResult
from stress.run.units import OptionError, parse_duration

SERIES = ("duration", "wall", "first_output", "queue_wait")
"""Per-attempt values (seconds) a statistic is taken over: the run time (queue excluded), request
to completion (queue included), request to first output, time in the service's queue."""
STATS = ("avg", "med", "min", "max")

SCALARS: dict[str, str] = {
    "error_rate": "ratio", "pass_rate": "ratio", "dropped_rate": "ratio",
    "errors": "count", "attempts": "count", "dropped_starts": "count", "queued": "count",
    "oom_kills": "count", "service_queue": "count", "host_load": "load", "peak_rss": "bytes",
    "free_mem": "bytes", "cpu_pressure": "ratio", "memory_pressure": "ratio",
    "io_pressure": "ratio",
}
"""Metrics that are one number (their unit kind)."""

METRICS_HELP = ("p<N>_|avg_|med_|min_|max_ + " + "|".join(SERIES) + "; "
                + ", ".join(SCALARS))

_OPS = ("<=", ">=", "==", "!=", "<", ">")
_EXPR = re.compile(r"^\s*(?P<metric>[a-z][a-z0-9_.]*)\s*(?P<op><=|>=|==|!=|<|>)\s*(?P<value>\S+)\s*$")
_STAT = re.compile(r"^(?P<stat>p(?P<q>\d+(?:\.\d+)?)|avg|med|min|max)_(?P<series>[a-z_]+)$")
_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")


class ThresholdError(OptionError):
    """A malformed --threshold; the message names the bad token."""


@dataclass(frozen=True)
class Threshold:
    """One parsed expression."""

    text: str
    metric: str
    """As written, e.g. p95_duration."""
    op: str
    limit: float
    """In the metric's unit (seconds, 0..1, count, load, bytes); the factor when `relative`."""
    kind: str
    """seconds | ratio | count | load | bytes"""
    series: str | None = None
    stat: str | None = None
    """avg | med | min | max | p (with `quantile`); None for a scalar metric."""
    quantile: float | None = None
    relative: bool = False
    per_core: bool = False
    abort: bool = False
    abort_delay: float = 0.0
    """Seconds into the run (or step) before an `:abort` threshold is checked."""
    required: bool = True
    """Crossed when the run has no data for it (the capacity defaults are not required)."""


def _split_abort(text: str) -> tuple[str, bool, float]:
    head, sep, tail = text.rpartition(":")
    if not sep:
        return text, False, 0.0
    flag, eq, delay = tail.strip().partition("=")
    if flag.strip() != "abort":
        raise ThresholdError(f"--threshold: unknown suffix ':{tail}' in {text!r} "
                             "(only :abort or :abort=DELAY, e.g. :abort=30s)")
    if not eq:
        return head, True, 0.0
    try:
        return head, True, parse_duration(delay, "--threshold")
    except OptionError:
        raise ThresholdError(f"--threshold: bad delay {delay!r} in {text!r} (expected "
                             ":abort=DURATION, e.g. :abort=30s)") from None


def _metric(name: str, text: str) -> tuple[str, str | None, str | None, float | None]:
    """(kind, series, stat, quantile) of a metric name."""
    if name in SCALARS:
        return SCALARS[name], None, None, None
    m = _STAT.match(name)
    if m is None or m["series"] not in SERIES:
        raise ThresholdError(f"--threshold: unknown metric {name!r} in {text!r} "
                             f"(known: {METRICS_HELP})")
    if m["q"] is not None:
        q = float(m["q"])
        if not 0 < q <= 100:
            raise ThresholdError(f"--threshold: bad percentile {m['stat']!r} in {text!r} "
                                 "(p1 to p100, e.g. p95)")
        return "seconds", m["series"], "p", q / 100
    return "seconds", m["series"], m["stat"], None


def _value(kind: str, token: str, text: str) -> tuple[float, bool]:
    """(limit, per_core) from the value token, in the metric's unit."""
    t = token.strip().lower()
    bad = f"--threshold: bad value {token!r} in {text!r}"
    if kind == "seconds":
        try:
            return parse_duration(t, "--threshold"), False
        except OptionError:
            raise ThresholdError(f"{bad} (a duration needs a unit: 500ms, 30s, 2m)") from None
    if kind == "ratio":
        if t.endswith("%") and _NUMBER.match(t[:-1]) and float(t[:-1]) <= 100:
            return float(t[:-1]) / 100, False
        if _NUMBER.match(t) and float(t) <= 1:
            return float(t), False
        raise ThresholdError(f"{bad} (a rate is a percentage or a fraction: 1% or 0.01)")
    if kind == "load":
        per_core = t.endswith("/core")
        number = t.removesuffix("/core")
        if _NUMBER.match(number):
            return float(number), per_core
        raise ThresholdError(f"{bad} (a load is a number or N/core: 8 or 2/core)")
    if kind == "bytes":
        try:
            return float(parse_size(t)), False
        except ValueError:
            raise ThresholdError(f"{bad} (a size: 512M, 2GiB, 1073741824)") from None
    if _NUMBER.match(t):
        return float(t), False
    raise ThresholdError(f"{bad} (a count: a number such as 0 or 10)")


def parse_threshold(text: str, *, required: bool = True) -> Threshold:
    """One --threshold expression; ThresholdError naming the bad token."""
    body, abort, delay = _split_abort(text)
    m = _EXPR.match(body)
    if m is None:
        if not any(op in body for op in _OPS):
            raise ThresholdError(f"--threshold: {text!r} has no comparison (expected "
                                 "METRIC<VALUE, e.g. p95_duration<30s)")
        raise ThresholdError(f"--threshold: cannot read {text!r} (expected METRIC OP VALUE, "
                             "e.g. p95_duration<30s or error_rate<1%)")
    kind, series, stat, quantile = _metric(m["metric"], text)
    token = m["value"]
    rel = re.fullmatch(r"(\d+(?:\.\d+)?)x", token.strip().lower())
    if rel is not None:
        limit, per_core, relative = float(rel[1]), False, True
    else:
        (limit, per_core), relative = _value(kind, token, text), False
    return Threshold(text.strip(), m["metric"], m["op"], limit, kind, series, stat, quantile,
                     relative, per_core, abort, delay, required)


def holds(op: str, observed: float, limit: float) -> bool:
    return {"<": observed < limit, "<=": observed <= limit, ">": observed > limit,
            ">=": observed >= limit, "==": math.isclose(observed, limit, abs_tol=1e-12),
            "!=": not math.isclose(observed, limit, abs_tol=1e-12)}[op]


def resolve_limit(th: Threshold, *, baseline: float | None = None,
                  cores: int | None = None) -> float | None:
    """The limit in the metric's unit: a relative one times the baseline (None without one), a
    per-core load times the cores."""
    if th.relative:
        return None if baseline is None else th.limit * baseline
    if th.per_core:
        return th.limit * (cores or 1)
    return th.limit


def judge(th: Threshold, observed: float | None, *, baseline: float | None = None,
          cores: int | None = None, first: bool = False) -> ThresholdResult:
    """Whether `observed` meets `th`. `first`: this is the baseline itself (a relative threshold
    holds trivially); no data crosses a required threshold and passes an optional one."""
    limit = resolve_limit(th, baseline=baseline, cores=cores)
    result = ThresholdResult(th.text, th.metric, th.op, th.kind, limit, observed, True,
                             abort=th.abort)
    if th.relative and first:
        result.limit = None if observed is None else th.limit * observed
        result.note = "the first step is the baseline"
    elif observed is None:
        result.passed = not th.required
        result.note = "no data" + ("" if th.required else " (not checked)")
    elif limit is None:
        result.passed = not th.required
        result.note = "no baseline (the first step measured nothing)"
    else:
        result.passed = holds(th.op, observed, limit)
    return result


__all__ = ["METRICS_HELP", "SCALARS", "SERIES", "STATS", "Threshold", "ThresholdError",
           "holds", "judge", "parse_threshold", "resolve_limit"]
