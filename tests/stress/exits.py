"""The exit statuses of `python -m stress.local|complex`, and the one function that picks one.

Owns: EXIT_OK / EXIT_FAILED / EXIT_USAGE / EXIT_PREFLIGHT / EXIT_SIGNAL,
`EarlyStop` (why a run stopped before its tests ran) and `exit_status`.

Why a marker, not the message: the run's `error` is text for people ("preflight: the service at
... refused the token"); deciding the exit status from it (`startswith("preflight:")`) meant a
reworded message could silently turn exit 3 into exit 1. The session records *which* early stop
happened as an `EarlyStop`, and only that decides the status.

Must not import `stress.cli` or `stress.session` (they import this module).
"""

from __future__ import annotations

import enum

from stress.report.results import Totals

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_PREFLIGHT = 3
"""A preflight check failed (stress.service.preflight): no test was run."""
EXIT_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_PREFLIGHT", "EXIT_SIGNAL", "EXIT_USAGE", "EarlyStop",
           "exit_status"]


class EarlyStop(enum.Enum):
    """Why a run stopped before any test ran (a signal is not one: see `exit_status`)."""

    SERVICE = "service"
    """A service could not be started or reached: our side's failure, exit 1."""
    PREFLIGHT = "preflight"
    """No --server accepted its token, or the Claude preflight failed: exit 3."""

    @property
    def exit_status(self) -> int:
        return EXIT_PREFLIGHT if self is EarlyStop.PREFLIGHT else EXIT_FAILED


def exit_status(interrupted: str | None, early_stop: EarlyStop | None, totals: Totals) -> int:
    """The run's exit status: a signal wins (130 SIGINT, 143 SIGTERM), then an early stop, then
    the tests: 0 when at least one passed and none failed or was lost, else 1."""
    if interrupted:
        return EXIT_SIGNAL.get(interrupted, 130)
    if early_stop is not None:
        return early_stop.exit_status
    return EXIT_OK if totals.failed == 0 and totals.lost == 0 and totals.passed > 0 else EXIT_FAILED
