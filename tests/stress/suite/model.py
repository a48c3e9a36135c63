"""The resolved suite: what the runner and the reports use, whatever format the file was in.

Owns the data model (`Suite`, `SuiteTest`, where a test came from, its concurrent instances),
the rules for ids, the names of the formats and the defaults every loader applies, and writing a
loaded suite back in our format (`suite_to_json`).

Words (the harness's glossary): a *test* is an entry of a suite (`SuiteTest`); a *case* is one
expansion of a test; an *attempt* is one run of a case (repeats, retries); an *instance* is one
of K concurrent runs of an instances test (`Instances`, `Variant`).

Why a module of its own: four loaders build these values and the runner, the CLI and the
reports read them; none of those readers should need a loader to name a type. So this module
imports only `stress.suite.verdict` and `stress.suite.assertions` (the rules a test carries):
never a loader, never `stress.suite`, never the service's internals (`cc_executor.jobs/server/process/tree/registry`).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

from stress.suite.assertions import Assertion
from stress.suite.verdict import (
    ALL_REPEATS,
    ExitExpectation,
    MatchRule,
    PassThreshold,
    Pattern,
)

FORMAT_OURS = "cc_executor"
FORMAT_UNIFIED = "unified-tasks"
"""Seed 004's `unified_stress_test_tasks.json`: categories.<name>.tasks[]."""
FORMAT_TASK_LIST = "task-list"
"""Seed 002's simple/medium/complex files: a top-level tests[] with a suite-level timeout."""
FORMAT_FIXTURES = "prompt-fixtures"
"""The earlier project's Python API fixtures: named tests with a prompt and `params`."""
FORMATS = (FORMAT_OURS, FORMAT_UNIFIED, FORMAT_TASK_LIST, FORMAT_FIXTURES)

REAL_MODEL = "real-model"
"""The requirement of a test that needs the real model API (skipped offline: --model real)."""

DEFAULT_TIMEOUT = 120.0
"""Seconds. Seed 004 measured 30-60 s of CLI start-up against the real API and set 120 s as floor."""

ID_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
ID_RULE = "1-128 letters, digits, '_', '.', '-', starting with a letter or digit"
"""`ID_RE` in words, for the message that refuses an id (ids name tests on the command line)."""
CASE_ID_RE = (r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
              r"(\([A-Za-z_][A-Za-z0-9_]*=(#[0-9]+|[A-Za-z0-9._-]{1,24})"
              r"(,[A-Za-z_][A-Za-z0-9_]*=(#[0-9]+|[A-Za-z0-9._-]{1,24}))*\))?$")
"""A case's id: the test's id, then `(name=value,...)` for a test with vars (`stress.suite.matrix`)."""
Criterion = Literal["fastest", "longest", "cheapest", "most_patterns"]
"""How the best of a test's concurrent instances is picked (the one list of these names)."""
CRITERIA: tuple[str, ...] = get_args(Criterion)


@dataclass(frozen=True, slots=True)
class Source:
    """Where a test was defined, for reports to cite."""

    file: str
    json_path: str

    def __str__(self) -> str:
        return f"{self.file}:{self.json_path}"


@dataclass(frozen=True)
class Variant:
    """How one concurrent instance differs from the test's own invocation."""

    label: str | None = None
    args: tuple[str, ...] | None = None
    """Replaces the whole invocation with this argv."""
    extra_args: tuple[str, ...] = ()
    """Appended to the invocation."""
    model: str | None = None
    """Shorthand for extra_args ["--model", model] (a Claude CLI flag)."""
    temperature: float | None = None
    """Recorded for reports only: the Claude CLI has no temperature flag."""
    env: Mapping[str, str | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.label is not None:
            out["label"] = self.label
        if self.args is not None:
            out["args"] = list(self.args)
        if self.extra_args:
            out["extra_args"] = list(self.extra_args)
        if self.model is not None:
            out["model"] = self.model
        if self.temperature is not None:
            out["temperature"] = self.temperature
        if self.env:
            out["env"] = dict(self.env)
        return out


@dataclass(frozen=True)
class Instances:
    """Run K copies (instances) of a test at once and pick the best by `criterion` (see `stress.run.instances`)."""

    count: int
    criterion: Literal["fastest", "longest", "cheapest", "most_patterns"]
    variants: tuple[Variant, ...] = ()

    def variant_for(self, index: int) -> Variant | None:
        """Instance `index` (0-based) uses variants[index % len(variants)]; None when none given."""
        if not 0 <= index < self.count:
            raise IndexError(f"instance {index} out of range 0..{self.count - 1}")
        return self.variants[index % len(self.variants)] if self.variants else None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"count": self.count, "criterion": self.criterion}
        if self.variants:
            out["variants"] = [v.to_json() for v in self.variants]
        return out


