"""Seed 002's task lists (simple/medium/complex_stress_tests.json), read where they lie.

The format: a top-level `tests[]` of shell commands with expected patterns, and one `timeout`
for the whole suite. Why read it as is: these files are part of the corpus we are judged
against, and a hand copy would silently change what they test. Seed 002's rules are kept: the
simple and medium runners failed a test unless every pattern was found; the complex runner
passed one at 80% of its patterns, so a complex list (known by its id or file name, or forced
with `complex_suite`) gets `min_ratio` 0.8.

Imports the suite helpers (`stress.suite.model`, `stress.suite.problems`, `stress.suite.placeholders`),
`stress.suite.verdict`, and the shared `cc_executor.claude_cli` (is this a claude command?): never
`stress.suite`, never the service's internals (`cc_executor.jobs/server/process/tree/registry`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stress.suite.model import DEFAULT_TIMEOUT, FORMAT_TASK_LIST, Suite
from stress.suite.older import OlderContext, read_older_tests
from stress.suite.problems import ProblemCollector
from stress.suite.verdict import MATCH_ALL, MatchRule

COMPLEX_MIN_RATIO = 0.8
"""Seed 002's complex runner passed a test at >= 80% of its patterns."""

_TASK_LIST_SUITE_KEYS = {"task_list_id", "test_id", "name", "description", "timeout", "tests"}


def is_complex_task_list(raw: Mapping[str, Any], file: Path) -> bool:
    """Seed 002 held complex suites to 80% of patterns; we know one by its id or file name."""
    tlid = raw.get("task_list_id")
    return "complex" in file.name.lower() or (isinstance(tlid, str) and "complex" in tlid.lower())


def load_task_list(raw: dict[str, Any], file: Path, timestamp: str, complex_suite: bool | None) -> Suite:
    """Every entry of `tests` as a test (`stress.suite.older` reads each, `validation` and
    `params` included); SuiteError lists every problem in the file, unknown keys are warnings."""
    ck = ProblemCollector()
    timeout = ck.get(raw, "timeout", (), "number", default=DEFAULT_TIMEOUT)
    tests_raw = ck.get(raw, "tests", (), "list", required=True, default=[])
    if "tests" in raw and isinstance(raw["tests"], list) and not raw["tests"]:
        ck.add(("tests",), "must contain at least one test")
    is_complex = complex_suite if complex_suite is not None else is_complex_task_list(raw, file)
    # The earlier simple and medium runners failed a test unless every pattern was found.
    match = MatchRule("min_ratio", COMPLEX_MIN_RATIO) if is_complex else MATCH_ALL
    name = suite_name(raw, file)
    ctx = OlderContext(file, timestamp, ck, float(timeout), match,
                       tags=(raw["task_list_id"],) if isinstance(raw.get("task_list_id"), str) else ())
    tests = read_older_tests(tests_raw, ctx)
    ck.raise_if_any(file)
    desc = raw.get("description") if isinstance(raw.get("description"), str) else ""
    ck.warn_unknown(raw, (), _TASK_LIST_SUITE_KEYS)
    suite_extra = {k: v for k, v in raw.items() if k not in ("tests", "description")}
    suite_extra["complex"] = is_complex
    return Suite(name, desc, file, FORMAT_TASK_LIST, timestamp, tuple(tests), suite_extra,
                 warnings=tuple(ck.warnings))


def suite_name(raw: dict[str, Any], file: Path) -> str:
    """An older suite's name: `task_list_id`, `test_id` or `name`, else the file's stem."""
    for key in ("task_list_id", "test_id", "name"):
        if isinstance(raw.get(key), str) and raw[key].strip():
            return raw[key]
    return file.stem
