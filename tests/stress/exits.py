"""The exit statuses of `python -m stress.local|complex`, and the one function that picks one.

Owns: EXIT_OK / EXIT_FAILED / EXIT_USAGE / EXIT_PREFLIGHT / EXIT_THRESHOLD / EXIT_SIGNAL,
`EarlyStop` (why a run stopped before its tests ran) and `exit_status`.

Precedence, highest first: a signal (130 SIGINT, 143 SIGTERM); 2 bad usage (decided before a run
exists, by stress.cli); 3 could not run (preflight) and 1 the service could not be started (an
`EarlyStop`); 99 a threshold crossed (k6's code: a `ThresholdResult` whose `passed` is false, or
a capacity search whose first step did not hold); 1 a test failed or was lost, or nothing ran;
0 all good. A capacity search that found its limit exits 0 although the step that broke had
failures: failing there is what the search looks for, and its error criterion judged them.

Why a marker, not the message: the run's `error` is text for people ("preflight: the service at
... refused the token"); deciding the exit status from it (`startswith("preflight:")`) meant a
reworded message could silently turn exit 3 into exit 1. The session records *which* early stop
happened as an `EarlyStop`, and only that decides the status.

Must not import `stress.cli` or `stress.session` (they import this module).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from stress.report.results import Capacity, ThresholdResult, Totals

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_PREFLIGHT = 3
"""A preflight check failed (stress.service.preflight): no test was run."""
EXIT_THRESHOLD = 99
"""A --threshold was crossed (k6's exit code for it)."""
EXIT_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_PREFLIGHT", "EXIT_SIGNAL", "EXIT_THRESHOLD",
           "EXIT_USAGE", "EarlyStop", "exit_status"]


class EarlyStop(enum.Enum):
    """Why a run stopped before any test ran (a signal is not one: see `exit_status`)."""

    SERVICE = "service"
    """A service could not be started or reached: our side's failure, exit 1."""
    PREFLIGHT = "preflight"
    """No --server accepted its token, or the Claude preflight failed: exit 3."""

    @property
    def exit_status(self) -> int:
        return EXIT_PREFLIGHT if self is EarlyStop.PREFLIGHT else EXIT_FAILED


def exit_status(interrupted: str | None, early_stop: EarlyStop | None, totals: Totals, *,
                thresholds: Sequence[ThresholdResult] = (),
                capacity: Capacity | None = None) -> int:
    """The run's exit status: a signal wins (130 SIGINT, 143 SIGTERM), then an early stop, then
    a crossed threshold (99), then the tests: 0 when at least one passed and none failed or was
    lost, else 1. A capacity search: 99 when no step held, else 0 once something ran."""
    if interrupted:
        return EXIT_SIGNAL.get(interrupted, 130)
    if early_stop is not None:
        return early_stop.exit_status
    if capacity is not None:
        if capacity.crossed:
            return EXIT_THRESHOLD
        return EXIT_OK if totals.attempts_passed + totals.attempts_failed > 0 else EXIT_FAILED
    if any(not t.passed for t in thresholds):
        return EXIT_THRESHOLD
    return EXIT_OK if totals.failed == 0 and totals.lost == 0 and totals.passed > 0 else EXIT_FAILED
