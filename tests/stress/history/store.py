"""The run history's SQLite file: open (and migrate) it, write runs and results, query them.

Why SQLite (stdlib `sqlite3`), not a JSON file per run: several harness processes (one per
server, or a CI matrix on one host) may finish at the same time, and "what did this test take over
its last 20 runs?" is a query, not a directory walk. WAL mode lets readers work while a writer
commits; every write is one short `BEGIN IMMEDIATE` transaction and waits (busy timeout) instead
of failing when another process holds the lock.

The schema is stress.history.schema; what a comparison or a baseline means is
stress.history.compare, what graduation means stress.history.graduation: this module only runs
the SQL and hands their functions the rows. Imports those and stress.history.records; must not
import stress.history (the facade that re-exports this) or stress.history.cli.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stress.history.compare import (
    BASELINE_WINDOW,
    Comparison,
    check_thresholds,
    compare_results,
    pick_baseline,
)
from stress.history.graduation import SuiteRatio, make_ratio
from stress.history.records import (
    HistoryError,
    HistoryKey,
    ResultRow,
    RunInfo,
    suite_key,
)
from stress.history.schema import MIGRATIONS, RESULT_COLUMNS
from stress.run.instances import total_cost

DEFAULT_PATH = Path("reports/history.sqlite3")
BUSY_TIMEOUT_MS = 30_000
DEFAULT_TREND_LIMIT = 20
MEDIAN_WINDOW = 20
"""median_durations looks at a test's most recent passed attempts, at most this many."""

_RUNS_SQL = """
        SELECT runs.*, count(results.passed) AS n_attempts,
               coalesce(sum(results.passed = 1), 0) AS n_passed,
               coalesce(sum(results.passed = 0), 0) AS n_failed
        FROM runs LEFT JOIN results USING (run_id)"""
"""Runs with the counts of their attempts; callers add WHERE, GROUP BY runs.run_id, ORDER BY."""

_UPSERT_RUN_SQL = """
                INSERT INTO runs (run_id, started, ended, suites, host, cores, load_start, load_end,
                                  model_mode, versions, argv, exit_code)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (run_id) DO UPDATE SET
                    started = excluded.started, suites = excluded.suites,
                    ended = coalesce(excluded.ended, ended), host = coalesce(excluded.host, host),
                    cores = coalesce(excluded.cores, cores),
                    load_start = coalesce(excluded.load_start, load_start),
                    load_end = coalesce(excluded.load_end, load_end),
                    model_mode = coalesce(excluded.model_mode, model_mode),
                    versions = coalesce(excluded.versions, versions),
                    argv = coalesce(excluded.argv, argv),
                    exit_code = coalesce(excluded.exit_code, exit_code)"""
"""Insert a run, or update it keeping stored values where the new ones are NULL."""

