"""The history file's SQLite schema, as a list of migrations: what each version adds.

Why a schema version (`PRAGMA user_version`) and a migration list: the file outlives the code that
wrote it. Opening runs every missing migration in one transaction (stress.history.store); a file
newer than this code is refused with a clear error instead of being misread.

Why each row carries `required` (schema 2): a test with a pass threshold (2 of 3) passed with one
failed attempt; compared as "every attempt must pass" it would be a new failure. Rows written
before schema 2 have NULL there and keep that stricter reading.

Imports only `sqlite3`: the schema is plain SQL and must not depend on how rows are read or used.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable


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

RESULT_COLUMNS = ("run_id", "suite", "test_id", "attempt", "passed", "reason", "duration",
                  "server", "output_bytes", "cost_usd", "tokens", "load1", "timeout_used",
                  "required")
"""The `results` columns a caller may give (`recorded` is set by the store)."""