@dataclass(frozen=True, slots=True)
class Invocation:
    """Exactly one of `command` (run by /bin/sh -c) and `args` (run without a shell)."""

    command: str | None
    args: tuple[str, ...] | None
    env: Mapping[str, str | None]


@dataclass(frozen=True)
class SuiteTest:
    """One test (an entry of a suite) with every default applied. `command` xor `args` is what
    to run. Named SuiteTest, not Test, so pytest never takes it for a test class."""

    id: str
    name: str
    description: str
    tags: tuple[str, ...]
    kind: Literal["command", "args", "prompt"]
    """Which of command/args/prompt the suite gave. A prompt is rendered through the template."""
    command: str | None
    args: tuple[str, ...] | None
    prompt: str | None
    """The natural-language request, when there is one (prompt tests, unified-tasks tasks)."""
    expected_patterns: tuple[Pattern, ...]
    match: MatchRule
    must_not_contain: tuple[Pattern, ...]
    expect_exit: ExitExpectation
    timeout: float
    stall_timeout: float | None
    repeat: int
    pass_threshold: PassThreshold
    requires: tuple[str, ...]
    env: Mapping[str, str | None]
    cwd: str | None
    input: str | None
    instances: Instances | None
    source: Source
    extra: Mapping[str, Any] = field(default_factory=dict)
    expect_end: Literal["exited", "stalled", "timeout"] | None = None
    """How the run must end; None: by itself (judged by expect_exit). See verdict.EXPECTABLE_ENDS."""
    assertions: tuple[Assertion, ...] = ()
    """The `assert` list (`stress.suite.assertions`), {{vars}} filled."""
    threshold: float | None = None
    """Weighted share of assertions that must pass; None: every one (promptfoo's rule)."""
    test_id: str | None = None
    """The id of the test this case expands (None: the same as `id`, a test without vars)."""
    vars: Mapping[str, Any] = field(default_factory=dict)
    """This case's values of the test's vars."""
    origin: Any = None
    """The test object as the file wrote it, for --explain."""

    def invocation(self, instance: int | None = None) -> Invocation:
        """What to start, for the whole test or for one of its concurrent instances."""
        command, args, env = self.command, self.args, dict(self.env)
        variant = self.instances.variant_for(instance) if (self.instances and instance is not None) else None
        if variant is not None:
            if variant.args is not None:
                command, args = None, variant.args
            extra = list(variant.extra_args)
            if variant.model is not None:
                extra += ["--model", variant.model]
            if extra:
                if args is not None:
                    args = tuple(args) + tuple(extra)
                else:
                    command = f"{command} {shlex.join(extra)}"
            env.update(variant.env)
        return Invocation(command, args, env)

    def to_json(self) -> dict[str, Any]:
        """This test in our format (what `suite_to_json` writes): every value explicit."""
        out: dict[str, Any] = {"id": self.id, "name": self.name}
        if self.description:
            out["description"] = self.description
        if self.tags:
            out["tags"] = list(self.tags)
        if self.command is not None:
            out["command"] = self.command
        else:
            out["args"] = list(self.args or ())
        out["expected_patterns"] = [p.to_json() for p in self.expected_patterns]
        out["match"] = self.match.to_json()
        if self.must_not_contain:
            out["must_not_contain"] = [p.to_json() for p in self.must_not_contain]
        out["expect_exit"] = self.expect_exit.to_json()
        if self.expect_end is not None:
            out["expect_end"] = self.expect_end
        out["timeout"] = self.timeout
        out["stall_timeout"] = self.stall_timeout
        out["repeat"] = self.repeat
        if self.pass_threshold != ALL_REPEATS:
            out["pass_threshold"] = self.pass_threshold.to_json()
        if self.requires:
            out["requires"] = list(self.requires)
        if self.env:
            out["env"] = dict(self.env)
        if self.cwd is not None:
            out["cwd"] = self.cwd
        if self.input is not None:
            out["input"] = self.input
        if self.instances is not None:
            out["instances"] = self.instances.to_json()
        if self.assertions:
            out["assert"] = [a.to_json() for a in self.assertions]
        if self.threshold is not None:
            out["threshold"] = self.threshold
        extra = dict(self.extra)
        if self.vars:
            extra.setdefault("vars", dict(self.vars))
        if self.prompt is not None:
            extra.setdefault("prompt", self.prompt)
        extra.setdefault("source", str(self.source))
        out["extra"] = extra
        return out


