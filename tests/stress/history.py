"""Every run's results in one SQLite file, so runs can be compared and a suite can graduate.

Why SQLite (stdlib `sqlite3`), not a JSON file per run: several harness processes (one per
server, or a CI matrix on one host) may finish at the same time, and "what did this test take over
its last 20 runs?" is a query, not a directory walk. WAL mode lets readers work while a writer
commits; every write is one short `BEGIN IMMEDIATE` transaction and waits (busy timeout) instead
of failing when another process holds the lock.

Why a schema version (`PRAGMA user_version`) and a migration list: the file outlives the code that
wrote it. Opening runs every missing migration in one transaction; a file newer than this code is
refused with a clear error instead of being misread.

Graduation (seed 004 "graduated" a runner at a 10:1 success ratio): counted over attempts (one row
per test execution) in every recorded run, skipped/lost attempts not counted. A suite graduates
when passes >= 10 x failures AND passes >= 10, so a single lucky pass with no failures does not.

Why each row carries `required` (schema 2): a test with a pass threshold (2 of 3) passed with one
failed attempt; compared as "every attempt must pass" it would be a new failure. Rows written
before schema 2 have NULL there and keep that stricter reading.

Why the automatic baseline is not simply the newest run: a run whose server died (27 of 30 tests
lost) compares as "no changes" and would then be the next run's baseline. `baseline()` takes the
newest recent run that ran every test the run being compared ran, else the one missing fewest.
"""

from __future__ import annotations

import json
import math
import sqlite3
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from .flaky import Flakiness, Stability, classify
from .instances import total_cost
from .results import GRADUATION_RATIO, MIN_GRADUATION_PASSES
from .verdict import ALL_REPEATS, PassThreshold

DEFAULT_PATH = Path("reports/history.sqlite3")
BUSY_TIMEOUT_MS = 30_000
DEFAULT_TREND_LIMIT = 20
MEDIAN_WINDOW = 20
"""median_durations looks at a test's most recent passed attempts, at most this many."""
BASELINE_WINDOW = 20
"""baseline() chooses among this many most recent finished runs of the same suites."""


class HistoryError(Exception):
    """The history file cannot be used (not a database, newer schema, unknown run)."""


# ---------------------------------------------------------------------------------------------
# Schema and migrations


def _migrate_1(db: sqlite3.Connection) -> None:
    db.execute("""
        CREATE TABLE runs (
            run_id      TEXT PRIMARY KEY,
            started     REAL NOT NULL,
            ended       REAL,
            suites      TEXT NOT NULL,      -- JSON list, sorted, unique
            host        TEXT,
            cores       INTEGER,
            load_start  REAL,
            load_end    REAL,
            model_mode  TEXT,
            versions    TEXT,               -- JSON object
            argv        TEXT,               -- JSON list
            exit_code   INTEGER
        )""")
    db.execute("CREATE INDEX runs_by_suites ON runs (suites, started)")
    db.execute("""
        CREATE TABLE results (
            run_id        TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            suite         TEXT NOT NULL,
            test_id       TEXT NOT NULL,
            attempt       INTEGER NOT NULL DEFAULT 1,
            server        TEXT,
            passed        INTEGER,          -- 1 passed, 0 failed, NULL did not run
            reason        TEXT,
            duration      REAL,
            output_bytes  INTEGER,
            cost_usd      REAL,
            tokens        INTEGER,
            load1         REAL,
            timeout_used  REAL,
            recorded      REAL NOT NULL,
            PRIMARY KEY (run_id, suite, test_id, attempt)
        )""")
    db.execute("CREATE INDEX results_by_test ON results (test_id, suite)")
    db.execute("CREATE INDEX results_by_suite ON results (suite)")


def _migrate_2(db: sqlite3.Connection) -> None:
    # The passes the test needed in that run (its pass threshold applied to the attempts that
    # ran); the same on each of its rows. NULL: every attempt that ran had to pass.
    db.execute("ALTER TABLE results ADD COLUMN required INTEGER")


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_migrate_1, _migrate_2)
"""MIGRATIONS[i] takes a database from schema version i to i + 1. Append, never edit."""


# ---------------------------------------------------------------------------------------------
# Values


