"""Fold each planned test's attempts into its `Outcome` (stress.report.results): status, reason, message.

Owns the rules that turn attempts into a test's result: an attempt that never ran is filled in
with why (skipped, or the run's stop reason); the test's pass threshold decides over the
attempts that ran; a test with no attempt run but some lost is lost, not skipped; and a repeated
test's message names its first failing attempt.

Why a separate, pure step: the CLI also reports a run that was interrupted before any attempt
began, with no Runner work at all, and both must read the same way.

Must not import: the modules that run jobs (execution, instance_runs, runner) or talk to a
service; never `cc_executor.jobs/server/process/tree/registry`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from stress.report.results import FAILED, LOST, PASSED, SKIPPED, Outcome
from stress.run import attempt_record
from stress.run.attempt_record import Execution
from stress.run.flaky import classify
from stress.run.planned import Planned, invocation_summary
from stress.suite.verdict import judge_repeats


def _executions(idx: int, p: Planned, results: Mapping[tuple[int, int], Execution],
                stop_reason: str | None, interrupted: bool) -> list[Execution]:
    """Every attempt of planned test `idx`, the ones that did not run filled in with why."""
    execs: list[Execution] = []
    for n in range(1, p.repeat + 1):
        ex = results.get((idx, n))
        if ex is None:
            if p.skip is not None:
                why = p.skip
            elif stop_reason:
                why = f"not run: {stop_reason}"
            else:
                why = "not run"
            ex = attempt_record.not_run(p, n, why, interrupted=interrupted and p.skip is None)
        execs.append(ex)
    return execs


def outcome(p: Planned, execs: Sequence[Execution]) -> Outcome:
    """One test's outcome from all its attempts (in attempt order)."""
    t = p.test
    o = Outcome(
        suite=p.suite, id=t.id, name=t.name, tags=list(t.tags), source=str(t.source),
        kind=t.kind, invocation=invocation_summary(t), requires=list(t.requires),
        timeout=t.timeout, stall_timeout=t.stall_timeout, repeat=p.repeat,
        output_stem=p.stem, test_id=t.test_id, vars=dict(t.vars),
    )
    o.attempts = [e.attempt for e in execs]
    o.learned_timeout = p.learned_timeout
    o.stability = classify([a.status for a in o.attempts], p.threshold).to_json()
    rv = judge_repeats(p.threshold, [e.verdict for e in execs])
    o.passes, o.runs, o.required = rv.passes, rv.runs, rv.required
    lost = [e.attempt for e in execs if e.attempt.status == LOST]
    if rv.runs == 0 and lost:
        o.status, o.reason = LOST, LOST
        o.message = lost[0].message
    elif rv.runs == 0:
        o.status = SKIPPED
        o.reason = execs[0].attempt.reason if execs[0].attempt.reason == "cancelled" else "skipped"
        o.message = execs[0].attempt.message
    elif rv.passed:
        o.status, o.reason = PASSED, "passed"
        o.message = execs[0].attempt.message if p.repeat == 1 else rv.message
    else:
        o.status = FAILED
        first_bad = next((e.attempt for e in execs if e.attempt.status == FAILED), execs[0].attempt)
        o.reason = first_bad.reason
        o.message = first_bad.message if p.repeat == 1 else \
            f"{rv.message}; first failure (attempt {first_bad.attempt}): {first_bad.message}"
    if lost and rv.runs:
        o.message += f"; {len(lost)} attempt(s) lost"
    return o


def fold(plan: Sequence[Planned], results: Mapping[tuple[int, int], Execution], *,
         stop_reason: str | None, interrupted: bool) -> list[Outcome]:
    """Every planned test's outcome; `results` maps (plan index, attempt number) to what ran."""
    return [outcome(p, _executions(idx, p, results, stop_reason, interrupted))
            for idx, p in enumerate(plan)]


__all__ = ["fold", "outcome"]