@dataclass(frozen=True)
class Suite:
    """A loaded suite: its tests in file order, and the one ${TIMESTAMP} of this load."""

    name: str
    description: str
    path: Path
    format: str
    timestamp: str
    """The one ${TIMESTAMP} value substituted everywhere in this load."""
    tests: tuple[SuiteTest, ...]
    extra: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    """What an older format says that we read but do not act on ("$.path: message")."""

    def test(self, test_id: str) -> SuiteTest:
        for t in self.tests:
            if t.id == test_id:
                return t
        raise KeyError(f"suite {self.name!r} has no test {test_id!r}")

    def select(self, ids: Iterable[str] | None = None, tags: Iterable[str] | None = None) -> Suite:
        """A copy keeping tests whose id is in `ids` (if given) and that have any of `tags`."""
        idset = set(ids) if ids is not None else None
        tagset = set(tags) if tags is not None else None
        if idset is not None:
            unknown = idset - {t.id for t in self.tests}
            if unknown:
                raise KeyError(f"suite {self.name!r} has no test(s) {sorted(unknown)}")
        kept = tuple(
            t for t in self.tests
            if (idset is None or t.id in idset) and (tagset is None or tagset & set(t.tags))
        )
        return replace(self, tests=kept)


_TEXT_KEYS = ("name", "description", "command", "args", "expected_patterns", "must_not_contain",
              "env", "input", "assert")
"""Where our format reads {{var}} placeholders: a literal `{{` there is written `\\{{`."""


def _escape_braces(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("{{", "\\{{")
    if isinstance(value, list):
        return [_escape_braces(v) for v in value]
    if isinstance(value, dict):
        return {k: _escape_braces(v) for k, v in value.items()}
    return value


def suite_to_json(suite: Suite) -> dict[str, Any]:
    """A loaded suite (any format) written in our format, with every per-test value explicit."""
    out: dict[str, Any] = {"name": suite.name}
    if suite.description:
        out["description"] = suite.description
    out["tests"] = []
    position: dict[str, int] = {}
    for t in suite.tests:
        doc = {k: (_escape_braces(v) if k in _TEXT_KEYS else v) for k, v in t.to_json().items()}
        if t.test_id is not None and t.test_id != t.id:
            # A case of a matrix: its filled values stand alone under an id the format accepts.
            position[t.test_id] = position.get(t.test_id, 0) + 1
            doc["id"] = f"{t.test_id}-{position[t.test_id]}"
            doc["extra"]["case_id"] = t.id
        out["tests"].append(doc)
    extra = {"converted_from": {"file": str(suite.path), "format": suite.format}}
    if suite.extra:
        extra["original"] = dict(suite.extra)
    out["extra"] = extra
    return out

