"""Pick the best of a test's concurrent instances: pure functions, no I/O, no clock.

Why "succeeded" is not the same as "passed": the criteria rank instances by what they produced
(time, size, cost, patterns found). If only instances that passed every check could win,
`most_patterns` would be meaningless under `match: all` (every passing instance found them all).
So an instance is *eligible* when it ran to a normal end with an accepted exit code and no
forbidden output; among those the criterion decides, and the winner's own verdict (it may still
miss patterns) becomes the attempt's verdict. When no instance is eligible, nothing wins and the
attempt fails.

Ties are broken the same way every time, so a report can be reproduced: by the shorter run time,
then by the lower instance number. `cheapest` ranks instances that reported no cost after those
that did (with no cost anywhere it is effectively `fastest`, and says so).

Words: an *attempt* is one run of a case (a repeat or a retry); an *instance* is one of the K
concurrent runs inside one attempt of an instances test. Running the instances and folding them
into the attempt's record is `stress.run.instance_runs`; this module only ranks and picks.

Must not import: anything that runs jobs or does I/O (execution, instance_runs, runner, the
dispatcher), and nothing of the service (never `cc_executor.jobs/server/process/tree/registry`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stress.suite.model import CRITERIA
from stress.suite.verdict import Reason, Verdict

DISQUALIFYING: dict[Reason, str] = {
    Reason.SKIPPED: "did not run",
    Reason.ERROR: "did not complete",
    Reason.TIMEOUT: "timed out",
    Reason.STALLED: "stalled",
    Reason.EXIT_CODE: "unexpected exit code",
    Reason.FORBIDDEN_PATTERN: "forbidden output",
    Reason.UNEXPECTED_END: "ended in an unexpected way",
    Reason.LEFTOVER_PROCESSES: "left processes running",
}
"""Verdict failures that keep an instance from winning (missing patterns do not)."""


def why_not_eligible(verdict: Verdict) -> str | None:
    """None when the instance may win; else why not, e.g. "unexpected exit code (exit 1)"."""
    for reason in verdict.failures:
        if reason in DISQUALIFYING:
            text = DISQUALIFYING[reason]
            if reason is Reason.EXIT_CODE and verdict.exit_code is not None:
                text += f" (exit {verdict.exit_code})"
            return text
    return None


@dataclass(frozen=True)
class InstanceRun:
    """What the criteria rank one instance by (index is 0-based; reports show index + 1)."""

    index: int
    eligible: bool
    duration: float
    size: int
    """Bytes of stdout: the measure of `longest` (seed 004's MOST_DETAILED)."""
    cost: float | None = None
    patterns_found: int = 0
    patterns_total: int = 0
    why_not: str | None = None
    """Why it is not eligible (None when it is)."""

    @property
    def coverage(self) -> float:
        return self.patterns_found / self.patterns_total if self.patterns_total else 1.0


@dataclass(frozen=True)
class Selection:
    criterion: str
    winner: int | None
    """0-based index of the chosen instance; None when no instance was eligible."""
    ranking: tuple[int, ...]
    """Eligible instances, best first."""
    why: str

    def to_json(self) -> dict[str, Any]:
        return {"criterion": self.criterion,
                "winner": None if self.winner is None else self.winner + 1,
                "ranking": [i + 1 for i in self.ranking], "why": self.why}


def _key(criterion: str, r: InstanceRun) -> tuple:
    if criterion == "fastest":
        return (r.duration, r.index)
    if criterion == "longest":
        return (-r.size, r.duration, r.index)
    if criterion == "cheapest":
        return (r.cost is None, r.cost or 0.0, r.duration, r.index)
    return (-r.coverage, -r.patterns_found, r.duration, r.index)


def _primary(criterion: str, r: InstanceRun) -> tuple:
    """The part of the sort key that is the criterion itself (the rest breaks ties)."""
    k = _key(criterion, r)
    return k[:1] if criterion in ("fastest", "longest") else k[:2]


def _measure(criterion: str, r: InstanceRun) -> str:
    if criterion == "fastest":
        return f"{r.duration:.3g} s"
    if criterion == "longest":
        return f"{r.size:,} bytes"
    if criterion == "cheapest":
        return "no cost reported" if r.cost is None else f"${r.cost:.4f}"
    return f"{r.patterns_found}/{r.patterns_total} patterns"


def select(criterion: str, runs: Sequence[InstanceRun]) -> Selection:
    """The best eligible instance by `criterion`, and a sentence saying why."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r} (expected one of {', '.join(CRITERIA)})")
    if not runs:
        raise ValueError("no instances to choose from")
    eligible = sorted((r for r in runs if r.eligible), key=lambda r: _key(criterion, r))
    if not eligible:
        reasons = "; ".join(f"#{r.index + 1} {r.why_not or 'not eligible'}" for r in runs)
        return Selection(criterion, None, (), f"no instance succeeded ({reasons})")
    best = eligible[0]
    why = f"#{best.index + 1} is the {criterion.replace('_', ' ')} of {len(eligible)} that succeeded " \
          f"({_measure(criterion, best)}"
    if len(eligible) > 1:
        why += "; others: " + ", ".join(f"#{r.index + 1} {_measure(criterion, r)}" for r in eligible[1:])
    why += ")"
    if criterion == "cheapest" and best.cost is None:
        why += "; no instance reported a cost, so the fastest won"
    elif len(eligible) > 1 and _primary(criterion, best) == _primary(criterion, eligible[1]):
        why += "; a tie, broken by run time, then instance number"
    dropped = [r for r in runs if not r.eligible]
    if dropped:
        why += "; not eligible: " + ", ".join(f"#{r.index + 1} {r.why_not}" for r in dropped)
    return Selection(criterion, best.index, tuple(r.index for r in eligible), why)


def total_cost(instances: Sequence[dict[str, Any]]) -> float | None:
    """What an attempt with instances cost: every instance ran (and was paid for), not only the
    winner. `instances` is the attempt's per-instance summary (its "cost_usd" entries); None
    when no instance reported a cost."""
    costs = [i.get("cost_usd") for i in instances]
    known = [float(c) for c in costs if isinstance(c, int | float) and not isinstance(c, bool)]
    return sum(known) if known else None


__all__ = ["CRITERIA", "DISQUALIFYING", "InstanceRun", "Selection", "select", "total_cost",
           "why_not_eligible"]
