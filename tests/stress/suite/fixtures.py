"""The earlier project's Python API fixtures: `{"name": ..., "tests": [{"name", "prompt", "params",
...}]}`, read as they are.

A fixture test names itself (no `id`: a stable one is derived from `name`), asks a `prompt`
with single-brace `{n}` placeholders filled from its `params` matrix, and picks the CLI's
output with `json_mode` / `stream`; each test is read by `stress.suite.older` like every other
older test, so `validation` and `expected_patterns` mean the same here. The earlier runner passed
a test when every expected pattern was found, so `match` is "all".

Imports the suite helpers (`model`, `older`, `problems`, `task_list` for the suite's name) and
`stress.suite.verdict`: never `stress.suite` (which imports this), never the service's internals
(`cc_executor.jobs/server/process/tree/registry`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stress.suite.model import DEFAULT_TIMEOUT, FORMAT_FIXTURES, Suite
from stress.suite.older import OlderContext, read_older_tests
from stress.suite.problems import ProblemCollector
from stress.suite.task_list import suite_name
from stress.suite.verdict import MATCH_ALL

FIXTURE_TEST_KEYS = frozenset({"params", "json_mode", "stream"})
"""Keys only a fixture test has: one of them marks a file as this format."""
_SUITE_KEYS = {"name", "test_id", "task_list_id", "description", "timeout", "tests"}


def load_fixtures(raw: dict[str, Any], file: Path, timestamp: str) -> Suite:
    """Every fixture test, each expanded over its `params`; SuiteError lists every problem."""
    ck = ProblemCollector()
    timeout = ck.get(raw, "timeout", (), "number", default=DEFAULT_TIMEOUT)
    tests_raw = ck.get(raw, "tests", (), "list", required=True, default=[])
    if isinstance(raw.get("tests"), list) and not raw["tests"]:
        ck.add(("tests",), "must contain at least one test")
    ctx = OlderContext(file, timestamp, ck, float(timeout), MATCH_ALL)
    tests = read_older_tests(tests_raw, ctx)
    ck.raise_if_any(file)
    extra = ck.warn_unknown(raw, (), _SUITE_KEYS)
    desc = raw.get("description") if isinstance(raw.get("description"), str) else ""
    return Suite(suite_name(raw, file), desc, file, FORMAT_FIXTURES, timestamp, tuple(tests), extra,
                 warnings=tuple(ck.warnings))


__all__ = ["FIXTURE_TEST_KEYS", "load_fixtures"]
