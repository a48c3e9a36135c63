"""The --find-capacity policy: which criteria a step must meet, whether it held, what limited the
search, and the result (no I/O; `stress.run.driver` runs the steps).

A search runs steps of `step`, `2 x step`, `3 x step`... tests in flight, each for
`step_duration`, and stops at the first step that crosses one of its criteria (or after
`max_steps`). The answer is the concurrency of the last step that held: "this host sustains N
concurrent jobs of this suite".

Default criteria (when no --threshold is given; they are not `required`, so a service that
cannot report one is not failed by it):

    error_rate<1%          fewer than 1% of the step's attempts failed
    p95_duration<2x        p95 run time (queue wait excluded) within 2x of the first step's
    p95_wall<2x            p95 request-to-completion (queue wait included) within 2x
    host_load<MAX          peak 1-minute load under --max-load (else the service's own limit)
    oom_kills<1            no OOM kill on this host during the step

Why the service's queue is judged through `wall` and not by "nothing was queued": the service
paces a burst (its slow start holds a few jobs for a moment when a step adds many at once), which
is admission working, not the host at its limit; a queue that makes clients wait shows as `wall`
growing while `duration` does not.

What limited it is named by the kind of the first criterion crossed, in this order: memory,
errors, admission (the service's queue), cpu, io, latency; a step that crossed only latency
criteria while the service queued jobs is limited by admission (the queue is the latency).

Imports `stress.run.thresholds`, `stress.run.metrics`, `stress.run.profile` and the report's
result types only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stress.report.results import Capacity, ThresholdResult
from stress.report.text import fmt_metric
from stress.run.metrics import Window, cores, measure, summary
from stress.run.profile import StepSearch
from stress.run.thresholds import Threshold, judge, parse_threshold

CATEGORIES: dict[str, str] = {
    "error_rate": "errors", "pass_rate": "errors", "errors": "errors",
    "queued": "admission", "service_queue": "admission", "queue_wait": "admission",
    "host_load": "cpu", "cpu_pressure": "cpu", "io_pressure": "io",
    "peak_rss": "memory", "free_mem": "memory", "memory_pressure": "memory",
    "oom_kills": "memory", "duration": "latency", "wall": "latency",
    "first_output": "latency",
}
ORDER = ("memory", "errors", "admission", "cpu", "io", "latency", "other")


def default_criteria(max_load: float | None) -> tuple[Threshold, ...]:
    """The step criteria when no --threshold is given; `max_load` None leaves out the load one."""
    texts = ["error_rate<1%", "p95_duration<2x", "p95_wall<2x", "oom_kills<1"]
    if max_load is not None:
        texts.insert(3, f"host_load<{max_load:g}")
    return tuple(parse_threshold(t, required=False) for t in texts)


def category(th: ThresholdResult | Threshold) -> str:
    """latency, errors, cpu, memory, io, admission or other, by the metric's series or name."""
    name = th.metric
    for series in ("queue_wait", "first_output", "duration", "wall"):
        if name.endswith("_" + series):
            return CATEGORIES[series]
    return CATEGORIES.get(name, "other")


@dataclass
class StepResult:
    """One step as judged: its figures, every criterion's result, and whether it held."""

    index: int
    concurrency: int
    started: float
    ended: float
    figures: dict[str, Any]
    results: list[ThresholdResult]
    note: str | None = None

    @property
    def held(self) -> bool:
        """Every criterion held, over at least one attempt that ran (a step where nothing ran
        says nothing about the host)."""
        return bool(self.figures.get("attempts")) and all(r.passed for r in self.results)

    @property
    def crossed(self) -> list[ThresholdResult]:
        return [r for r in self.results if not r.passed]

    def to_json(self) -> dict[str, Any]:
        return {"step": self.index + 1, "concurrency": self.concurrency,
                "started": round(self.started, 3), "ended": round(self.ended, 3),
                "held": self.held, "crossed": [r.expr for r in self.crossed],
                "note": self.note, **self.figures,
                "thresholds": [r.to_json() for r in self.results]}


def baseline_of(first: Window, criteria: Sequence[Threshold]) -> dict[str, float | None]:
    """What a relative (`2x`) criterion is relative to: the first step's measured values."""
    return {th.text: measure(first, th) for th in criteria if th.relative}


def judge_step(index: int, concurrency: int, window: Window, criteria: Sequence[Threshold],
               baseline: dict[str, float | None], *, started: float, ended: float) -> StepResult:
    n_cores = cores(window)
    results = [judge(th, measure(window, th), baseline=baseline.get(th.text), cores=n_cores,
                     first=index == 0) for th in criteria]
    results.sort(key=lambda r: r.passed)  # crossed first
    return StepResult(index, concurrency, started, ended, summary(window), results)


def limit_of(step: StepResult) -> str:
    """What limited a step that did not hold (see the module's docstring for the order)."""
    kinds = {category(r) for r in step.crossed}
    if kinds <= {"latency"} and (step.figures.get("queued") or step.figures.get("service_queue")):
        return "admission"
    return next((k for k in ORDER if k in kinds), "other")


def _crossing_text(step: StepResult) -> str:
    return "; ".join(f"{r.expr} crossed (observed {fmt_metric(r.unit, r.observed)}"
                     + (f", limit {fmt_metric(r.unit, r.limit)}" if r.limit is not None else "")
                     + (f", {r.note}" if r.note else "") + ")" for r in step.crossed)


def conclude(steps: Sequence[StepResult], search: StepSearch, criteria: Sequence[Threshold],
             stopped: str | None = None, *, interrupted: bool = False) -> Capacity:
    """The search's answer from its steps, in order (the last may be the one that crossed)."""
    held = [s for s in steps if s.held]
    best = held[-1].concurrency if held else None
    base = dict(criteria=[t.text for t in criteria], step=search.step,
                step_duration=search.step_duration, max_steps=search.max_steps,
                steps=[s.to_json() for s in steps])
    if steps and not steps[-1].held and not steps[-1].crossed:
        return Capacity(best, "stopped", f"step {len(steps)} ran no test", **base)
    if steps and not steps[-1].held:
        last = steps[-1]
        limit = limit_of(last)
        reason = f"at {last.concurrency} in flight, {_crossing_text(last)}"
        if limit == "admission":
            reason += (f"; the service queued {last.figures.get('queued', 0)} of the step's jobs "
                       "(its admission held them back: see /health `admission`)")
        return Capacity(best, limit, reason, **base)
    if interrupted:
        return Capacity(best, "interrupted", "the search was interrupted" + (
            f" after {len(steps)} step(s)" if steps else " before its first step ended"), **base)
    if stopped is not None:
        return Capacity(best, "stopped", f"the search stopped early: {stopped}", **base)
    top = steps[-1].concurrency if steps else 0
    return Capacity(best, "max_steps", f"every step held, up to {top} in flight; the limit is "
                    "higher (raise --max-steps or --step to look further)", **base)


__all__ = ["CATEGORIES", "ORDER", "StepResult", "baseline_of", "category", "conclude",
           "default_criteria", "judge_step", "limit_of"]
