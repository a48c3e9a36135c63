"""Recorded runs as plain rows for charts: the HTML report's trend chart and the history page.

Why plain dicts: the report is drawn from report.json's values (a report can be re-rendered
without the SQLite file), so the history hands the report rows, not its record types.

Imports `stress.history.records` only (and the store through the caller's `History`).
"""

from __future__ import annotations

from typing import Any

from stress.history.records import RunInfo

TREND_RUNS = 30
"""The report's trend chart shows at most this many recent runs of the same suites."""


def run_row(r: RunInfo) -> dict[str, Any]:
    """One run for a chart: counts of attempts that passed and failed, its duration."""
    return {"run_id": r.run_id, "started": r.started, "passes": r.passed, "failures": r.failed,
            "duration": None if r.duration is None else round(r.duration, 3),
            "suites": list(r.suites), "model_mode": r.model_mode, "exit_code": r.exit_code,
            "interrupted": r.ended is None}


def trend_for(history: Any, suites: list[str], limit: int = TREND_RUNS) -> list[dict[str, Any]]:
    """The newest `limit` runs of exactly these suites, oldest first (the run itself included)."""
    want = sorted(suites)
    rows = [r for r in history.runs(None) if sorted(r.suites) == want][:limit]
    return [run_row(r) for r in reversed(rows)]


__all__ = ["TREND_RUNS", "run_row", "trend_for"]