class TestKey(NamedTuple):
    __test__ = False  # not a pytest class

    suite: str
    test_id: str

    def __str__(self) -> str:
        return f"{self.suite}/{self.test_id}"


@dataclass(frozen=True)
class RunInfo:
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
    def key(self) -> TestKey:
        return TestKey(self.suite, self.test_id)


_RESULT_COLS = ("run_id", "suite", "test_id", "attempt", "passed", "reason", "duration", "server",
                "output_bytes", "cost_usd", "tokens", "load1", "timeout_used", "required")


class SuiteRatio(NamedTuple):
    """Cumulative passes:failures over every recorded attempt; `graduated` at 10:1 (see module doc)."""

    passes: int
    failures: int
    ratio: float
    graduated: bool

    def text(self) -> str:
        if self.failures == 0:
            return f"{self.passes}:0"
        return f"{self.ratio:.1f}:1"


def make_ratio(passes: int, failures: int) -> SuiteRatio:
    if failures == 0:
        ratio = math.inf if passes else 0.0
    else:
        ratio = passes / failures
    graduated = passes >= MIN_GRADUATION_PASSES and passes >= GRADUATION_RATIO * failures
    return SuiteRatio(passes, failures, ratio, graduated)


@dataclass(frozen=True)
class DurationChange:
    key: TestKey
    before: float
    after: float

    @property
    def delta(self) -> float:
        return self.after - self.before

    @property
    def relative(self) -> float:
        if self.before == 0:
            return math.inf if self.after else 0.0
        return self.delta / self.before

    def text(self) -> str:
        rel = "new" if math.isinf(self.relative) else f"{self.relative * 100:+.0f}%"
        return f"{self.key}: {self.before:.3g} s -> {self.after:.3g} s ({self.delta:+.3g} s, {rel})"

    def to_json(self) -> dict[str, Any]:
        rel = self.relative
        return {"suite": self.key.suite, "test_id": self.key.test_id, "before": self.before,
                "after": self.after, "delta": round(self.delta, 4),
                "relative": None if math.isinf(rel) else round(rel, 4)}


@dataclass(frozen=True)
class Comparison:
    """`run_id` measured against `baseline_id`.

    A test's state in one run is whether it met its pass threshold over the attempts that ran
    (`required`, stored per row; every attempt when unknown): new_failures met it in the baseline
    and not now; fixed is the reverse. `flaky` lists tests that met it now with some attempts
    failed (not failures; shown apart). `lost` lists tests that ran in the baseline and did not
    run now at all (lost with their server, skipped, halted): a regression, since the run no
    longer vouches for them. Durations compare the median of passed attempts, flagged when the
    change is at least `duration_threshold` relative AND at least `min_seconds` absolute.
    """

    run_id: str
    baseline_id: str
    new_failures: list[TestKey]
    fixed: list[TestKey]
    still_failing: list[TestKey]
    added: list[TestKey]
    removed: list[TestKey]
    slower: list[DurationChange]
    faster: list[DurationChange]
    stability: dict[TestKey, tuple[Flakiness | None, Flakiness | None]]
    """(baseline, current) per test key."""
    duration_threshold: float
    min_seconds: float
    lost: list[TestKey] = field(default_factory=list)
    flaky: list[TestKey] = field(default_factory=list)
    why_not_run: dict[TestKey, str] = field(default_factory=dict)
    """For `lost`: the current run's reasons, e.g. "lost" or "skipped"."""

    @property
    def regressed(self) -> bool:
        return bool(self.new_failures or self.lost or self.slower)

    def lines(self) -> list[str]:
        out = [f"{self.run_id} against baseline {self.baseline_id}:"]
        for title, keys in (("new failures", self.new_failures),
                            ("lost or not run", self.lost), ("fixed", self.fixed),
                            ("still failing", self.still_failing),
                            ("flaky, passed their threshold", self.flaky), ("added", self.added),
                            ("removed", self.removed)):
            if keys:
                shown = []
                for k in keys:
                    before, now = self.stability.get(k, (None, None))
                    if k in self.why_not_run and title.startswith("lost"):
                        was = "passed" if before is not None and before.passed else "failed"
                        shown.append(f"{k} [{self.why_not_run[k]}; {was} before]")
                    else:
                        shown.append(f"{k} [{now.text()}]" if now is not None and now.flaky else str(k))
                out.append(f"  {title} ({len(keys)}): " + ", ".join(shown))
        for title, changes in (("slower", self.slower), ("faster", self.faster)):
            for c in changes:
                out.append(f"  {title}: {c.text()}")
        if len(out) == 1:
            out.append("  no changes in outcomes or durations")
        return out

    def lost_detail(self) -> list[dict[str, Any]]:
        """Each lost test with why it did not run now and whether it met its threshold before."""
        out = []
        for k in self.lost:
            before = self.stability.get(k, (None, None))[0]
            out.append({"test": str(k), "now": self.why_not_run.get(k, "not run"),
                        "passed_before": bool(before is not None and before.passed)})
        return out

    def flaky_detail(self) -> list[dict[str, Any]]:
        """Each flaky pass with its attempts now: passes of runs, and the passes it needed."""
        out = []
        for k in self.flaky:
            now = self.stability.get(k, (None, None))[1]
            out.append({"test": str(k), "passes": now.passes if now else None,
                        "runs": now.runs if now else None, "required": now.required if now else None})
        return out

    def to_json(self) -> dict[str, Any]:
        keys = lambda ks: [str(k) for k in ks]  # noqa: E731
        return {"run_id": self.run_id, "baseline_id": self.baseline_id,
                "new_failures": keys(self.new_failures), "lost": keys(self.lost),
                "lost_detail": self.lost_detail(),
                "flaky": keys(self.flaky), "flaky_detail": self.flaky_detail(),
                "fixed": keys(self.fixed),
                "still_failing": keys(self.still_failing), "added": keys(self.added),
                "removed": keys(self.removed),
                "slower": [c.to_json() for c in self.slower],
                "faster": [c.to_json() for c in self.faster],
                "duration_threshold": self.duration_threshold, "min_seconds": self.min_seconds,
                "regressed": self.regressed}