_INSERT_RESULTS_SQL = """
                INSERT OR REPLACE INTO results (run_id, suite, test_id, attempt, passed, reason,
                    duration, server, output_bytes, cost_usd, tokens, load1, timeout_used,
                    required, recorded)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""


class History:
    """One history file. Safe to use from several processes at once; one object per thread."""

    MIGRATIONS = MIGRATIONS
    _RUNS_SQL = _RUNS_SQL

    def __init__(self, path: str | Path = DEFAULT_PATH, *, create: bool = True,
                 busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise HistoryError(f"history path {self.path} is a directory; give a file path")
        if not self.path.exists():
            if not create:
                raise HistoryError(f"no history database at {self.path}")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(self.path, timeout=busy_timeout_ms / 1000,
                                       isolation_level=None, check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            self._enter_wal_mode(busy_timeout_ms / 1000)
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.DatabaseError as e:
            self.close()
            raise HistoryError(f"cannot use {self.path} as a history database: {e}") from None

    # ---- plumbing ------------------------------------------------------------------------

    def close(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()
            self._db = None  # type: ignore[assignment]

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _enter_wal_mode(self, patience: float) -> None:
        """Switch a new file to WAL, retrying: the switch can fail at once with "database is locked".

        SQLite does not call the busy handler when a connection holding a shared lock would have
        to wait for another that wants the exclusive one (that wait could deadlock), so two
        processes creating the same file can see SQLITE_BUSY here despite the busy timeout. The
        mode is persistent: once any process has switched the file, this is a read.
        """
        deadline = time.monotonic() + patience
        delay = 0.005
        while True:
            try:
                self._db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _migrate(self) -> None:
        want = len(self.MIGRATIONS)
        have = self.schema_version
        if have > want:
            raise HistoryError(f"{self.path} has history schema version {have}, newer than this "
                               f"code knows ({want}); use a newer cc_executor or another --history-db")
        if have == want:
            return
        with self._write() as db:
            have = db.execute("PRAGMA user_version").fetchone()[0]  # another process may have won
            for step in self.MIGRATIONS[have:want]:
                step(db)
            db.execute(f"PRAGMA user_version = {want}")

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._db.execute(sql, params)
            cols = [d[0] for d in cur.description or ()]
            return [dict(zip(cols, row)) for row in cur.fetchall()]

    # ---- writing -------------------------------------------------------------------------

    def record_run(self, run_id: str, *, started: float, suites: Iterable[str],
                   ended: float | None = None, host: str | None = None, cores: int | None = None,
                   load_start: float | None = None, load_end: float | None = None,
                   model_mode: str | None = None, versions: Mapping[str, Any] | None = None,
                   argv: Sequence[str] | None = None, exit_code: int | None = None) -> None:
        """Insert a run, or update it: fields given as None keep their stored value."""
        if not run_id:
            raise ValueError("run_id must be a non-empty string")
        row = (run_id, float(started), ended, suite_key(suites), host, cores, load_start, load_end,
               model_mode, None if versions is None else json.dumps(dict(versions), sort_keys=True),
               None if argv is None else json.dumps(list(argv)), exit_code)
        with self._write() as db:
            db.execute(_UPSERT_RUN_SQL, row)

    def finish_run(self, run_id: str, *, ended: float | None = None, load_end: float | None = None,
                   exit_code: int | None = None) -> None:
        with self._write() as db:
            cur = db.execute("UPDATE runs SET ended = ?, load_end = coalesce(?, load_end), "
                             "exit_code = coalesce(?, exit_code) WHERE run_id = ?",
                             (time.time() if ended is None else ended, load_end, exit_code, run_id))
            if cur.rowcount == 0:
                raise HistoryError(f"no run {run_id!r} in {self.path}")

    def record_result(self, run_id: str, *, suite: str, test_id: str, passed: bool | None,
                      attempt: int = 1, reason: str | None = None, duration: float | None = None,
                      server: str | None = None, output_bytes: int | None = None,
                      cost_usd: float | None = None, tokens: int | None = None,
                      load1: float | None = None, timeout_used: float | None = None,
                      required: int | None = None) -> None:
        self.record_results(run_id, [dict(
            suite=suite, test_id=test_id, passed=passed, attempt=attempt, reason=reason,
            duration=duration, server=server, output_bytes=output_bytes, cost_usd=cost_usd,
            tokens=tokens, load1=load1, timeout_used=timeout_used, required=required)])

    def record_results(self, run_id: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Many results in one transaction (what a harness should do at the end of a run)."""
        now = time.time()
        values = [_result_values(run_id, r, now) for r in rows]
        with self._write() as db:
            if db.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is None:
                raise HistoryError(f"record_run({run_id!r}, ...) first: no such run in {self.path}")
            db.executemany(_INSERT_RESULTS_SQL, values)
        return len(values)

    def record_outcomes(self, run_id: str, outcomes: Iterable[Any],
                        server_for: Callable[[str, str, int], str | None] | None = None) -> int:
        """Record the harness's `Outcome`s (stress.report.results): one row per attempt.

        `server_for(suite, test_id, attempt)` names the server an attempt ran on (multi-server
        runs); skipped attempts are stored with passed NULL so the report can show them, and are
        never counted in ratios or medians. Each row keeps the passes the test needed
        (`o.required`, when any attempt ran); an attempt with instances costs what all its
        instances cost, not only the winner.
        """
        return self.record_results(run_id, outcome_rows(outcomes, server_for))

    # ---- reading -------------------------------------------------------------------------

    def runs(self, limit: int | None = 20) -> list[RunInfo]:
        """Newest first."""
        sql = _RUNS_SQL + " GROUP BY runs.run_id ORDER BY runs.started DESC, runs.rowid DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_run_from(r) for r in self._query(sql)]

    def run(self, run_id: str) -> RunInfo:
        rows = self._query(_RUNS_SQL + " WHERE runs.run_id = ? GROUP BY runs.run_id", (run_id,))
        if not rows:
            raise HistoryError(f"no run {run_id!r} in {self.path}")
        return _run_from(rows[0])

    def results(self, run_id: str) -> list[ResultRow]:
        self.run(run_id)  # clear error for an unknown id
        rows = self._query("SELECT results.*, runs.started FROM results JOIN runs USING (run_id) "
                           "WHERE run_id = ? ORDER BY suite, test_id, attempt", (run_id,))
        return [_row_from(r) for r in rows]

    def previous_run(self, suites: Iterable[str], *, before: str | None = None) -> RunInfo | None:
        """The newest finished run of exactly this suite set (started before run `before`)."""
        key = suite_key(suites)
        params: list[Any] = [key]
        where = "WHERE runs.suites = ? AND runs.ended IS NOT NULL"
        if before is not None:
            ref = self.run(before)
            where += " AND runs.run_id != ? AND (runs.started < ? OR (runs.started = ? AND runs.rowid < "\
                     "(SELECT rowid FROM runs WHERE run_id = ?)))"
            params += [before, ref.started, ref.started, before]
        rows = self._query(_RUNS_SQL + f" {where} GROUP BY runs.run_id "
                           "ORDER BY runs.started DESC, runs.rowid DESC LIMIT 1", params)
        return _run_from(rows[0]) if rows else None

    def _previous_runs(self, run_id: str, limit: int) -> list[RunInfo]:
        """Finished runs of `run_id`'s suite set that started before it, newest first."""
        ref = self.run(run_id)
        rows = self._query(
            _RUNS_SQL + " WHERE runs.suites = ? AND runs.ended IS NOT NULL AND runs.run_id != ? "
            "AND (runs.started < ? OR (runs.started = ? AND runs.rowid < "
            "(SELECT rowid FROM runs WHERE run_id = ?))) GROUP BY runs.run_id "
            f"ORDER BY runs.started DESC, runs.rowid DESC LIMIT {int(limit)}",
            [suite_key(ref.suites), run_id, ref.started, ref.started, run_id])
        return [_run_from(r) for r in rows]

    def _ran(self, run_ids: Sequence[str]) -> dict[str, dict[HistoryKey, bool]]:
        """Per run: each recorded test -> whether any of its attempts ran (passed or failed)."""
        out: dict[str, dict[HistoryKey, bool]] = {r: {} for r in run_ids}
        if not run_ids:
            return out
        marks = ",".join("?" * len(run_ids))
        for r in self._query("SELECT run_id, suite, test_id, max(passed IS NOT NULL) AS ran "
                             f"FROM results WHERE run_id IN ({marks}) GROUP BY run_id, suite, test_id",
                             list(run_ids)):
            out[r["run_id"]][HistoryKey(r["suite"], r["test_id"])] = bool(r["ran"])
        return out

    def baseline(self, run_id: str, window: int = BASELINE_WINDOW) -> RunInfo | None:
        """What `run_id` is compared with by default: among the last `window` finished runs of
        its suites, the newest that ran every test `run_id` ran (and recorded), else the one that
        left out fewest of them; a run that ran no test at all comes last (pick_baseline)."""
        cands = self._previous_runs(run_id, window)
        if not cands:
            return None
        return pick_baseline(run_id, cands, self._ran([run_id, *(c.run_id for c in cands)]))

    def _per_test(self, run_id: str) -> dict[HistoryKey, list[ResultRow]]:
        out: dict[HistoryKey, list[ResultRow]] = defaultdict(list)
        for r in self.results(run_id):
            out[r.key].append(r)
        return out

    def compare(self, run_id: str, other_run_id: str, duration_threshold: float = 0.25,
                min_seconds: float = 0.1) -> Comparison:
        """`run_id` (current) against `other_run_id` (the baseline); see `Comparison`."""
        check_thresholds(duration_threshold, min_seconds)
        return compare_results(run_id, other_run_id, self._per_test(run_id),
                               self._per_test(other_run_id), duration_threshold, min_seconds)

    def suite_ratio(self, suite: str | None = None) -> SuiteRatio:
        """Cumulative over all runs; `None` means every suite together."""
        sql = "SELECT coalesce(sum(passed = 1), 0) AS p, coalesce(sum(passed = 0), 0) AS f FROM results"
        rows = self._query(sql + (" WHERE suite = ?" if suite is not None else ""),
                           (suite,) if suite is not None else ())
        return make_ratio(rows[0]["p"], rows[0]["f"])

    def suite_ratios(self) -> dict[str, tuple[SuiteRatio, int]]:
        """Every suite: (ratio, number of runs it appeared in)."""
        rows = self._query("SELECT suite, coalesce(sum(passed = 1), 0) AS p, "
                           "coalesce(sum(passed = 0), 0) AS f, count(DISTINCT run_id) AS runs "
                           "FROM results GROUP BY suite ORDER BY suite")
        return {r["suite"]: (make_ratio(r["p"], r["f"]), r["runs"]) for r in rows}

    def trend(self, test_id: str, limit: int = DEFAULT_TREND_LIMIT,
              suite: str | None = None) -> list[ResultRow]:
        """The test's last `limit` attempts (that ran or not), oldest first."""
        where, params = "WHERE results.test_id = ?", [test_id]
        if suite is not None:
            where += " AND results.suite = ?"
            params.append(suite)
        rows = self._query(
            "SELECT results.*, runs.started FROM results JOIN runs USING (run_id) "
            f"{where} ORDER BY runs.started DESC, runs.rowid DESC, results.attempt DESC "
            f"LIMIT {int(limit)}", params)
        return [_row_from(r) for r in reversed(rows)]

    def median_durations(self, test_ids: Iterable[str], *, suite: str | None = None,
                         window: int = MEDIAN_WINDOW) -> dict[str, float]:
        """Median duration of each test's last `window` passed attempts; tests never passed are absent.

        For longest-first ordering and learned timeouts (`cc_executor.timing.learned_timeout`).
        Failed attempts are left out: a timeout would teach the limit, not the test's run time.
        """
        ids = list(dict.fromkeys(test_ids))
        found: dict[str, list[float]] = defaultdict(list)
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            params: list[Any] = list(chunk)
            extra = ""
            if suite is not None:
                extra, params = " AND results.suite = ?", params + [suite]
            rows = self._query(
                "SELECT results.test_id, results.duration FROM results JOIN runs USING (run_id) "
                f"WHERE results.test_id IN ({marks}) AND results.passed = 1 "
                f"AND results.duration IS NOT NULL{extra} "
                "ORDER BY runs.started DESC, runs.rowid DESC, results.attempt DESC", params)
            for r in rows:
                bucket = found[r["test_id"]]
                if len(bucket) < window:
                    bucket.append(r["duration"])
        return {t: statistics.median(d) for t, d in found.items() if d}


