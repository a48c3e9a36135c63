"""What a load run measured, over the whole run or one window of it (a capacity step): no I/O.

Owns `Sample` (one reading of the service's host: /health, its process tree, OOM kills),
`Observation` (one attempt on the run's clock), `Window` (the observations and samples of a span
of time) and the functions that turn a window into the values thresholds compare: `measure` (one
threshold's metric) and `summary` (the figures a report shows per run or step).

Definitions (docs/harness.md "Thresholds"):
- attempts that *ran* passed, failed or were lost; cut short (interrupt, --halt now, :abort) or
  skipped ones are not counted. `error_rate` = (failed + lost) / ran.
- series (`duration`, `wall`, `first_output`, `queue_wait`) are taken over the attempts that
  passed or failed; percentiles interpolate linearly between the two nearest ranks (numpy's
  default), so p50 of [1, 2] is 1.5.
- host figures are peaks over the samples in the window (`free_mem` its minimum); `oom_kills`
  counts the host's OOM kills (/proc/vmstat `oom_kill`) since the window began.
- `dropped_rate` = dropped / (started + dropped).

Imports `stress.report.results` (the Attempt) and `stress.run.thresholds` only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from stress.report.results import FAILED, LOST, PASSED, Attempt
from stress.run.thresholds import Threshold


@dataclass(frozen=True)
class Sample:
    """One reading of the service's host, `at` seconds into the run; None where unknown."""

    at: float
    load1: float | None = None
    cores: int | None = None
    mem_available: int | None = None
    rss: int | None = None
    """Resident memory of the service's process tree (the service and every job)."""
    service_queue: int | None = None
    """/health `jobs.queued`: jobs the service holds back (its admission)."""
    running: int | None = None
    cpu_pressure: float | None = None
    memory_pressure: float | None = None
    io_pressure: float | None = None
    """PSI shares 0..1 from /health `load`, when the service reports them."""
    oom_kills: int | None = None
    """OOM kills on this host since the run began (a service on another host: None)."""
    max_load: float | None = None
    """The service's own admission limit (/health `throttle.max_load`)."""

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class Observation:
    """One attempt on the run's clock (seconds since the run began)."""

    start: float
    end: float
    status: str
    duration: float
    wall: float
    first_output: float | None
    queue_wait: float
    queued: bool

    @property
    def ran(self) -> bool:
        return self.status in (PASSED, FAILED, LOST)


def observe(a: Attempt, t0: float) -> Observation | None:
    """`a` on the clock that started at Unix time `t0`; None when it never started a job."""
    if a.started_at is None or a.status not in (PASSED, FAILED, LOST):
        return None
    start = a.started_at - t0
    return Observation(start, start + a.wall, a.status, a.duration, a.wall, a.first_output,
                       a.queue_wait or 0.0, a.queued)


@dataclass
class Window:
    """A span of the run: the attempts that started in it, the samples taken in it."""

    observations: list[Observation] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    started: int = 0
    """Attempts started (a start of an instances test counts once)."""
    dropped: int = 0
    """Starts an open model could not make (max in flight reached)."""
    oom_base: int = 0
    """The run's OOM-kill count when the window began."""


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (q in 0..1); `values` must not be empty."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _series(w: Window, name: str) -> list[float]:
    values: list[float] = []
    for o in w.observations:
        if o.status not in (PASSED, FAILED):
            continue
        v = getattr(o, name)
        if v is not None:
            values.append(float(v))
    return values


def stat(values: Sequence[float], name: str, q: float | None = None) -> float | None:
    if not values:
        return None
    if name == "p":
        return percentile(values, q if q is not None else 0.5)
    return {"avg": lambda: sum(values) / len(values), "med": lambda: percentile(values, 0.5),
            "min": lambda: min(values), "max": lambda: max(values)}[name]()


def _peak(values: Iterable[float | None], *, lowest: bool = False) -> float | None:
    got = [v for v in values if v is not None]
    if not got:
        return None
    return min(got) if lowest else max(got)


def _pressure(v: float | None) -> float | None:
    """A share 0..1. The sampler divides a kernel `avg10` (always percent) itself; a flat value
    over 1 can only be a percentage too, and is read as one."""
    return None if v is None else (v / 100 if v > 1 else v)


def scalar(w: Window, name: str) -> float | None:
    """One of stress.run.thresholds.SCALARS over `w`."""
    ran = [o for o in w.observations if o.ran]
    errors = sum(1 for o in ran if o.status != PASSED)
    s = w.samples
    values: dict[str, Any] = {
        "error_rate": lambda: errors / len(ran) if ran else None,
        "pass_rate": lambda: (len(ran) - errors) / len(ran) if ran else None,
        "dropped_rate": lambda: (w.dropped / (w.started + w.dropped)
                                 if w.started + w.dropped else None),
        "errors": lambda: float(errors), "attempts": lambda: float(len(ran)),
        "dropped_starts": lambda: float(w.dropped),
        "queued": lambda: float(sum(1 for o in ran if o.queued)),
        "oom_kills": lambda: (None if (peak := _peak(x.oom_kills for x in s)) is None
                              else max(0.0, peak - w.oom_base)),
        "service_queue": lambda: _peak(x.service_queue for x in s),
        "host_load": lambda: _peak(x.load1 for x in s),
        "peak_rss": lambda: _peak(x.rss for x in s),
        "free_mem": lambda: _peak((x.mem_available for x in s), lowest=True),
        "cpu_pressure": lambda: _peak(_pressure(x.cpu_pressure) for x in s),
        "memory_pressure": lambda: _peak(_pressure(x.memory_pressure) for x in s),
        "io_pressure": lambda: _peak(_pressure(x.io_pressure) for x in s),
    }
    v = values[name]()
    return None if v is None else float(v)


def measure(w: Window, th: Threshold) -> float | None:
    """The value `th` compares, over `w`; None when `w` has no data for it."""
    if th.series is not None:
        return stat(_series(w, th.series), th.stat or "p", th.quantile)
    return scalar(w, th.metric)


def cores(w: Window) -> int | None:
    return next((x.cores for x in reversed(w.samples) if x.cores), None)


def summary(w: Window) -> dict[str, Any]:
    """The figures a report shows for a run or a step (None: not measured)."""
    d = _series(w, "duration")
    fo = _series(w, "first_output")
    wall = _series(w, "wall")
    out: dict[str, Any] = {
        "started": w.started, "attempts": int(scalar(w, "attempts") or 0),
        "errors": int(scalar(w, "errors") or 0), "error_rate": scalar(w, "error_rate"),
        "p50_duration": stat(d, "p", 0.5), "p95_duration": stat(d, "p", 0.95),
        "max_duration": stat(d, "max"), "p95_wall": stat(wall, "p", 0.95),
        "p50_first_output": stat(fo, "p", 0.5), "p95_first_output": stat(fo, "p", 0.95),
        "queued": int(scalar(w, "queued") or 0), "dropped_starts": w.dropped,
    }
    for name in ("host_load", "cpu_pressure", "memory_pressure", "io_pressure", "peak_rss",
                 "free_mem", "service_queue", "oom_kills"):
        out[name] = scalar(w, name)
    for k, v in out.items():
        if isinstance(v, float):
            out[k] = round(v, 6)
    return out


__all__ = ["Observation", "Sample", "Window", "cores", "measure", "observe", "percentile",
           "scalar", "stat", "summary"]
