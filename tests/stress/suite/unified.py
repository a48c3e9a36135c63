"""Seed 004's unified task list (`unified_stress_test_tasks.json`), read where it lies.

The format: `categories.<name>.tasks[]`, each task a `natural_language_request` (sent through
seed 004's default claude command) or a `command_template`, with `verification` settings and,
optionally, concurrent instances (`concurrent_instances`, `evaluation_criteria`, `models`,
`temperature_range`).

Why read it as is rather than convert it once: it is part of the corpus we are judged against,
and a hand copy would silently change what it tests. Seed 004's rules are kept: a task passes
when at least one expected pattern is seen; a `failure_` task (or one expecting a non-zero exit)
is judged by its exit code alone. Keys we don't use are kept in each test's `extra`, so nothing
of the file is lost in a report.

Imports the suite helpers (`stress.suite.model`, `stress.suite.problems`, `stress.suite.placeholders`),
`stress.suite.verdict`, and the shared `cc_executor.claude_cli` (is this a claude command?): never
`stress.suite`, never the service's internals (`cc_executor.jobs/server/process/tree/registry`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cc_executor.claude_cli import mentions_claude
from stress.suite.model import (
    CRITERIA,
    DEFAULT_TIMEOUT,
    FORMAT_UNIFIED,
    Instances,
    Source,
    Suite,
    SuiteTest,
    Variant,
)
from stress.suite.older import (
    OlderContext,
    added_assertions,
    read_older_test,
    validation_assertions,
)
from stress.suite.placeholders import substitute
from stress.suite.problems import ProblemCollector, json_path
from stress.suite.task_list import suite_name
from stress.suite.verdict import (
    ALL_REPEATS,
    EXIT_NONZERO,
    EXIT_ZERO,
    MATCH_ALL,
    MATCH_ANY,
    MATCH_NONE_REQUIRED,
    TextPattern,
    describe_json,
)

SEED004_DEFAULT_COMMAND = (
    'claude -p "[marker:${MARKER}] ${METATAGS} ${REQUEST}" '
    "--dangerously-skip-permissions --allowedTools none"
)
"""What seed 004's runner sent for a task without command_template (marker LOCAL_<id>_<time>)."""
SEED_CRITERIA = {"FASTEST": "fastest", "MOST_DETAILED": "longest", "LONGEST": "longest",
                 "CHEAPEST": "cheapest", "MOST_PATTERNS": "most_patterns"}
"""Seed 004's evaluation_criteria words, as our instance criteria."""

_UNIFIED_TASK_KEYS = {"id", "name", "natural_language_request", "command_template", "metatags",
                      "verification", "validation", "concurrent_instances", "evaluation_criteria", "models",
                      "temperature_range", "assert", "threshold"}
_UNIFIED_SUITE_KEYS = {"task_list_id", "test_id", "name", "description", "categories",
                       "execution_config"}
_UNIFIED_VERIFY_KEYS = {"expected_patterns", "timeout", "stall_timeout", "marker",
                        "expect_non_zero_exit", "save_output", "description"}


def _metatag_tags(metatags: str) -> list[str]:
    """'[category:stress_test][complexity:simple]' -> ['category:stress_test', 'complexity:simple']."""
    return [m.strip() for m in re.findall(r"\[([^\[\]\s]+)\]", metatags)]


def _unified_instances(ck: ProblemCollector, task: dict, loc: tuple) -> Instances | None:
    """A task's concurrent instances: one variant per instance when models or temperatures vary."""
    count = ck.get(task, "concurrent_instances", loc, "number")
    if count is None:
        return None
    if not isinstance(count, int) or not 1 <= count <= 64:
        ck.add(loc + ("concurrent_instances",), f"must be an integer from 1 to 64, got {describe_json(count)}")
        return None
    crit_raw = ck.get(task, "evaluation_criteria", loc, "string", required=True)
    criterion = None
    if crit_raw is not None:
        criterion = SEED_CRITERIA.get(crit_raw.upper()) or (crit_raw if crit_raw in CRITERIA else None)
        if criterion is None:
            ck.add(loc + ("evaluation_criteria",),
                   f"unknown criterion {crit_raw!r} (known: {', '.join(sorted(SEED_CRITERIA))})")
    models = ck.get(task, "models", loc, "strings", default=[])
    trange = task.get("temperature_range")
    temps: list[float | None] = [None] * count
    if trange is not None:
        if (isinstance(trange, list) and len(trange) == 2
                and all(isinstance(x, int | float) and not isinstance(x, bool) for x in trange)):
            lo, hi = float(trange[0]), float(trange[1])
            temps = [lo + (hi - lo) * i / (count - 1) if count > 1 else lo for i in range(count)]
        else:
            ck.add(loc + ("temperature_range",), f"must be [low, high], got {describe_json(trange)}")
    if criterion is None:
        return None
    variants: tuple[Variant, ...] = ()
    if models or trange is not None:
        variants = tuple(
            Variant(label=f"instance {i + 1}",
                    model=models[i % len(models)] if models else None, temperature=temps[i])
            for i in range(count)
        )
    return Instances(count, criterion, variants)  # type: ignore[arg-type]