# ---------------------------------------------------------------------------------------------
# Rows in and out


def _result_values(run_id: str, r: Mapping[str, Any], recorded: float) -> tuple:
    """One result as the INSERT's parameters, after checking its fields (a typo in a field name
    or a `passed` of 1 instead of True must fail here, not be stored)."""
    unknown = set(r) - set(RESULT_COLUMNS)
    if unknown:
        raise ValueError(f"unknown result fields {sorted(unknown)}; known: {list(RESULT_COLUMNS[1:])}")
    for need in ("suite", "test_id"):
        if not r.get(need):
            raise ValueError(f"a result needs a non-empty {need!r}: {dict(r)}")
    passed = r.get("passed")
    if passed is not None and not isinstance(passed, bool):
        raise ValueError(f"passed must be True, False or None, got {passed!r}")
    required = r.get("required")
    if required is not None and (isinstance(required, bool) or not isinstance(required, int)
                                 or required < 0):
        raise ValueError(f"required must be a whole number >= 0 or None, got {required!r}")
    return (run_id, r["suite"], r["test_id"], int(r.get("attempt", 1)),
            None if passed is None else int(passed), r.get("reason"),
            r.get("duration"), r.get("server"), r.get("output_bytes"),
            r.get("cost_usd"), r.get("tokens"), r.get("load1"),
            r.get("timeout_used"), required, recorded)


