"""report.md's sections about a load run: the crossed thresholds at the top, then "Load" (the
profile, every threshold, the run's figures, the capacity search's steps, in flight over time).

Why near the top: a load run is read for its answer (did it hold? how far does this host go?),
which is these few lines, not the per-test tables below them; a crossed threshold is the first
thing under the title, as k6 prints it first.

Reads the plain values `RunResult.profile`, `.thresholds` and `.capacity`; imports
`stress.report.results` and `stress.report.text` only.
"""

from __future__ import annotations

from typing import Any

from stress.report.results import RunResult, ThresholdResult
from stress.report.text import cell, fmt_bytes, fmt_metric, fmt_seconds

TIMELINE_ROWS = 24
"""At most this many rows of the in-flight timeline in report.md (report.json keeps more)."""


def _threshold_text(t: ThresholdResult) -> str:
    text = f"`{cell(t.expr)}`: observed {fmt_metric(t.unit, t.observed)}"
    if t.limit is not None:
        text += f", limit {fmt_metric(t.unit, t.limit)}"
    if t.note:
        text += f" ({cell(t.note)})"
    if t.aborted:
        text += f"; aborted the run at {fmt_seconds(t.at)}"
    return text


def banner_lines(run: RunResult) -> list[str]:
    """Right under the title: every crossed threshold, and the capacity search's answer."""
    lines = [f"**Threshold crossed:** {_threshold_text(t)}" for t in run.thresholds_crossed]
    c = run.capacity
    if c is not None:
        found = ("no step held" if c.max_sustainable_concurrency is None
                 else f"this host sustains **{c.max_sustainable_concurrency}** tests in flight")
        lines.append(f"**Capacity:** {found}; limited by **{c.limited_by}**: {cell(c.reason)}")
    return [line + "  " for line in lines] + ([""] if lines else [])


def _profile_row(p: dict[str, Any]) -> str:
    kind = p.get("kind")
    if kind == "stages":
        return (f"stages `{cell(p.get('text'))}` (ramping tests in flight from 0, peak "
                f"{p.get('peak')}, {fmt_seconds(p.get('duration'))})")
    if kind == "arrival_rate":
        return (f"arrival rate `{cell(p.get('text'))}` ({p.get('rate_per_second', 0):.4g}/s) for "
                f"{fmt_seconds(p.get('duration'))}, at most {p.get('max_in_flight')} in flight, "
                f"{p.get('planned_starts')} starts planned")
    if kind == "find_capacity":
        return (f"capacity search: steps of {p.get('step')} in flight, "
                f"{fmt_seconds(p.get('step_duration'))} each, at most {p.get('max_steps')} steps")
    return f"fixed concurrency {p.get('concurrency')}"


def _figures_table(f: dict[str, Any]) -> list[str]:
    """The run's (or a step's) figures as one table row with its header."""
    return [
        "| runs | errors | p50 duration | p95 duration | p95 wall | p50 / p95 first output | "
        "peak load | PSI cpu / memory / io | peak RSS | min free memory | service queue | queued |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
        f"| {f.get('attempts')} | {fmt_metric('ratio', f.get('error_rate'))} "
        f"| {fmt_metric('seconds', f.get('p50_duration'))} "
        f"| {fmt_metric('seconds', f.get('p95_duration'))} "
        f"| {fmt_metric('seconds', f.get('p95_wall'))} | {_first_output(f)} "
        f"| {fmt_metric('load', f.get('host_load'))} | {_psi(f)} | {_bytes(f.get('peak_rss'))} "
        f"| {_bytes(f.get('free_mem'))} | {fmt_metric('count', f.get('service_queue'))} "
        f"| {f.get('queued', 0)} |",
    ]


def _first_output(f: dict[str, Any]) -> str:
    return (f"{fmt_metric('seconds', f.get('p50_first_output'))} / "
            f"{fmt_metric('seconds', f.get('p95_first_output'))}")


def _psi(f: dict[str, Any]) -> str:
    return " / ".join(fmt_metric("ratio", f.get(k))
                      for k in ("cpu_pressure", "memory_pressure", "io_pressure"))


