"""Repeats, flakiness and halt rules: pure functions over counts, no I/O, no clock.

Why a test can be "flaky" rather than simply passed or failed: against a real model a test that
passes 4 runs in 5 is a different problem from one that never passes, and the report, the
history comparison and the graduation ratio all need to tell them apart the same way. The pass
decision itself stays the test's `pass_threshold` (see `stress.suite.verdict.PassThreshold`); the
stability class describes the spread, whatever the threshold decided.

Why halt rules look like GNU parallel's `--halt`: people already know `now,fail=1` and
`soon,fail=20%`. `soon` stops starting new tests and lets the running ones finish; `now` cancels the
running ones too. Percentages are of the tests finished so far, and only count once at least
`MIN_DONE_FOR_PERCENT` have finished, so one early failure cannot stop a large run at "100%".
What the runner counts as a finished "test" here is an attempt (one run of a case: each repeat
and retry counts), since that is the unit that passes or fails.

Must not import: anything that runs jobs or does I/O (execution, runner, the dispatcher), and
nothing of the service (never `cc_executor.jobs/server/process/tree/registry`).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from stress.suite.verdict import ALL_REPEATS, PassThreshold

Outcome = bool | None
"""One attempt: True passed, False failed, None did not run (skipped, lost, interrupted)."""

MIN_DONE_FOR_PERCENT = 3
"""A percentage condition is not judged before this many tests have finished."""


class Stability(str, enum.Enum):
    STABLE_PASS = "stable_pass"
    STABLE_FAIL = "stable_fail"
    FLAKY = "flaky"
    NOT_RUN = "not_run"


@dataclass(frozen=True)
class Flakiness:
    """How a test's attempts spread, and whether they met its pass threshold."""

    stability: Stability
    passes: int
    runs: int
    required: int
    passed: bool

    @property
    def failures(self) -> int:
        return self.runs - self.passes

    @property
    def pass_rate(self) -> float | None:
        return self.passes / self.runs if self.runs else None

    @property
    def flaky(self) -> bool:
        return self.stability is Stability.FLAKY

    def text(self) -> str:
        if not self.runs:
            return "not run"
        return f"{self.stability.value} ({self.passes}/{self.runs} passed, needed {self.required})"

    def to_json(self) -> dict[str, Any]:
        rate = self.pass_rate
        return {"stability": self.stability.value, "passes": self.passes, "runs": self.runs,
                "required": self.required, "passed": self.passed,
                "pass_rate": None if rate is None else round(rate, 4)}


def outcome_of(status: Any) -> Outcome:
    """Map a harness status ("passed"/"failed"/"skipped"/...) or a bool to an Outcome."""
    if status is None or isinstance(status, bool):
        return status
    if status == "passed":
        return True
    if status == "failed":
        return False
    if status in ("skipped", "lost", "not_run", "cancelled"):
        return None
    raise ValueError(f"unknown attempt status {status!r}: expected passed, failed, skipped, "
                     "lost, not_run, cancelled, True, False or None")


def classify(outcomes: Iterable[Any], threshold: PassThreshold = ALL_REPEATS) -> Flakiness:
    """Classify one test's attempts. Attempts that did not run are not counted at all."""
    counted = [o for o in map(outcome_of, outcomes) if o is not None]
    runs = len(counted)
    passes = sum(counted)
    required = threshold.required(runs) if runs else 1
    if not runs:
        stability = Stability.NOT_RUN
    elif passes == runs:
        stability = Stability.STABLE_PASS
    elif passes == 0:
        stability = Stability.STABLE_FAIL
    else:
        stability = Stability.FLAKY
    return Flakiness(stability, passes, runs, required, runs > 0 and passes >= required)


def classify_many(attempts: Mapping[Hashable, Sequence[Any]],
                  threshold: PassThreshold = ALL_REPEATS) -> dict[Hashable, Flakiness]:
    return {key: classify(outs, threshold) for key, outs in attempts.items()}


def settled(passes: int, failures: int, repeat: int,
            threshold: PassThreshold = ALL_REPEATS) -> bool | None:
    """Whether the remaining repeats can still change the verdict.

    True: already passed whatever the rest do; False: can no longer pass; None: undecided. Lets a
    runner skip repeats that cannot matter. Assumes every remaining repeat will run and count.
    """
    for name, v in (("passes", passes), ("failures", failures), ("repeat", repeat)):
        if v < 0:
            raise ValueError(f"{name} must be >= 0, got {v}")
    if passes + failures > repeat:
        raise ValueError(f"passes + failures ({passes + failures}) exceed repeat ({repeat})")
    required = threshold.required(repeat)
    if passes >= required:
        return True
    if passes + (repeat - passes - failures) < required:
        return False
    return None


