"""The values the run history hands out: a run, one attempt's row, a test's key, the error.

Why frozen values apart from the store: the comparison code (stress.history.compare) and the
command line (stress.history.cli) work on these without a database connection, and tests can
build them by hand.

Imports nothing of the harness; must not import the store, the comparisons or the CLI.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple


class HistoryError(Exception):
    """The history file cannot be used (not a database, newer schema, unknown run)."""


class HistoryKey(NamedTuple):
    """Which test a history row belongs to: test ids are unique only within their suite."""

    suite: str
    test_id: str

    def __str__(self) -> str:
        return f"{self.suite}/{self.test_id}"


def suite_key(suites: Iterable[str]) -> str:
    """The stored form of a run's suite set (sorted, unique, JSON): runs compare only with runs of
    exactly the same suites."""
    names = sorted({str(s) for s in suites})
    if not names:
        raise ValueError("a run needs at least one suite name")
    return json.dumps(names)


@dataclass(frozen=True)
class RunInfo:
    """One recorded run, with the counts of its attempts that passed and failed."""

    run_id: str
    started: float
    ended: float | None
    suites: list[str]
    host: str | None = None
    cores: int | None = None
    load_start: float | None = None
    load_end: float | None = None
    model_mode: str | None = None
    versions: dict[str, Any] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)
    exit_code: int | None = None
    attempts: int = 0
    passed: int = 0
    failed: int = 0

    @property
    def duration(self) -> float | None:
        return None if self.ended is None else self.ended - self.started

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (
            "run_id", "started", "ended", "suites", "host", "cores", "load_start", "load_end",
            "model_mode", "versions", "argv", "exit_code", "attempts", "passed", "failed")}


@dataclass(frozen=True)
class ResultRow:
    """One attempt of one test in one run, as stored (`passed` None: the attempt did not run)."""

    run_id: str
    suite: str
    test_id: str
    attempt: int
    passed: bool | None
    reason: str | None = None
    duration: float | None = None
    server: str | None = None
    output_bytes: int | None = None
    cost_usd: float | None = None
    tokens: int | None = None
    load1: float | None = None
    timeout_used: float | None = None
    required: int | None = None
    """Passes the test needed in that run (its pass threshold); None: every attempt that ran."""
    started: float | None = None
    """The run's start (Unix time), filled in by queries that join runs."""

    @property
    def key(self) -> HistoryKey:
        return HistoryKey(self.suite, self.test_id)
