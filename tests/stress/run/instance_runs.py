"""One attempt of an instances test: its K instances run at once, and the best one stands for it.

Owns `run_instances` (start every instance of the attempt, and on a cancel let each record what it
had) and `pick` (rank the instances with `stress.run.instances`, and fold them into the attempt's one
record, with a per-instance summary the report shows).

Why the attempt keeps every instance's summary although one wins: each instance ran and was paid
for (see `instances.total_cost`), and when none is eligible the summary is the only place that
says why each one was not.

Must not import: the Runner (runner.py) or the dispatcher; no client connection either - running one
instance is the caller's `execute` callable. Never `cc_executor.jobs/server/process/tree/registry`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from stress.run import instances as instances_mod
from stress.run.attempt_record import Execution
from stress.suite import Instances


async def run_instances(execute: Callable[[int, str], Awaitable[Execution]], inst: Instances,
                        stem: str) -> Execution:
    """Run `inst.count` instances at once (`execute(index, stem)` runs one, 0-based index, output
    stem "<stem>.i<k>"); the best eligible one is the attempt's result."""
    tasks = [asyncio.ensure_future(execute(i, f"{stem}.i{i + 1}")) for i in range(inst.count)]
    try:
        await asyncio.wait(tasks)
    except asyncio.CancelledError:
        # Interrupt or --halt now: each instance records what it had (bounded), then we
        # report the attempt as cut short instead of losing every instance's output.
        for t in tasks:
            t.cancel()
        await asyncio.wait(tasks)
        me = asyncio.current_task()
        if me is not None:
            me.uncancel()
    return pick(inst, [t.result() for t in tasks])


def _ranked(runs: Sequence[Execution]) -> list[instances_mod.InstanceRun]:
    """What the criteria rank each instance by; an attempt cut short has no eligible instance."""
    cut = any(r.attempt.interrupted for r in runs)
    return [
        instances_mod.InstanceRun(
            index=i, eligible=not cut and instances_mod.why_not_eligible(r.verdict) is None,
            duration=r.attempt.duration, size=r.attempt.stdout_bytes, cost=r.cost,
            patterns_found=len(r.attempt.patterns_found),
            patterns_total=len(r.attempt.patterns_found) + len(r.attempt.patterns_missing),
            why_not="cut short" if cut else instances_mod.why_not_eligible(r.verdict))
        for i, r in enumerate(runs)]


def _summary(inst: Instances, runs: Sequence[Execution],
             ranked: Sequence[instances_mod.InstanceRun], winner: int | None) -> list[dict[str, Any]]:
    """One entry per instance for the report: its variant, how it ended, and whether it won."""
    summary = []
    for i, r in enumerate(runs):
        v = inst.variant_for(i)
        summary.append({
            "instance": i + 1, "label": v.label if v else None,
            "model": v.model if v else None, "temperature": v.temperature if v else None,
            "status": r.attempt.status, "reason": r.attempt.reason,
            "exit_code": r.attempt.exit_code, "end_reason": r.attempt.end_reason,
            "duration": round(r.attempt.duration, 4), "started_at": r.attempt.started_at,
            "wall": round(r.attempt.wall, 4), "first_output": r.attempt.first_output,
            "stdout_bytes": r.attempt.stdout_bytes,
            "cost_usd": r.cost, "coverage": round(r.coverage, 4),
            "patterns_found": ranked[i].patterns_found,
            "patterns_total": ranked[i].patterns_total,
            "eligible": ranked[i].eligible, "why_not": ranked[i].why_not,
            "stdout_path": r.attempt.stdout_path, "chosen": i == winner,
        })
    return summary


def pick(inst: Instances, runs: Sequence[Execution]) -> Execution:
    """The attempt's record from its instances' records: the winner's, or (nothing eligible) the
    first instance's as its representative, failed (or, cut short, counted as not run). A lost
    connection under any instance makes the attempt lost."""
    lost = next((r.lost for r in runs if r.lost is not None), None)
    ranked = _ranked(runs)
    sel = instances_mod.select(inst.criterion, ranked)
    summary = _summary(inst, runs, ranked, sel.winner)
    if sel.winner is not None:
        best = runs[sel.winner]
        a = replace(best.attempt, instances=summary, instance_selection=sel.to_json(),
                    message=f"{best.attempt.message} [instance {sel.winner + 1} of "
                            f"{inst.count}, picked by {inst.criterion}]")
        return replace(best, attempt=a, lost=lost)
    first = runs[0]
    a = replace(first.attempt, instances=summary, instance_selection=sel.to_json(),
                message=f"{sel.why}; first instance: {first.attempt.message}")
    return replace(first, attempt=a, lost=lost)


__all__ = ["pick", "run_instances"]
