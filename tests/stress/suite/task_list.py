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

from cc_executor.claude_cli import mentions_claude
from stress.suite.model import (
    DEFAULT_TIMEOUT,
    FORMAT_TASK_LIST,
    Source,
    Suite,
    SuiteTest,
)
from stress.suite.placeholders import substitute
from stress.suite.problems import ProblemCollector, json_path
from stress.suite.verdict import (
    ALL_REPEATS,
    EXIT_ZERO,
    MATCH_ALL,
    MatchRule,
    TextPattern,
    describe_json,
)

COMPLEX_MIN_RATIO = 0.8
"""Seed 002's complex runner passed a test at >= 80% of its patterns."""

_TASK_LIST_TEST_KEYS = {"id", "name", "description", "command", "expected_patterns"}


def is_complex_task_list(raw: Mapping[str, Any], file: Path) -> bool:
    """Seed 002 held complex suites to 80% of patterns; we know one by its id or file name."""
    tlid = raw.get("task_list_id")
    return "complex" in file.name.lower() or (isinstance(tlid, str) and "complex" in tlid.lower())


def load_task_list(raw: dict[str, Any], file: Path, timestamp: str, complex_suite: bool | None) -> Suite:
    """Every entry of `tests` as a test; SuiteError lists every problem in the file."""
    ck = ProblemCollector()
    timeout = ck.get(raw, "timeout", (), "number", default=DEFAULT_TIMEOUT)
    tests_raw = ck.get(raw, "tests", (), "list", required=True, default=[])
    if "tests" in raw and isinstance(raw["tests"], list) and not raw["tests"]:
        ck.add(("tests",), "must contain at least one test")
    is_complex = complex_suite if complex_suite is not None else is_complex_task_list(raw, file)
    # The earlier simple and medium runners failed a test unless every pattern was found.
    match = MatchRule("min_ratio", COMPLEX_MIN_RATIO) if is_complex else MATCH_ALL
    seen: dict[str, tuple] = {}
    tests: list[SuiteTest] = []
    for i, t in enumerate(tests_raw):
        loc = ("tests", i)
        if not isinstance(t, dict):
            ck.add(loc, f"a test must be an object, got {describe_json(t)}")
            continue
        tid = ck.get(t, "id", loc, "string", required=True)
        ck.check_id(tid, loc + ("id",), seen)
        command = ck.get(t, "command", loc, "string", required=True)
        if isinstance(command, str) and not command.strip():
            ck.add(loc + ("command",), "must not be empty")
        patterns = ck.get(t, "expected_patterns", loc, "strings", default=[])
        name = ck.get(t, "name", loc, "string", default=tid)
        desc = ck.get(t, "description", loc, "string", default="")
        if not isinstance(tid, str) or not isinstance(command, str):
            continue
        command = substitute(command, {"TIMESTAMP": timestamp, "TEST_ID": tid})
        claude = mentions_claude(command)
        tests.append(SuiteTest(
            id=tid, name=name or tid, description=desc or "",
            tags=(raw["task_list_id"],) if isinstance(raw.get("task_list_id"), str) else (),
            kind="command", command=command, args=None, prompt=None,
            expected_patterns=tuple(TextPattern(p) for p in patterns),
            match=match, must_not_contain=(), expect_exit=EXIT_ZERO,
            timeout=float(timeout), stall_timeout=None, repeat=1, pass_threshold=ALL_REPEATS,
            requires=("claude", "real-model") if claude else (),
            env={}, cwd=None, input=None, instances=None,
            source=Source(str(file), json_path(loc)),
            extra={k: v for k, v in t.items() if k not in _TASK_LIST_TEST_KEYS},
        ))
    ck.raise_if_any(file)
    name = raw.get("task_list_id") if isinstance(raw.get("task_list_id"), str) else file.stem
    desc = raw.get("description") if isinstance(raw.get("description"), str) else ""
    suite_extra = {k: v for k, v in raw.items() if k not in ("tests", "description")}
    suite_extra["complex"] = is_complex
    return Suite(name, desc, file, FORMAT_TASK_LIST, timestamp, tuple(tests), suite_extra)