def _bytes(v: float | None) -> str:
    return "-" if v is None else fmt_bytes(int(v))


def _thresholds_table(ts: list[ThresholdResult]) -> list[str]:
    if not ts:
        return []
    lines = ["### Thresholds", "", "Crossed ones first. `no data`: the run measured nothing for it.",
             "", "| threshold | observed | limit | result |", "|---|---:|---:|---|"]
    for t in ts:
        result = "held" if t.passed else "**ABORTED**" if t.aborted else "**CROSSED**"
        expr = f"`{cell(t.expr)}`" if t.passed else f"**`{cell(t.expr)}`**"
        lines.append(f"| {expr} | {fmt_metric(t.unit, t.observed)} | "
                     f"{fmt_metric(t.unit, t.limit)} | {result}"
                     + (f" ({cell(t.note)})" if t.note else "") + " |")
    return lines + [""]


def _steps_table(run: RunResult) -> list[str]:
    c = run.capacity
    if c is None:
        return []
    lines = ["### Capacity", "",
             f"Criteria: {', '.join(f'`{cell(x)}`' for x in c.criteria)}. Answer: "
             + ("no step held" if c.max_sustainable_concurrency is None
                else f"**{c.max_sustainable_concurrency}** tests in flight")
             + f"; limited by **{c.limited_by}**: {cell(c.reason)}", "",
             "| step | in flight | runs | p50 / p95 duration | p95 wall | p50 / p95 first output | "
             "errors | peak load | PSI cpu / memory / io | peak RSS | min free memory | "
             "service queue | queued | result |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|"]
    for s in c.steps:
        result = "held" if s.get("held") else "**crossed** " + cell(", ".join(s.get("crossed", [])))
        lines.append(
            f"| {s.get('step')} | {s.get('concurrency')} | {s.get('attempts')} "
            f"| {fmt_metric('seconds', s.get('p50_duration'))} / "
            f"{fmt_metric('seconds', s.get('p95_duration'))} "
            f"| {fmt_metric('seconds', s.get('p95_wall'))} | {_first_output(s)} "
            f"| {fmt_metric('ratio', s.get('error_rate'))} | {fmt_metric('load', s.get('host_load'))} "
            f"| {_psi(s)} | {_bytes(s.get('peak_rss'))} | {_bytes(s.get('free_mem'))} "
            f"| {fmt_metric('count', s.get('service_queue'))} | {s.get('queued', 0)} | {result} |")
    return lines + [""]


def _timeline(p: dict[str, Any]) -> list[str]:
    points = p.get("timeline") or []
    if len(points) < 2:
        return []
    step = max(1, -(-len(points) // TIMELINE_ROWS))
    rows = points[::step]
    lines = ["In flight over time (sampled about once a second):", "",
             "| at | target | in flight |", "|---:|---:|---:|"]
    lines += [f"| {fmt_seconds(t)} | {'-' if target is None else target} | {n} |"
              for t, target, n in rows]
    return lines + [""]


def load_section(run: RunResult) -> list[str]:
    """The Load section: profile, thresholds, figures, capacity steps, in flight over time."""
    p = run.profile
    if p is None and run.capacity is None and not run.thresholds:
        return []
    lines = ["## Load", ""]
    if p is not None:
        lines += ["| | |", "|---|---|", f"| Profile | {_profile_row(p)} |"]
        if p.get("starts") is not None:
            lines.append(f"| Started | {p['starts']} tests; peak {p.get('peak_in_flight')} in "
                         f"flight; {p.get('dropped_starts', 0)} starts dropped (max in flight "
                         "reached) |")
        if p.get("ended_early"):
            lines.append(f"| Ended early | {cell(p['ended_early'])} |")
        lines.append("")
    lines += _thresholds_table(run.thresholds)
    if p is not None and p.get("figures"):
        lines += ["### Figures", "", *_figures_table(p["figures"]), ""]
    lines += _steps_table(run)
    if p is not None:
        lines += _timeline(p)
    return lines


__all__ = ["TIMELINE_ROWS", "banner_lines", "load_section"]
