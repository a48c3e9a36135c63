"""stress.history: every run's results in one SQLite file, to compare runs and graduate suites.

This module is the front door: callers import the run history from here (`from stress.history
import History, HistoryError`), and `python -m stress.history` is its command line. The work is
done in modules of one idea each, re-exported below:

- stress.history.store: the SQLite file (WAL, busy waits, one transaction per write), `History`
- stress.history.schema: the schema as a list of migrations (`PRAGMA user_version`)
- stress.history.records: the values handed out (`RunInfo`, `ResultRow`, `HistoryKey`, errors)
- stress.history.compare: a run against a baseline (`Comparison`), and which baseline
- stress.history.graduation: cumulative passes : failures and the 10:1 rule (`SuiteRatio`)

Also here: `cli` (`python -m stress.history`, through `__main__`) and `link` (a run's results
into the history, and its comparison into the report). This module imports neither: the command
line imports it, and runs record themselves through `link`.
"""

from __future__ import annotations

from stress.history.compare import BASELINE_WINDOW, Comparison, DurationChange
from stress.history.graduation import (
                                       GRADUATION_RATIO,
                                       MIN_GRADUATION_PASSES,
                                       SuiteRatio,
                                       make_ratio,
)
from stress.history.records import (
                                       HistoryError,
                                       HistoryKey,
                                       ResultRow,
                                       RunInfo,
                                       suite_key,
)
from stress.history.schema import MIGRATIONS
from stress.history.store import (
                                       BUSY_TIMEOUT_MS,
                                       DEFAULT_PATH,
                                       DEFAULT_TREND_LIMIT,
                                       MEDIAN_WINDOW,
                                       History,
)

__all__ = ["BASELINE_WINDOW", "BUSY_TIMEOUT_MS", "Comparison", "DEFAULT_PATH",
           "DEFAULT_TREND_LIMIT", "DurationChange", "GRADUATION_RATIO", "History", "HistoryError",
           "HistoryKey", "MEDIAN_WINDOW", "MIGRATIONS", "MIN_GRADUATION_PASSES", "ResultRow",
           "RunInfo", "SuiteRatio", "make_ratio", "suite_key"]