def load_unified(raw: dict[str, Any], file: Path, timestamp: str) -> Suite:
    """Every task of every category as a test; SuiteError lists every problem in the file."""
    reader = _UnifiedReader(file, timestamp, _default_timeout(raw))
    ck = reader.ck
    categories = ck.get(raw, "categories", (), "object", required=True, default={})
    tests: list[SuiteTest] = []
    for cat, body in categories.items():
        tests += reader.category(cat, body)
    if not categories and not ck.problems:
        ck.add(("categories",), "must contain at least one category")
    elif categories and not tests and not ck.problems:
        ck.add(("categories",), "contains no tasks")
    ck.raise_if_any(file)
    ck.warn_unknown(raw, (), _UNIFIED_SUITE_KEYS)
    exec_cfg = raw.get("execution_config")
    if isinstance(exec_cfg, dict):
        ck.warn_unknown(exec_cfg, ("execution_config",), {"default_timeout"})
    name = suite_name(raw, file)
    desc = raw.get("description") if isinstance(raw.get("description"), str) else ""
    suite_extra = {k: v for k, v in raw.items() if k not in ("categories", "description")}
    suite_extra["categories"] = {
        c: {k: v for k, v in b.items() if k != "tasks"} for c, b in categories.items() if isinstance(b, dict)
    }
    return Suite(name, desc, file, FORMAT_UNIFIED, timestamp, tuple(tests), suite_extra,
                 warnings=tuple(ck.warnings))


def _default_timeout(raw: dict[str, Any]) -> float:
    """`execution_config.default_timeout` when it is a positive number, else ours."""
    exec_cfg = raw.get("execution_config") if isinstance(raw.get("execution_config"), dict) else {}
    default_timeout = exec_cfg.get("default_timeout")
    if not (isinstance(default_timeout, int | float) and not isinstance(default_timeout, bool)
            and default_timeout > 0):
        default_timeout = DEFAULT_TIMEOUT
    return default_timeout