# ---------------------------------------------------------------------------------------------
# The store


def suite_key(suites: Iterable[str]) -> str:
    names = sorted({str(s) for s in suites})
    if not names:
        raise ValueError("a run needs at least one suite name")
    return json.dumps(names)


class History:
    """One history file. Safe to use from several processes at once; one object per thread."""

    MIGRATIONS = MIGRATIONS

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
            db.execute("""
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
                    exit_code = coalesce(excluded.exit_code, exit_code)""", row)

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
        values = []
        for r in rows:
            unknown = set(r) - set(_RESULT_COLS)
            if unknown:
                raise ValueError(f"unknown result fields {sorted(unknown)}; known: {list(_RESULT_COLS[1:])}")
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
            values.append((run_id, r["suite"], r["test_id"], int(r.get("attempt", 1)),
                           None if passed is None else int(passed), r.get("reason"),
                           r.get("duration"), r.get("server"), r.get("output_bytes"),
                           r.get("cost_usd"), r.get("tokens"), r.get("load1"),
                           r.get("timeout_used"), required, now))
        with self._write() as db:
            if db.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is None:
                raise HistoryError(f"record_run({run_id!r}, ...) first: no such run in {self.path}")
            db.executemany("""
                INSERT OR REPLACE INTO results (run_id, suite, test_id, attempt, passed, reason,
                    duration, server, output_bytes, cost_usd, tokens, load1, timeout_used,
                    required, recorded)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""", values)
        return len(values)

    def record_outcomes(self, run_id: str, outcomes: Iterable[Any],
                        server_for: Callable[[str, str, int], str | None] | None = None) -> int:
        """Record the harness's `TestOutcome`s (stress.results): one row per attempt.

        `server_for(suite, test_id, attempt)` names the server an attempt ran on (multi-server
        runs); skipped attempts are stored with passed NULL so the report can show them, and are
        never counted in ratios or medians. Each row keeps the passes the test needed
        (`o.required`, when any attempt ran); an attempt with instances costs what all its
        instances cost, not only the winner.
        """
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
        return self.record_results(run_id, rows)

    # ---- reading -------------------------------------------------------------------------

    def _run_from(self, r: Mapping[str, Any]) -> RunInfo:
        return RunInfo(
            run_id=r["run_id"], started=r["started"], ended=r["ended"],
            suites=json.loads(r["suites"]), host=r["host"], cores=r["cores"],
            load_start=r["load_start"], load_end=r["load_end"], model_mode=r["model_mode"],
            versions=json.loads(r["versions"]) if r["versions"] else {},
            argv=json.loads(r["argv"]) if r["argv"] else [], exit_code=r["exit_code"],
            attempts=r.get("n_attempts") or 0, passed=r.get("n_passed") or 0,
            failed=r.get("n_failed") or 0)

    _RUNS_SQL = """
        SELECT runs.*, count(results.passed) AS n_attempts,
               coalesce(sum(results.passed = 1), 0) AS n_passed,
               coalesce(sum(results.passed = 0), 0) AS n_failed
        FROM runs LEFT JOIN results USING (run_id)"""

    def runs(self, limit: int | None = 20) -> list[RunInfo]:
        """Newest first."""
        sql = self._RUNS_SQL + " GROUP BY runs.run_id ORDER BY runs.started DESC, runs.rowid DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [self._run_from(r) for r in self._query(sql)]

    def run(self, run_id: str) -> RunInfo:
        rows = self._query(self._RUNS_SQL + " WHERE runs.run_id = ? GROUP BY runs.run_id", (run_id,))
        if not rows:
            raise HistoryError(f"no run {run_id!r} in {self.path}")
        return self._run_from(rows[0])

    def results(self, run_id: str) -> list[ResultRow]:
        self.run(run_id)  # clear error for an unknown id
        rows = self._query("SELECT results.*, runs.started FROM results JOIN runs USING (run_id) "
                           "WHERE run_id = ? ORDER BY suite, test_id, attempt", (run_id,))
        return [self._row(r) for r in rows]

    @staticmethod
    def _row(r: Mapping[str, Any]) -> ResultRow:
        return ResultRow(
            run_id=r["run_id"], suite=r["suite"], test_id=r["test_id"], attempt=r["attempt"],
            passed=None if r["passed"] is None else bool(r["passed"]), reason=r["reason"],
            duration=r["duration"], server=r["server"], output_bytes=r["output_bytes"],
            cost_usd=r["cost_usd"], tokens=r["tokens"], load1=r["load1"],
            timeout_used=r["timeout_used"], required=r.get("required"), started=r.get("started"))

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
        rows = self._query(self._RUNS_SQL + f" {where} GROUP BY runs.run_id "
                           "ORDER BY runs.started DESC, runs.rowid DESC LIMIT 1", params)
        return self._run_from(rows[0]) if rows else None

    def _previous_runs(self, run_id: str, limit: int) -> list[RunInfo]:
        """Finished runs of `run_id`'s suite set that started before it, newest first."""
        ref = self.run(run_id)
        rows = self._query(
            self._RUNS_SQL + " WHERE runs.suites = ? AND runs.ended IS NOT NULL AND runs.run_id != ? "
            "AND (runs.started < ? OR (runs.started = ? AND runs.rowid < "
            "(SELECT rowid FROM runs WHERE run_id = ?))) GROUP BY runs.run_id "
            f"ORDER BY runs.started DESC, runs.rowid DESC LIMIT {int(limit)}",
            [suite_key(ref.suites), run_id, ref.started, ref.started, run_id])
        return [self._run_from(r) for r in rows]

    def _ran(self, run_ids: Sequence[str]) -> dict[str, dict[TestKey, bool]]:
        """Per run: each recorded test -> whether any of its attempts ran (passed or failed)."""
        out: dict[str, dict[TestKey, bool]] = {r: {} for r in run_ids}
        if not run_ids:
            return out
        marks = ",".join("?" * len(run_ids))
        for r in self._query("SELECT run_id, suite, test_id, max(passed IS NOT NULL) AS ran "
                             f"FROM results WHERE run_id IN ({marks}) GROUP BY run_id, suite, test_id",
                             list(run_ids)):
            out[r["run_id"]][TestKey(r["suite"], r["test_id"])] = bool(r["ran"])
        return out

    def baseline(self, run_id: str, window: int = BASELINE_WINDOW) -> RunInfo | None:
        """What `run_id` is compared with by default: among the last `window` finished runs of
        its suites, the newest that ran every test `run_id` ran (and recorded), else the one that
        left out fewest of them; a run that ran no test at all comes last."""
        cands = self._previous_runs(run_id, window)
        if not cands:
            return None
        ran = self._ran([run_id, *(c.run_id for c in cands)])
        now = {k for k, v in ran[run_id].items() if v}

        def score(c: RunInfo) -> tuple[int, int]:
            tests = ran[c.run_id]
            gaps = sum(1 for k in now if k in tests and not tests[k])
            return gaps, 0 if any(tests.values()) else 1

        return min(cands, key=score)  # min keeps the first (newest) of equals

    def _per_test(self, run_id: str) -> dict[TestKey, list[ResultRow]]:
        out: dict[TestKey, list[ResultRow]] = defaultdict(list)
        for r in self.results(run_id):
            out[r.key].append(r)
        return out

    def compare(self, run_id: str, other_run_id: str, duration_threshold: float = 0.25,
                min_seconds: float = 0.1) -> Comparison:
        """`run_id` (current) against `other_run_id` (the baseline)."""
        if not duration_threshold > 0:
            raise ValueError(f"duration_threshold must be > 0 (a fraction, 0.25 = 25%), got {duration_threshold}")
        if min_seconds < 0:
            raise ValueError(f"min_seconds must be >= 0, got {min_seconds}")
        now, base = self._per_test(run_id), self._per_test(other_run_id)
        stab: dict[TestKey, tuple[Flakiness | None, Flakiness | None]] = {}
        new_failures, fixed, still, slower, faster = [], [], [], [], []
        lost, flaky, why_not_run = [], [], {}
        for key in sorted(set(now) | set(base)):
            b = _classify(base[key]) if key in base else None
            c = _classify(now[key]) if key in now else None
            stab[key] = (b, c)
            if b is None or c is None or b.stability is Stability.NOT_RUN:
                continue
            if c.stability is Stability.NOT_RUN:
                lost.append(key)
                why_not_run[key] = ", ".join(dict.fromkeys(r.reason or "not run" for r in now[key]))
                continue
            b_ok, c_ok = b.passed, c.passed
            if c_ok and c.flaky:
                flaky.append(key)
            if b_ok and not c_ok:
                new_failures.append(key)
            elif c_ok and not b_ok:
                fixed.append(key)
            elif not b_ok and not c_ok:
                still.append(key)
            bd = _median([r.duration for r in base[key] if r.passed and r.duration is not None])
            cd = _median([r.duration for r in now[key] if r.passed and r.duration is not None])
            if bd is None or cd is None:
                continue
            change = DurationChange(key, bd, cd)
            if abs(change.delta) >= min_seconds and abs(change.relative) >= duration_threshold:
                (slower if change.delta > 0 else faster).append(change)
        added = sorted(k for k in now if k not in base)
        removed = sorted(k for k in base if k not in now)
        slower.sort(key=lambda c: -c.relative)
        faster.sort(key=lambda c: c.relative)
        return Comparison(run_id, other_run_id, new_failures, fixed, still, added, removed,
                          slower, faster, stab, duration_threshold, min_seconds, lost, flaky,
                          why_not_run)

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
        return [self._row(r) for r in reversed(rows)]

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


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _classify(rows: Sequence[ResultRow]) -> Flakiness:
    """One test's attempts in one run, judged by the passes it needed then (every attempt that
    ran when the rows do not say)."""
    required = next((r.required for r in rows if r.required is not None), None)
    threshold = PassThreshold(passes=required) if required else ALL_REPEATS
    return classify([r.passed for r in rows], threshold)


__all__ = ["Comparison", "DEFAULT_PATH", "DurationChange", "History", "HistoryError",
           "MIGRATIONS", "MIN_GRADUATION_PASSES", "ResultRow", "RunInfo", "SuiteRatio", "TestKey",
           "make_ratio", "suite_key"]


if __name__ == "__main__":  # `python -m stress.history ...`
    import sys

    from .history_cli import main

    sys.exit(main())
