"""What a harness run reads from and writes to the history database (`stress.history`).

Owns: opening the database for a run (`--history-db`, `--baseline`, `--no-history`), giving
each planned test its history median and, with `--learned-timeouts`, its learned limit;
recording the finished run and comparing it with the previous run of the same suites and with
`--baseline` (report.json's `history` section), and the one-line summary printed after a run.

Why apart from the session: reading the history happens before anything starts (a bad
`--baseline` is a usage error, exit 2) and recording after everything stopped; neither needs a
service, and a history problem must never cost the run its report.

Must not import `stress.cli`, `stress.session` or `stress.history.cli`.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

from cc_executor.timing import learned_timeout
from stress.argtypes import UsageError, parse_percent
from stress.history import History, HistoryError
from stress.history.trends import trend_for
from stress.report.results import RunResult
from stress.run.runner import Planned
from stress.suite import Suite


def open_history(ns: argparse.Namespace) -> History | None:
    """The history database (created if missing), or None with --no-history; UsageError if the
    file cannot be used or --baseline names a run it does not hold."""
    if ns.no_history:
        return None
    path = Path(ns.history_db) if ns.history_db else Path(ns.out) / "history.sqlite3"
    try:
        history = History(path)
    except HistoryError as e:
        raise UsageError(f"--history-db: {e}") from None
    if ns.baseline:
        try:
            history.run(ns.baseline)
        except HistoryError as e:
            history.close()
            raise UsageError(f"--baseline: {e}") from None
    return history


def apply_history(plan: list[Planned], history: History | None, ns: argparse.Namespace) -> list[Planned]:
    """Each test's history median (for longest-first dealing) and, with --learned-timeouts, its
    learned limit: PCT% of the median, at least --learned-floor, never above the configured one."""
    if history is None:
        return plan
    medians: dict[tuple[str, str], float] = {}
    for suite in dict.fromkeys(p.suite for p in plan):
        ids = [p.test.id for p in plan if p.suite == suite]
        for tid, m in history.median_durations(ids, suite=suite).items():
            medians[(suite, tid)] = m
    percent = parse_percent(ns.learned_timeouts, "--learned-timeouts") if ns.learned_timeouts else None
    out = []
    for p in plan:
        median = medians.get((p.suite, p.test.id))
        p = replace(p, median=median)
        if percent is not None and median is not None:
            limit = learned_timeout([median], percent, p.test.timeout, ns.learned_floor)
            if limit is not None:
                info = {"percent": percent, "median": round(median, 4), "learned": round(limit, 4),
                        "configured": p.test.timeout, "floor": ns.learned_floor,
                        "capped": limit >= p.test.timeout}
                p = replace(p, test=replace(p.test, timeout=limit), learned_timeout=info)
        out.append(p)
    return out


def record_history(history: History, run: RunResult, suites: list[Suite], ns: argparse.Namespace
                   ) -> dict[str, Any]:
    """Store the run (every attempt, with its server) and compare it with the previous run of
    the same suites and with --baseline. An interrupted run is stored without an end time, so it
    is never anyone's baseline."""
    info: dict[str, Any] = {"path": str(history.path), "recorded": False, "error": None,
                            "comparisons": [], "suite_ratios": [], "learned_timeouts": None}
    threshold = parse_percent(ns.duration_threshold, "--duration-threshold") / 100
    try:
        _store(history, run, suites)
        info["recorded"] = True
        # Filled in place: what was found before a failure stays in the report, with the error.
        _compare(history, run, ns, threshold, info["comparisons"])
        _suite_ratios(history, suites, info["suite_ratios"])
        info["trend"] = trend_for(history, [s.name for s in suites])
    except Exception as e:  # noqa: BLE001 - a history problem must never cost the run its report
        info["error"] = f"{type(e).__name__}: {e}"
    if ns.learned_timeouts:
        info["learned_timeouts"] = {
            "percent": parse_percent(ns.learned_timeouts, "--learned-timeouts"),
            "floor": ns.learned_floor,
            "tests": sum(1 for o in run.outcomes if o.learned_timeout)}
    info["duration_threshold"] = threshold
    info["duration_min"] = ns.duration_min
    return info


def _store(history: History, run: RunResult, suites: list[Suite]) -> None:
    """The run's row and one row per attempt, each with the server that ran it."""
    env = run.environment
    servers = {(o.suite, o.id, a.attempt): a.server for o in run.outcomes for a in o.attempts}
    history.record_run(
        run.run_id, started=run.started_at, suites=[s.name for s in suites],
        ended=None if run.interrupted else run.finished_at, host=env.get("hostname"),
        cores=env.get("cores"), load_start=(env.get("load_start") or {}).get("load1"),
        load_end=(env.get("load_end") or {}).get("load1"), model_mode=env.get("model_effective") or env.get("model_mode"),
        versions={"cc_executor": env.get("cc_executor"), "service": env.get("cc_executor_service"),
                  "claude": env.get("claude"), "python": env.get("python")},
        argv=run.argv, exit_code=run.exit_code)
    history.record_outcomes(run.run_id, run.outcomes,
                            server_for=lambda suite, tid, n: servers.get((suite, tid, n)))


def _compare(history: History, run: RunResult, ns: argparse.Namespace, threshold: float,
             out: list[dict[str, Any]]) -> None:
    """Append to `out` the run against the previous run of the same suites and against
    --baseline (one entry when they are the same run)."""
    previous = history.baseline(run.run_id)
    chosen = history.run(ns.baseline) if ns.baseline else None
    against: list[tuple[str, Any]] = []
    if previous is not None:
        against.append(("previous", previous))
    if chosen is not None:
        if previous is not None and chosen.run_id == previous.run_id:
            against[0] = ("previous and baseline", previous)
        elif chosen.run_id != run.run_id:
            against.append(("baseline", chosen))
    for label, other in against:
        c = history.compare(run.run_id, other.run_id, threshold, ns.duration_min)
        out.append({"against": label, "started": other.started, "exit_code": other.exit_code,
                    **c.to_json(), "lines": c.lines()})


def _suite_ratios(history: History, suites: list[Suite], out: list[dict[str, Any]]) -> None:
    """Append to `out` each suite's cumulative passes:failures over every recorded run, then
    all suites' together."""
    for name in dict.fromkeys([*(s.name for s in suites), None]):
        r = history.suite_ratio(name)
        out.append({
            "suite": name, "passes": r.passes, "failures": r.failures,
            "ratio": None if r.ratio == float("inf") else round(r.ratio, 4), "text": r.text(),
            "graduated": r.graduated})


def history_line(info: dict[str, Any]) -> str | None:
    """The line printed after the report path: what the comparisons found, or why the run was
    not recorded."""
    if info.get("error"):
        return f"history: not recorded: {info['error']}"
    parts = []
    for c in info.get("comparisons") or []:
        extra = "".join(f", {len(c[k])} {what}" for k, what in (("lost", "lost or not run"),
                                                                   ("flaky", "flaky (passed)"))
                        if c.get(k))
        parts.append(f"against {c['against']} run {c['baseline_id']}: {len(c['new_failures'])} new "
                     f"failure(s){extra}, {len(c['fixed'])} fixed, {len(c['slower'])} slower, "
                     f"{len(c['faster'])} faster")
    if not parts:
        parts.append("no earlier run of these suites to compare with")
    return f"history ({info['path']}): " + "; ".join(parts)