class _UnifiedReader:
    """One load: the problems found so far, the ids seen (unique across categories), and what
    every task shares (file, ${TIMESTAMP}, the file's default timeout)."""

    def __init__(self, file: Path, timestamp: str, default_timeout: float):
        self.ck = ProblemCollector()
        self.file = file
        self.timestamp = timestamp
        self.default_timeout = default_timeout
        self.seen: dict[str, tuple] = {}

    def category(self, cat: str, body: Any) -> list[SuiteTest]:
        """The tests of one category (none when it is malformed; the problem is recorded)."""
        cloc = ("categories", cat)
        if not isinstance(body, dict):
            self.ck.add(cloc, f"must be an object with 'tasks', got {describe_json(body)}")
            return []
        self.ck.warn_unknown(body, cloc, {"description", "tasks", "tests", "timeout"})
        if "tests" in body and "tasks" not in body:
            return self.category_tests(cat, body, cloc)
        tasks = self.ck.get(body, "tasks", cloc, "list", required=True, default=[])
        cat_desc = body.get("description") if isinstance(body.get("description"), str) else ""
        tests = []
        for i, task in enumerate(tasks):
            loc = cloc + ("tasks", i)
            if not isinstance(task, dict):
                self.ck.add(loc, f"a task must be an object, got {describe_json(task)}")
                continue
            test = self.task(task, loc, cat, cat_desc)
            if test is not None:
                tests.append(test)
        return tests

    def category_tests(self, cat: str, body: dict[str, Any], cloc: tuple) -> list[SuiteTest]:
        """A category holding `tests` (the earlier implementation's shape): each read like a task
        list's test (`stress.suite.older`), tagged with the category, under its `timeout`."""
        tests_raw = self.ck.get(body, "tests", cloc, "list", default=[])
        timeout = self.ck.get(body, "timeout", cloc, "number", default=self.default_timeout)
        ctx = OlderContext(self.file, self.timestamp, self.ck, float(timeout), MATCH_ALL,
                           tags=(cat,), seen=self.seen)
        out: list[SuiteTest] = []
        for i, t in enumerate(tests_raw):
            if not isinstance(t, dict):
                self.ck.add(cloc + ("tests", i), f"a test must be an object, got {describe_json(t)}")
                continue
            out += read_older_test(t, cloc + ("tests", i), ctx)
        return out

    def task(self, task: dict[str, Any], loc: tuple, cat: str, cat_desc: str) -> SuiteTest | None:
        """One task as a test; None when it has no usable id. Every check runs, in file order,
        before deciding, so a bad task reports all its problems."""
        ck = self.ck
        tid = ck.get(task, "id", loc, "string", required=True)
        ck.check_id(tid, loc + ("id",), self.seen)
        name = ck.get(task, "name", loc, "string", default=tid)
        request = ck.get(task, "natural_language_request", loc, "string")
        template = ck.get(task, "command_template", loc, "string")
        if request is None and template is None and not ({"natural_language_request", "command_template"} & set(task)):
            ck.add(loc, "needs 'natural_language_request' or 'command_template'")
        metatags = ck.get(task, "metatags", loc, "string", default="")
        ver = ck.get(task, "verification", loc, "object", required=True, default={})
        vloc = loc + ("verification",)
        patterns = ck.get(ver, "expected_patterns", vloc, "strings", default=[])
        timeout = ck.get(ver, "timeout", vloc, "number", default=self.default_timeout)
        stall = ck.get(ver, "stall_timeout", vloc, "number")
        marker = ck.get(ver, "marker", vloc, "string")
        non_zero = ck.get(ver, "expect_non_zero_exit", vloc, "bool", default=False)
        ck.get(ver, "save_output", vloc, "bool")
        instances = _unified_instances(ck, task, loc)
        ck.warn_unknown(task, loc, _UNIFIED_TASK_KEYS)
        assertions = validation_assertions(task["validation"], loc + ("validation",), ck) \
            if "validation" in task else []
        own, threshold = added_assertions(task, loc, ck)
        ck.warn_unknown(ver, vloc, _UNIFIED_VERIFY_KEYS)
        if not isinstance(tid, str):
            return None

        ts = {"TIMESTAMP": self.timestamp}
        request_s = substitute(request or "", ts)
        metatags_s = substitute(metatags, ts)
        values = {**ts, "METATAGS": metatags_s, "REQUEST": request_s, "PROMPT": request_s,
                  "TEST_ID": tid, "MARKER": f"LOCAL_{tid}_{self.timestamp}"}
        command = substitute(template if template is not None else SEED004_DEFAULT_COMMAND, values)
        negative = tid.startswith("failure_") or non_zero is True
        extra: dict[str, Any] = {"category": cat}
        if metatags:
            extra["metatags"] = metatags_s
        marker_s = substitute(marker, ts) if marker else None
        if marker_s:
            extra["marker"] = marker_s
        return SuiteTest(
            id=tid,
            name=name if isinstance(name, str) else tid,
            description=ver.get("description") if isinstance(ver.get("description"), str) else cat_desc,
            tags=tuple(dict.fromkeys([cat, *_metatag_tags(metatags)])),
            kind="command",
            command=command,
            args=None,
            prompt=request_s or None,
            expected_patterns=tuple(TextPattern(p) for p in patterns),
            # Seed 004 passed a task when at least one pattern was seen; its failure_ tasks
            # were judged by the non-zero exit alone.
            match=MATCH_NONE_REQUIRED if negative else MATCH_ANY,
            must_not_contain=(),
            expect_exit=EXIT_NONZERO if negative else EXIT_ZERO,
            timeout=float(timeout),
            stall_timeout=float(stall) if stall is not None else None,
            repeat=1,
            pass_threshold=ALL_REPEATS,
            requires=_requires(command, negative),
            env={},
            cwd=None,
            input=None,
            instances=instances,
            source=Source(str(self.file), json_path(loc)),
            extra=_kept_keys(extra, task, ver, default_command=template is None),
            origin=task,
            assertions=(*assertions, *own), threshold=threshold,
        )


def _requires(command: str, negative: bool) -> tuple[str, ...]:
    """A claude command needs the CLI; one expected to succeed needs a real model as well (a
    failure_ task fails before any model answers)."""
    if not mentions_claude(command):
        return ()
    return ("claude",) if negative else ("claude", "real-model")


def _kept_keys(extra: dict[str, Any], task: dict[str, Any], ver: dict[str, Any], *,
               default_command: bool) -> dict[str, Any]:
    """`extra` plus what of the task we don't map (kept for reports, never dropped)."""
    if "save_output" in ver:
        extra["save_output"] = ver["save_output"]
    if default_command:
        extra["default_command"] = True
    extra.update({k: v for k, v in task.items() if k not in _UNIFIED_TASK_KEYS})
    unknown_v = {k: v for k, v in ver.items() if k not in _UNIFIED_VERIFY_KEYS}
    if unknown_v:
        extra["verification"] = unknown_v
    return extra
