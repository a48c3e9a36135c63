"""stress.suite: what a suite says and how an answer is judged. Load one (`load_suite`) from our JSON format or the older formats, read as is.

Why one entry point for three formats: the suites written for earlier harnesses (the unified task
list of seed 004, the simple/medium/complex task lists of seed 002) are the corpus we are judged
against, and copying them into our format by hand would silently change what they test. So each
is read where it lies, mapped onto the same resolved `SuiteTest`, and every test remembers the
file and JSON path it came from so a report can cite it.

Why validate everything before running anything: a suite is usually run for minutes against a
real model; finding a typo in test 17 after 16 tests have run wastes that. `load_suite` therefore
reports every problem in a file at once, each with its JSON path (`$.tests[3].expect_exit`), and
raises before returning anything.

Where each part lives (this module finds the file, detects its format and dispatches):
  model               the resolved `Suite` / `SuiteTest`, ids, formats, `suite_to_json`
  problems            `Problem`, `SuiteError`, JSON paths, the older formats' checker
  json_file           reading a file as JSON (line/column, duplicate keys)
  placeholders        ${TIMESTAMP}, ${PROMPT}, ...
  ours                our format (pydantic models mirroring suite.schema.json)
  unified             seed 004's unified task list (and categories holding `tests`)
  task_list           seed 002's task lists (also `test_id`-named, with `validation`)
  fixtures            the earlier Python API's prompt fixtures (`params`, `json_mode`)
  older               one test of any older shape; `validation` -> assertions
  matrix              `vars` / `params` matrices, case ids, {{name}} placeholders
  assertions          the `assert` list, read and checked; assert_eval judges it on an `answer`
Every name other modules import from here stays importable from here.

Imports those modules only: never the runner or the CLI (they import this), never the service's
internals (`cc_executor.jobs/server/process/tree/registry`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from stress.suite.fixtures import FIXTURE_TEST_KEYS, load_fixtures
from stress.suite.json_file import read_json
from stress.suite.model import (
    CASE_ID_RE,
    CRITERIA,
    DEFAULT_TIMEOUT,
    FORMAT_FIXTURES,
    FORMAT_OURS,
    FORMAT_TASK_LIST,
    FORMAT_UNIFIED,
    FORMATS,
    ID_RE,
    Instances,
    Invocation,
    Source,
    Suite,
    SuiteTest,
    Variant,
    suite_to_json,
)
from stress.suite.ours import (
    DEFAULT_CLAUDE_COMMAND,
    ENV_NAME_RE,
    SPEC_MODELS,
    WORD_RE,
    DefaultsSpec,
    InstancesSpec,
    SuiteSpec,
    SuiteTestSpec,
    VariantSpec,
    load_ours,
)
from stress.suite.patterns import describe_json
from stress.suite.placeholders import PLACEHOLDERS, new_timestamp
from stress.suite.problems import Problem, SuiteError, json_path
from stress.suite.task_list import (
    COMPLEX_MIN_RATIO,
    is_complex_task_list,
    load_task_list,
)
from stress.suite.unified import SEED004_DEFAULT_COMMAND, load_unified

__all__ = [
    "CASE_ID_RE", "COMPLEX_MIN_RATIO", "CRITERIA", "DEFAULT_CLAUDE_COMMAND", "DEFAULT_TIMEOUT", "ENV_NAME_RE",
    "FORMATS", "FORMAT_FIXTURES", "FORMAT_OURS", "FORMAT_TASK_LIST", "FORMAT_UNIFIED", "ID_RE", "PLACEHOLDERS",
    "REPO_ROOT", "SCHEMA_PATH", "SEED004_DEFAULT_COMMAND", "SPEC_MODELS", "WORD_RE",
    "DefaultsSpec", "Instances", "InstancesSpec", "Invocation", "Problem", "Source", "Suite",
    "SuiteError", "SuiteSpec", "SuiteTest", "SuiteTestSpec", "Variant", "VariantSpec",
    "detect_format", "is_complex_task_list", "not_a_suite", "json_path", "list_suites", "load_suite",
    "new_timestamp", "read_json", "resolve_suite_path", "suite_to_json",
]

# The schema stays at the package root: suite files name it in "$schema" (../tests/stress/...).
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "suite.schema.json"
REPO_ROOT = Path(__file__).resolve().parents[3]

_OUR_ONLY_SUITE_KEYS = {"$schema", "name", "defaults", "extra"}
_OUR_ONLY_TEST_KEYS = {"args", "prompt", "match", "must_not_contain", "expect_exit", "expect_end",
                       "stall_timeout",
                       "repeat", "pass_threshold", "requires", "env", "cwd", "input", "instances",
                       "tags", "extra"}


def detect_format(raw: Any) -> str:
    """Which format a parsed file is in. Ambiguous files are taken as ours (strictest checks).

    Older shapes are known by what only they have: `categories` (unified task lists), a test
    with `params` / `json_mode` / `stream`, or named tests without ids under a suite `name`
    (prompt fixtures), a `task_list_id` / `test_id` / suite `timeout`, or a test with a
    `validation` object or only a `name` (task lists) - and never a key only ours has."""
    if not isinstance(raw, dict):
        return FORMAT_OURS
    keys = set(raw)
    if "categories" in raw and "tests" not in raw and not (_OUR_ONLY_SUITE_KEYS & keys):
        return FORMAT_UNIFIED
    tests = raw.get("tests")
    if (_OUR_ONLY_SUITE_KEYS - {"name"}) & keys or not isinstance(tests, list):
        return FORMAT_OURS
    if {"prompts", "providers", "defaultTest"} & keys:  # a promptfoo config: our strict errors say
        return FORMAT_OURS                              # where each of its keys lives here
    dicts = [t for t in tests if isinstance(t, dict)]
    fixture_like = any(FIXTURE_TEST_KEYS & set(t) for t in dicts) or (
        "name" in keys and dicts and all("id" not in t for t in dicts))
    if fixture_like and not any((_OUR_ONLY_TEST_KEYS - {"prompt", "repeat", "tags"}) & set(t) for t in dicts):
        return FORMAT_FIXTURES
    if any(_OUR_ONLY_TEST_KEYS & set(t) for t in dicts):
        return FORMAT_OURS
    if "name" in keys and not any("validation" in t for t in dicts):  # only older tests have it
        return FORMAT_OURS
    if {"task_list_id", "test_id", "timeout"} & keys or any(
            "validation" in t or "id" not in t for t in dicts):
        return FORMAT_TASK_LIST
    return FORMAT_OURS


SUITE_KEYS = {"tests", "categories", "name", "$schema", "defaults", "task_list_id", "test_id"}
"""A JSON object with none of these is not a suite in any format we read."""


def not_a_suite(raw: Any) -> str | None:
    """One line saying what a suite looks like, for a file that is not one at all; else None."""
    if isinstance(raw, dict) and SUITE_KEYS & set(raw):
        return None
    shape = ('with a "tests" list (our format, task lists, prompt fixtures) or a "categories" '
             'object (unified task lists)')
    if not isinstance(raw, dict):
        return f"a suite must be a JSON object {shape}; got {describe_json(raw)}"
    return f"not a suite: expected a JSON object {shape}; got keys {', '.join(sorted(raw)[:6]) or 'none'}"


def resolve_suite_path(path_or_name: str | os.PathLike[str], configs_dir: Path = Path("configs")) -> Path:
    """A path as is; a bare name (e.g. "examples/basic") as <configs_dir>/<name>.json."""
    p = Path(path_or_name)
    if p.suffix == ".json" or p.is_file():
        if p.is_file():
            return p
        raise SuiteError(p, [Problem("$", "no such file")])
    candidates = [configs_dir / f"{p}.json"]
    if not configs_dir.is_absolute():
        candidates.append(REPO_ROOT / configs_dir / f"{p}.json")
    for c in candidates:
        if c.is_file():
            return c
    known = list_suites(configs_dir) or list_suites(REPO_ROOT / configs_dir)
    raise SuiteError(
        candidates[0],
        [Problem("$", f"no suite named {str(path_or_name)!r}; looked for "
                      f"{', '.join(map(str, candidates))}; known: {', '.join(known) or 'none'}")],
    )


def list_suites(configs_dir: Path = Path("configs")) -> list[str]:
    """Suite names under `configs_dir` ("examples/basic" for configs/examples/basic.json)."""
    if not configs_dir.is_dir():
        return []
    return sorted(str(p.relative_to(configs_dir).with_suffix("")) for p in configs_dir.rglob("*.json"))


def load_suite(
    path_or_name: str | os.PathLike[str],
    configs_dir: Path = Path("configs"),
    *,
    suite_format: str | None = None,
    timestamp: str | None = None,
    complex_suite: bool | None = None,
) -> Suite:
    """Read, detect the format of, validate and resolve one suite. Raises SuiteError.

    `timestamp` is the ${TIMESTAMP} value for the whole load (default: now). `suite_format`
    forces one of FORMATS. `complex_suite` forces (or denies) the 80% rule for task-list files.
    """
    file = resolve_suite_path(path_or_name, configs_dir)
    raw = read_json(file)
    refusal = None if suite_format else not_a_suite(raw)
    if refusal:
        raise SuiteError(file, [Problem("$", refusal)])
    fmt = suite_format or detect_format(raw)
    if fmt not in FORMATS:
        raise ValueError(f"unknown suite format {fmt!r} (expected one of {FORMATS})")
    ts = timestamp or new_timestamp()
    if fmt == FORMAT_OURS:
        return load_ours(raw, file, ts)
    if not isinstance(raw, dict):
        raise SuiteError(file, [Problem("$", f"a suite must be a JSON object, got {describe_json(raw)}")])
    if fmt == FORMAT_UNIFIED:
        return load_unified(raw, file, ts)
    if fmt == FORMAT_FIXTURES:
        return load_fixtures(raw, file, ts)
    return load_task_list(raw, file, ts, complex_suite)
