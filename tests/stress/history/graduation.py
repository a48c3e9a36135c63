"""Graduation: a suite's cumulative passes : failures, and whether it reached 10:1.

Seed 004 "graduated" a runner at a 10:1 success ratio. Here it is counted over attempts (one row
per attempt) in every recorded run, skipped and lost attempts not counted. A suite graduates when
passes >= 10 x failures AND passes >= 10, so a single lucky pass with no failures does not; the
same rule as `stress.report.results.Ratio.graduates` for one run.

Imports `stress.report.results` (for the thresholds) only; the store does the counting queries.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from stress.report.results import GRADUATION_RATIO, MIN_GRADUATION_PASSES

__all__ = ["GRADUATION_RATIO", "MIN_GRADUATION_PASSES", "SuiteRatio", "make_ratio"]


class SuiteRatio(NamedTuple):
    """Cumulative passes:failures over every recorded attempt; `graduated` at 10:1 (see module doc)."""

    passes: int
    failures: int
    ratio: float
    graduated: bool

    def text(self) -> str:
        """`passes:failures` as counted, the one format of stress.report.results.Ratio.text."""
        return f"{self.passes}:{self.failures}"


def make_ratio(passes: int, failures: int) -> SuiteRatio:
    """The ratio of `passes` to `failures` (inf with no failures, 0 with neither), graded."""
    if failures == 0:
        ratio = math.inf if passes else 0.0
    else:
        ratio = passes / failures
    graduated = passes >= MIN_GRADUATION_PASSES and passes >= GRADUATION_RATIO * failures
    return SuiteRatio(passes, failures, ratio, graduated)