# ---------------------------------------------------------------------------------------------
# Halt rules

When = Literal["never", "soon", "now"]
Metric = Literal["fail", "success", "done"]
_RULE = re.compile(r"^(?P<when>soon|now),(?P<metric>fail|success|done)=(?P<value>\d+(?:\.\d+)?)(?P<pct>%)?$")
_LEGACY = {"0": "never", "1": "soon,fail=1", "2": "now,fail=1"}


class HaltRuleError(ValueError):
    pass


@dataclass(frozen=True)
class HaltRule:
    """When to stop a run early. `never`, or WHEN,METRIC=N or WHEN,METRIC=P%.

    METRIC is `fail` (failed tests), `success` (passed tests) or `done` (finished tests).
    `now` and `soon` alone mean `now,fail=1` and `soon,fail=1`; 0/1/2 are the old GNU parallel
    spellings of never / soon,fail=1 / now,fail=1. `done=P%` needs the planned total.
    """

    when: When = "never"
    metric: Metric = "fail"
    count: int | None = None
    percent: float | None = None

    @classmethod
    def parse(cls, text: str) -> HaltRule:
        raw = text
        text = text.strip().lower().replace(" ", "")
        text = _LEGACY.get(text, text)
        if text == "never":
            return cls()
        if text in ("soon", "now"):
            return cls(text, "fail", 1)  # type: ignore[arg-type]
        m = _RULE.match(text)
        if m is None:
            raise HaltRuleError(
                f"bad halt rule {raw!r}: expected never, now, soon, or WHEN,METRIC=N[%] with WHEN "
                "now|soon and METRIC fail|success|done, e.g. now,fail=3 or soon,fail=20%")
        value = float(m["value"])
        if m["pct"]:
            if not 0 < value <= 100:
                raise HaltRuleError(f"bad halt rule {raw!r}: a percentage must be above 0 and at most 100")
            return cls(m["when"], m["metric"], None, value)  # type: ignore[arg-type]
        if value != int(value) or value < 1:
            raise HaltRuleError(f"bad halt rule {raw!r}: a count must be a whole number >= 1")
        return cls(m["when"], m["metric"], int(value), None)  # type: ignore[arg-type]

    def __str__(self) -> str:
        if self.when == "never":
            return "never"
        amount = f"{self.count}" if self.percent is None else f"{self.percent:g}%"
        return f"{self.when},{self.metric}={amount}"

    def should_halt(self, done: int, failed: int, total: int | None = None) -> When | None:
        """None to carry on, else "soon" or "now". `done` counts finished tests, failed ones too."""
        if failed < 0 or done < failed:
            raise ValueError(f"need 0 <= failed <= done, got done={done} failed={failed}")
        if self.when == "never":
            return None
        value = {"fail": failed, "success": done - failed, "done": done}[self.metric]
        if self.count is not None:
            hit = value >= self.count
        elif self.metric == "done":
            hit = bool(total) and value * 100 >= self.percent * total  # type: ignore[operator]
        else:
            hit = done >= MIN_DONE_FOR_PERCENT and value * 100 >= self.percent * done  # type: ignore[operator]
        return self.when if hit else None

    def to_json(self) -> str:
        return str(self)


NEVER = HaltRule()


def halt_reason(rule: HaltRule, done: int, failed: int) -> str:
    """The sentence a report shows when `rule` stopped a run."""
    how = ("cancelled the running tests" if rule.when == "now"
           else "let the running tests finish, started no more")
    return f"--halt {rule}: {failed} of {done} finished tests failed; {how}"


def pass_rate_text(f: Flakiness) -> str:
    rate = f.pass_rate
    return "-" if rate is None else f"{rate * 100:.0f}%"


__all__ = ["Flakiness", "HaltRule", "HaltRuleError", "MIN_DONE_FOR_PERCENT", "NEVER", "Outcome",
           "Stability", "classify", "classify_many", "halt_reason", "outcome_of", "pass_rate_text",
           "settled"]
