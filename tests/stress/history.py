"""Every run's results in one SQLite file, so runs can be compared and a suite can graduate.

This module is the front door: callers import the run history from here (`from stress.history
import History, HistoryError`), and `python -m stress.history` is its command line. The work is
done in modules of one idea each, re-exported below:

- stress.history_store: the SQLite file (WAL, busy waits, one transaction per write), `History`
- stress.history_schema: the schema as a list of migrations (`PRAGMA user_version`)
- stress.history_records: the values handed out (`RunInfo`, `ResultRow`, `HistoryKey`, errors)
- stress.history_compare: a run against a baseline (`Comparison`), and which baseline
- stress.history_graduation: cumulative passes : failures and the 10:1 rule (`SuiteRatio`)

Must not import stress.history_cli, even lazily: history_cli imports this module, so any import
of it from here would be an import circle. `python -m stress.history` runs this file as the
script `__main__`, a different thing from the module `stress.history`; the block at the bottom
hands the script over to stress.history_cli by module name. The module itself never reaches the
CLI, and since it only re-exports, running the file twice (as `__main__`, then as
`stress.history` when the CLI imports it) defines no class twice. Once history_cli imports the
modules above instead of this one, that block can become a plain `from .history_cli import main`.
"""

from __future__ import annotations

from .history_compare import BASELINE_WINDOW, Comparison, DurationChange
from .history_graduation import GRADUATION_RATIO, MIN_GRADUATION_PASSES, SuiteRatio, make_ratio
from .history_records import HistoryError, HistoryKey, ResultRow, RunInfo, suite_key
from .history_schema import MIGRATIONS
from .history_store import (BUSY_TIMEOUT_MS, DEFAULT_PATH, DEFAULT_TREND_LIMIT, MEDIAN_WINDOW,
                            History)

__all__ = ["BASELINE_WINDOW", "BUSY_TIMEOUT_MS", "Comparison", "DEFAULT_PATH",
           "DEFAULT_TREND_LIMIT", "DurationChange", "GRADUATION_RATIO", "History", "HistoryError",
           "HistoryKey", "MEDIAN_WINDOW", "MIGRATIONS", "MIN_GRADUATION_PASSES", "ResultRow",
           "RunInfo", "SuiteRatio", "make_ratio", "suite_key"]


if __name__ == "__main__":  # `python -m stress.history ...`: the script, not the module
    import importlib
    import sys

    sys.exit(importlib.import_module(f"{__package__}.history_cli").main())