def outcome_rows(outcomes: Iterable[Any],
                 server_for: Callable[[str, str, int], str | None] | None = None) -> list[dict[str, Any]]:
    """The rows `History.record_outcomes` stores: one per attempt of each `Outcome`."""
    rows = []
    for o in outcomes:
        required = int(o.required) if getattr(o, "runs", 0) and o.required else None
        for a in o.attempts:
            usage = ((a.claude or {}).get("usage") or {}) if a.claude else {}
            tokens = None
            if usage:
                tokens = int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0))
            cost = (a.claude or {}).get("total_cost_usd") if a.claude else None
            if a.instances:
                cost = total_cost(a.instances)
            rows.append(dict(
                suite=o.suite, test_id=o.id, attempt=a.attempt,
                passed={"passed": True, "failed": False}.get(a.status),
                reason=a.reason, duration=a.duration if a.status != "skipped" else None,
                server=server_for(o.suite, o.id, a.attempt) if server_for else None,
                output_bytes=a.stdout_bytes + a.stderr_bytes, cost_usd=cost,
                tokens=tokens, load1=a.load1, timeout_used=a.timeout, required=required))
    return rows


def _run_from(r: Mapping[str, Any]) -> RunInfo:
    return RunInfo(
        run_id=r["run_id"], started=r["started"], ended=r["ended"],
        suites=json.loads(r["suites"]), host=r["host"], cores=r["cores"],
        load_start=r["load_start"], load_end=r["load_end"], model_mode=r["model_mode"],
        versions=json.loads(r["versions"]) if r["versions"] else {},
        argv=json.loads(r["argv"]) if r["argv"] else [], exit_code=r["exit_code"],
        attempts=r.get("n_attempts") or 0, passed=r.get("n_passed") or 0,
        failed=r.get("n_failed") or 0)


def _row_from(r: Mapping[str, Any]) -> ResultRow:
    return ResultRow(
        run_id=r["run_id"], suite=r["suite"], test_id=r["test_id"], attempt=r["attempt"],
        passed=None if r["passed"] is None else bool(r["passed"]), reason=r["reason"],
        duration=r["duration"], server=r["server"], output_bytes=r["output_bytes"],
        cost_usd=r["cost_usd"], tokens=r["tokens"], load1=r["load1"],
        timeout_used=r["timeout_used"], required=r.get("required"), started=r.get("started"))
