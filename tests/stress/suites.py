"""Suites: our JSON format (schema in `suite.schema.json`) and the two older formats, read as is.

Why one loader for three formats: the suites written for earlier harnesses (the unified task list
of seed 004, the simple/medium/complex task lists of seed 002) are the corpus we are judged
against, and copying them into our format by hand would silently change what they test. So each
is read where it lies, mapped onto the same resolved `Test`, and every test remembers the file and
JSON path it came from so a report can cite it.

Why validate everything before running anything: a suite is usually run for minutes against a
real model; finding a typo in test 17 after 16 tests have run wastes that. `load_suite` therefore
reports every problem in a file at once, each with its JSON path (`$.tests[3].expect_exit`), and
raises before returning anything.

Validation uses pydantic models that mirror `suite.schema.json` (jsonschema isn't a dependency);
tests/test_suites.py checks that the two agree.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError

from .verdict import (
    ALL_REPEATS,
    EXIT_NONZERO,
    EXIT_ZERO,
    MATCH_ALL,
    MATCH_ANY,
    MATCH_NONE_REQUIRED,
    ExitExpectation,
    MatchRule,
    PassThreshold,
    Pattern,
    TextPattern,
    describe_json,
    parse_pattern,
)

SCHEMA_PATH = Path(__file__).with_name("suite.schema.json")
REPO_ROOT = Path(__file__).resolve().parents[2]

FORMAT_OURS = "cc_executor"
FORMAT_UNIFIED = "unified-tasks"
"""Seed 004's `unified_stress_test_tasks.json`: categories.<name>.tasks[]."""
FORMAT_TASK_LIST = "task-list"
"""Seed 002's simple/medium/complex files: a top-level tests[] with a suite-level timeout."""
FORMATS = (FORMAT_OURS, FORMAT_UNIFIED, FORMAT_TASK_LIST)

DEFAULT_TIMEOUT = 120.0
"""Seconds. Seed 004 measured 30-60 s of CLI start-up against the real API and set 120 s as floor."""
DEFAULT_CLAUDE_COMMAND: tuple[str, ...] = (
    "claude", "-p", "${PROMPT}", "--output-format", "stream-json", "--verbose",
)
SEED004_DEFAULT_COMMAND = (
    'claude -p "[marker:${MARKER}] ${METATAGS} ${REQUEST}" '
    "--dangerously-skip-permissions --allowedTools none"
)
"""What seed 004's runner sent for a task without command_template (marker LOCAL_<id>_<time>)."""
COMPLEX_MIN_RATIO = 0.8
"""Seed 002's complex runner passed a test at >= 80% of its patterns."""

ID_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
WORD_RE = r"^\S{1,128}$"
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PLACEHOLDERS = ("TIMESTAMP", "PROMPT", "REQUEST", "METATAGS", "TEST_ID", "MARKER")
_PLACEHOLDER_RE = re.compile(r"\$\{(" + "|".join(PLACEHOLDERS) + r")\}")
_SHELL_SPECIAL_IN_DQUOTES = frozenset('"$`\\')
_CLAUDE_RE = re.compile(r"(?:^|[\s;&|(/])claude(?=\s|$)")
CRITERIA = ("fastest", "longest", "cheapest", "most_patterns")
_SEED_CRITERIA = {"FASTEST": "fastest", "MOST_DETAILED": "longest", "LONGEST": "longest",
                  "CHEAPEST": "cheapest", "MOST_PATTERNS": "most_patterns"}


# ---------------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a suite file, located by JSON path (and line/column for bad JSON)."""

    path: str
    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = self.path
        if self.line is not None:
            where += f" (line {self.line}, column {self.column})"
        return f"{where}: {self.message}"


class SuiteError(ValueError):
    """A suite could not be loaded. `problems` lists everything wrong, not only the first."""

    def __init__(self, file: str | os.PathLike[str], problems: Sequence[Problem]):
        self.file = str(file)
        self.problems = tuple(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return f"{self.file}: {self.problems[0]}"
        lines = [f"{self.file}: {len(self.problems)} problems"]
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


def json_path(parts: Iterable[str | int]) -> str:
    """('tests', 3, 'expect_exit') -> '$.tests[3].expect_exit'; odd keys are quoted."""
    out = "$"
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_$]*", p):
            out += f".{p}"
        else:
            out += f"[{json.dumps(p)}]"
    return out


# ---------------------------------------------------------------------------------------------
# The resolved model: what the runner and the reports use, whatever the file format was.


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
    """Run K copies of a test at once and pick the best by `criterion` (the runner comes later)."""

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
class Test:
    """One test with every default applied. `command` xor `args` is what to run."""

    __test__: ClassVar[bool] = False  # not a pytest class

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
        extra = dict(self.extra)
        if self.prompt is not None:
            extra.setdefault("prompt", self.prompt)
        extra.setdefault("source", str(self.source))
        out["extra"] = extra
        return out


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    path: Path
    format: str
    timestamp: str
    """The one ${TIMESTAMP} value substituted everywhere in this load."""
    tests: tuple[Test, ...]
    extra: Mapping[str, Any] = field(default_factory=dict)

    def test(self, test_id: str) -> Test:
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


def suite_to_json(suite: Suite) -> dict[str, Any]:
    """A loaded suite (any format) written in our format, with every per-test value explicit."""
    out: dict[str, Any] = {"name": suite.name}
    if suite.description:
        out["description"] = suite.description
    out["tests"] = [t.to_json() for t in suite.tests]
    extra = {"converted_from": {"file": str(suite.path), "format": suite.format}}
    if suite.extra:
        extra["original"] = dict(suite.extra)
    out["extra"] = extra
    return out


# ---------------------------------------------------------------------------------------------
# Our format: pydantic models mirroring suite.schema.json (strict: no "5" for 5, no unknown keys)


def _plain(parse):
    """Run a JSON-form parser as a pydantic validator (its ValueError becomes a located problem)."""
    return PlainValidator(lambda v: parse(v))


def _parse_template(value: Any) -> str | tuple[str, ...]:
    if isinstance(value, str) and value.strip():
        text = value
    elif isinstance(value, list) and value and all(isinstance(a, str) for a in value):
        text = "\0".join(value)
        value = tuple(value)
    else:
        raise ValueError(
            "claude_command must be a non-empty string or a non-empty list of strings; "
            f"got {describe_json(value)}"
        )
    if "${PROMPT}" not in text and "${REQUEST}" not in text:
        raise ValueError("claude_command must contain ${PROMPT} (or ${REQUEST}) where the prompt goes")
    return value


PatternField = Annotated[Pattern, _plain(parse_pattern)]
MatchField = Annotated[MatchRule, _plain(MatchRule.from_json)]
ExitField = Annotated[ExitExpectation, _plain(ExitExpectation.from_json)]
ThresholdField = Annotated[PassThreshold, _plain(PassThreshold.from_json)]
TemplateField = Annotated[str | tuple[str, ...], _plain(_parse_template)]
Seconds = Annotated[float, Field(gt=0, le=86400)]
Repeat = Annotated[int, Field(ge=1, le=1000)]
Word = Annotated[str, Field(pattern=WORD_RE)]
NonEmpty = Annotated[str, Field(min_length=1)]
Argv = Annotated[list[str], Field(min_length=1)]
EnvMap = dict[str, str | None]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class VariantSpec(_Spec):
    label: str | None = None
    args: Argv | None = None
    extra_args: list[str] = []
    model: NonEmpty | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    env: EnvMap = {}


class InstancesSpec(_Spec):
    count: Annotated[int, Field(ge=1, le=64)]
    criterion: Literal["fastest", "longest", "cheapest", "most_patterns"]
    variants: list[VariantSpec] = []


class DefaultsSpec(_Spec):
    timeout: Seconds | None = None
    stall_timeout: Seconds | None = None
    match: MatchField | None = None
    repeat: Repeat | None = None
    expect_exit: ExitField | None = None
    claude_command: TemplateField | None = None


class TestSpec(_Spec):
    __test__: ClassVar[bool] = False

    id: Annotated[str, Field(pattern=ID_RE)]
    name: NonEmpty | None = None
    description: str = ""
    tags: list[Word] = []
    command: NonEmpty | None = None
    args: Argv | None = None
    prompt: NonEmpty | None = None
    expected_patterns: list[PatternField] = []
    match: MatchField | None = None
    must_not_contain: list[PatternField] = []
    expect_exit: ExitField | None = None
    expect_end: Literal["exited", "stalled", "timeout"] | None = None
    timeout: Seconds | None = None
    stall_timeout: Seconds | None = None
    repeat: Repeat | None = None
    pass_threshold: ThresholdField | None = None
    requires: list[Word] = []
    env: EnvMap = {}
    cwd: NonEmpty | None = None
    input: str | None = None
    instances: InstancesSpec | None = None
    extra: dict[str, Any] = {}


class SuiteSpec(_Spec):
    schema_: str | None = Field(None, alias="$schema")
    name: NonEmpty
    description: str = ""
    defaults: DefaultsSpec = DefaultsSpec()
    tests: Annotated[list[TestSpec], Field(min_length=1)]
    extra: dict[str, Any] = {}


SPEC_MODELS: dict[str, type[_Spec]] = {
    "suite": SuiteSpec, "defaults": DefaultsSpec, "test": TestSpec,
    "instances": InstancesSpec, "variant": VariantSpec,
}
"""Our models by the name of their `$defs` entry in suite.schema.json ("suite" is the root)."""

_KNOWN_KEYS = sorted({(f.alias or n) for m in SPEC_MODELS.values() for n, f in m.model_fields.items()})
_TYPE_WORDS = {
    "string_type": "must be a string", "int_type": "must be an integer",
    "float_type": "must be a number", "bool_type": "must be true or false",
    "list_type": "must be a list", "dict_type": "must be an object", "model_type": "must be an object",
    "int_from_float": "must be an integer", "none_required": "must be null",
}


def _pydantic_problems(err: ValidationError) -> list[tuple[tuple, Problem]]:
    out = []
    for e in err.errors():
        loc = tuple(e["loc"])
        kind, got = e["type"], e.get("input")
        if kind == "missing":
            msg = "required, but missing"
        elif kind == "extra_forbidden":
            key = str(loc[-1])
            close = difflib.get_close_matches(key, _KNOWN_KEYS, n=1, cutoff=0.75)
            msg = f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
        elif kind in _TYPE_WORDS:
            msg = f"{_TYPE_WORDS[kind]}, got {describe_json(got)}"
        elif kind in ("too_short", "string_too_short"):
            msg = "must not be empty"
        elif kind == "string_pattern_mismatch":
            last = next((p for p in reversed(loc) if isinstance(p, str)), "")
            if last == "id":
                msg = (f"{got!r} is not a valid id: 1-128 letters, digits, '_', '.', '-', "
                       "starting with a letter or digit")
            else:
                msg = f"{got!r} must be a single word without spaces (1-128 characters)"
        elif kind == "value_error" or kind.startswith("value_error"):
            msg = str(e["msg"]).removeprefix("Value error, ")
        else:
            msg = str(e["msg"]).replace("Input should be", "must be") + f", got {describe_json(got)}"
        out.append((loc, Problem(json_path(loc), msg)))
    return out


def _semantic_problems(raw: dict[str, Any], base_dir: Path) -> list[tuple[tuple, Problem]]:
    """Rules JSON-Schema-by-pydantic can't say well; tolerant of wrong types (pydantic reports those)."""
    out: list[tuple[tuple, Problem]] = []

    def add(loc: tuple, msg: str) -> None:
        out.append((loc, Problem(json_path(loc), msg)))

    defaults = raw.get("defaults") if isinstance(raw.get("defaults"), dict) else {}
    template = defaults.get("claude_command", list(DEFAULT_CLAUDE_COMMAND))
    tests = raw.get("tests")
    if not isinstance(tests, list):
        return out
    first_seen: dict[str, int] = {}
    for i, t in enumerate(tests):
        if not isinstance(t, dict):
            continue
        loc = ("tests", i)
        given = [k for k in ("command", "args", "prompt") if k in t]
        if not given:
            add(loc, "needs exactly one of 'command', 'args' or 'prompt'; none given")
        elif len(given) > 1:
            add(loc, f"give exactly one of 'command', 'args' or 'prompt', not {' and '.join(map(repr, given))}")
        tid = t.get("id")
        if isinstance(tid, str):
            if tid in first_seen:
                add(loc + ("id",), f"duplicate id {tid!r} (first used at {json_path(('tests', first_seen[tid], 'id'))})")
            else:
                first_seen[tid] = i
        prompt = t.get("prompt")
        if isinstance(prompt, str) and isinstance(template, str):
            bad = sorted(set(_PLACEHOLDER_RE.sub("", prompt)) & _SHELL_SPECIAL_IN_DQUOTES)
            if bad:
                add(loc + ("prompt",),
                    f"contains {' '.join(bad)}, which the shell would interpret inside the string "
                    "template $.defaults.claude_command; use a list template instead")
        repeat = t.get("repeat", defaults.get("repeat"))
        thr = t.get("pass_threshold")
        if isinstance(thr, dict) and isinstance(thr.get("of"), int) and isinstance(repeat, int) \
                and not isinstance(repeat, bool) and thr["of"] != repeat:
            add(loc + ("pass_threshold", "of"), f"{thr['of']} does not match repeat {repeat}")
        inst = t.get("instances")
        if isinstance(inst, dict) and isinstance(inst.get("count"), int) and isinstance(inst.get("variants"), list):
            if len(inst["variants"]) > inst["count"]:
                add(loc + ("instances", "variants"),
                    f"{len(inst['variants'])} variants for {inst['count']} instances; give at most count")
        env_locs = [(loc + ("env",), t.get("env"))]
        if isinstance(inst, dict) and isinstance(inst.get("variants"), list):
            env_locs += [(loc + ("instances", "variants", j, "env"), v.get("env"))
                         for j, v in enumerate(inst["variants"]) if isinstance(v, dict)]
        for eloc, env in env_locs:
            if isinstance(env, dict):
                for k in env:
                    if not ENV_NAME_RE.match(k):
                        add(eloc + (k,), f"{k!r} is not a valid environment variable name")
        cwd = t.get("cwd")
        if isinstance(cwd, str) and cwd and not (base_dir / cwd).is_dir():
            add(loc + ("cwd",), f"directory {cwd!r} does not exist (relative to {base_dir})")
    return out


def _substitute(text: str, values: Mapping[str, str]) -> str:
    """Replace only our ${NAME} placeholders, in one pass: `$HOME`, `$$` and `${HOME}` stay shell's."""
    return _PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def _mentions_claude(command: str | None, args: Sequence[str] | None) -> bool:
    if command is not None:
        return bool(_CLAUDE_RE.search(command))
    return any(os.path.basename(a) == "claude" for a in args or ())


def _load_ours(raw: Any, file: Path, timestamp: str) -> Suite:
    if not isinstance(raw, dict):
        raise SuiteError(file, [Problem("$", f"a suite must be a JSON object, got {describe_json(raw)}")])
    base_dir = file.parent
    located: list[tuple[tuple, Problem]] = []
    spec: SuiteSpec | None = None
    try:
        spec = SuiteSpec.model_validate(raw)
    except ValidationError as e:
        located += _pydantic_problems(e)
    located += _semantic_problems(raw, base_dir)
    if located:
        raise SuiteError(file, _ordered(located))
    assert spec is not None

    d = spec.defaults
    template = d.claude_command if d.claude_command is not None else DEFAULT_CLAUDE_COMMAND
    tests = []
    for i, t in enumerate(spec.tests):
        values = {"TIMESTAMP": timestamp, "TEST_ID": t.id}
        sub = lambda s: _substitute(s, values)  # noqa: E731
        command = sub(t.command) if t.command is not None else None
        args = tuple(sub(a) for a in t.args) if t.args is not None else None
        prompt = sub(t.prompt) if t.prompt is not None else None
        if prompt is not None:
            metatags = t.extra.get("metatags", "")
            pv = {**values, "PROMPT": prompt, "REQUEST": prompt,
                  "METATAGS": metatags if isinstance(metatags, str) else ""}
            if isinstance(template, str):
                command = _substitute(template, pv)
            else:
                args = tuple(_substitute(a, pv) for a in template)
        kind = "command" if t.command is not None else "args" if t.args is not None else "prompt"
        stall = t.stall_timeout if "stall_timeout" in t.model_fields_set else d.stall_timeout
        repeat = t.repeat or d.repeat or (t.pass_threshold.of if t.pass_threshold and t.pass_threshold.of else 1)
        cwd = str((base_dir / t.cwd).resolve()) if t.cwd is not None else None
        instances = None
        if t.instances is not None:
            instances = Instances(
                count=t.instances.count,
                criterion=t.instances.criterion,
                variants=tuple(
                    Variant(
                        label=v.label,
                        args=tuple(sub(a) for a in v.args) if v.args is not None else None,
                        extra_args=tuple(sub(a) for a in v.extra_args),
                        model=v.model, temperature=v.temperature,
                        env={k: (sub(x) if x is not None else None) for k, x in v.env.items()},
                    )
                    for v in t.instances.variants
                ),
            )
        tests.append(Test(
            id=t.id,
            name=t.name or t.id,
            description=t.description,
            tags=tuple(t.tags),
            kind=kind,
            command=command,
            args=args,
            prompt=prompt,
            expected_patterns=tuple(t.expected_patterns),
            match=t.match or d.match or MATCH_ALL,
            must_not_contain=tuple(t.must_not_contain),
            expect_exit=t.expect_exit or d.expect_exit or EXIT_ZERO,
            timeout=t.timeout or d.timeout or DEFAULT_TIMEOUT,
            stall_timeout=stall,
            repeat=repeat,
            pass_threshold=t.pass_threshold or ALL_REPEATS,
            requires=tuple(t.requires),
            env={k: (sub(v) if v is not None else None) for k, v in t.env.items()},
            cwd=cwd,
            input=sub(t.input) if t.input is not None else None,
            instances=instances,
            source=Source(str(file), json_path(("tests", i))),
            extra=dict(t.extra),
            expect_end=t.expect_end,
        ))
    return Suite(spec.name, spec.description, file, FORMAT_OURS, timestamp, tuple(tests), dict(spec.extra))


def _ordered(located: list[tuple[tuple, Problem]]) -> list[Problem]:
    """Problems in document order of tests (suite-level first), duplicates dropped."""
    def key(item: tuple[tuple, Problem]) -> int:
        loc = item[0]
        return loc[1] if len(loc) > 1 and loc[0] == "tests" and isinstance(loc[1], int) else -1
    seen: set[str] = set()
    out = []
    for _, p in sorted(located, key=key):
        if str(p) not in seen:
            seen.add(str(p))
            out.append(p)
    return out


# ---------------------------------------------------------------------------------------------
# Foreign formats: a small checker that collects problems but keeps going.


class _Checker:
    def __init__(self) -> None:
        self.problems: list[tuple[tuple, Problem]] = []

    def add(self, loc: tuple, msg: str) -> None:
        self.problems.append((loc, Problem(json_path(loc), msg)))

    def get(self, obj: Mapping[str, Any], key: str, loc: tuple, kind: str, *, required: bool = False,
            default: Any = None) -> Any:
        """obj[key] if it has the JSON `kind` (string|number|bool|object|list|strings), else default."""
        if key not in obj:
            if required:
                self.add(loc + (key,), "required, but missing")
            return default
        v = obj[key]
        ok = {
            "string": isinstance(v, str),
            "number": isinstance(v, int | float) and not isinstance(v, bool) and v > 0,
            "bool": isinstance(v, bool),
            "object": isinstance(v, dict),
            "list": isinstance(v, list),
            "strings": isinstance(v, list) and all(isinstance(x, str) and x for x in v),
        }[kind]
        if not ok:
            want = {"string": "a string", "number": "a positive number", "bool": "true or false",
                    "object": "an object", "list": "a list",
                    "strings": "a list of non-empty strings"}[kind]
            self.add(loc + (key,), f"must be {want}, got {describe_json(v)}")
            return default
        return v

    def check_id(self, tid: Any, loc: tuple, seen: dict[str, tuple]) -> None:
        if not isinstance(tid, str):
            return
        if not re.match(ID_RE, tid):
            self.add(loc, f"{tid!r} is not a valid id: 1-128 letters, digits, '_', '.', '-', "
                          "starting with a letter or digit")
        elif tid in seen:
            self.add(loc, f"duplicate id {tid!r} (first used at {json_path(seen[tid])})")
        else:
            seen[tid] = loc

    def raise_if_any(self, file: Path) -> None:
        if self.problems:
            raise SuiteError(file, _ordered(self.problems))


_UNIFIED_TASK_KEYS = {"id", "name", "natural_language_request", "command_template", "metatags",
                      "verification", "concurrent_instances", "evaluation_criteria", "models",
                      "temperature_range"}
_UNIFIED_VERIFY_KEYS = {"expected_patterns", "timeout", "stall_timeout", "marker",
                        "expect_non_zero_exit", "save_output", "description"}


def _metatag_tags(metatags: str) -> list[str]:
    """'[category:stress_test][complexity:simple]' -> ['category:stress_test', 'complexity:simple']."""
    return [m.strip() for m in re.findall(r"\[([^\[\]\s]+)\]", metatags)]


def _unified_instances(ck: _Checker, task: dict, loc: tuple) -> Instances | None:
    count = ck.get(task, "concurrent_instances", loc, "number")
    if count is None:
        return None
    if not isinstance(count, int) or not 1 <= count <= 64:
        ck.add(loc + ("concurrent_instances",), f"must be an integer from 1 to 64, got {describe_json(count)}")
        return None
    crit_raw = ck.get(task, "evaluation_criteria", loc, "string", required=True)
    criterion = None
    if crit_raw is not None:
        criterion = _SEED_CRITERIA.get(crit_raw.upper()) or (crit_raw if crit_raw in CRITERIA else None)
        if criterion is None:
            ck.add(loc + ("evaluation_criteria",),
                   f"unknown criterion {crit_raw!r} (known: {', '.join(sorted(_SEED_CRITERIA))})")
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


def _load_unified(raw: dict[str, Any], file: Path, timestamp: str) -> Suite:
    ck = _Checker()
    categories = ck.get(raw, "categories", (), "object", required=True, default={})
    exec_cfg = raw.get("execution_config") if isinstance(raw.get("execution_config"), dict) else {}
    default_timeout = exec_cfg.get("default_timeout")
    if not (isinstance(default_timeout, int | float) and not isinstance(default_timeout, bool)
            and default_timeout > 0):
        default_timeout = DEFAULT_TIMEOUT
    seen: dict[str, tuple] = {}
    tests: list[Test] = []
    for cat, body in categories.items():
        cloc = ("categories", cat)
        if not isinstance(body, dict):
            ck.add(cloc, f"must be an object with 'tasks', got {describe_json(body)}")
            continue
        tasks = ck.get(body, "tasks", cloc, "list", required=True, default=[])
        cat_desc = body.get("description") if isinstance(body.get("description"), str) else ""
        for i, task in enumerate(tasks):
            loc = cloc + ("tasks", i)
            if not isinstance(task, dict):
                ck.add(loc, f"a task must be an object, got {describe_json(task)}")
                continue
            tid = ck.get(task, "id", loc, "string", required=True)
            ck.check_id(tid, loc + ("id",), seen)
            name = ck.get(task, "name", loc, "string", default=tid)
            request = ck.get(task, "natural_language_request", loc, "string")
            template = ck.get(task, "command_template", loc, "string")
            if request is None and template is None and not ({"natural_language_request", "command_template"} & set(task)):
                ck.add(loc, "needs 'natural_language_request' or 'command_template'")
            metatags = ck.get(task, "metatags", loc, "string", default="")
            ver = ck.get(task, "verification", loc, "object", required=True, default={})
            vloc = loc + ("verification",)
            patterns = ck.get(ver, "expected_patterns", vloc, "strings", default=[])
            timeout = ck.get(ver, "timeout", vloc, "number", default=default_timeout)
            stall = ck.get(ver, "stall_timeout", vloc, "number")
            marker = ck.get(ver, "marker", vloc, "string")
            non_zero = ck.get(ver, "expect_non_zero_exit", vloc, "bool", default=False)
            ck.get(ver, "save_output", vloc, "bool")
            instances = _unified_instances(ck, task, loc)
            if not isinstance(tid, str):
                continue

            ts = {"TIMESTAMP": timestamp}
            request_s = _substitute(request or "", ts)
            metatags_s = _substitute(metatags, ts)
            marker_s = _substitute(marker, ts) if marker else None
            values = {**ts, "METATAGS": metatags_s, "REQUEST": request_s, "PROMPT": request_s,
                      "TEST_ID": tid, "MARKER": f"LOCAL_{tid}_{timestamp}"}
            command = _substitute(template if template is not None else SEED004_DEFAULT_COMMAND, values)
            negative = tid.startswith("failure_") or non_zero is True
            needs = []
            if _mentions_claude(command, None):
                needs.append("claude")
                if not negative:
                    needs.append("real-model")
            extra: dict[str, Any] = {"category": cat}
            if metatags:
                extra["metatags"] = metatags_s
            if marker_s:
                extra["marker"] = marker_s
            if "save_output" in ver:
                extra["save_output"] = ver["save_output"]
            if template is None:
                extra["default_command"] = True
            unknown = {k: v for k, v in task.items() if k not in _UNIFIED_TASK_KEYS}
            extra.update(unknown)
            unknown_v = {k: v for k, v in ver.items() if k not in _UNIFIED_VERIFY_KEYS}
            if unknown_v:
                extra["verification"] = unknown_v
            tests.append(Test(
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
                requires=tuple(needs),
                env={},
                cwd=None,
                input=None,
                instances=instances,
                source=Source(str(file), json_path(loc)),
                extra=extra,
            ))
    if not categories and not ck.problems:
        ck.add(("categories",), "must contain at least one category")
    elif categories and not tests and not ck.problems:
        ck.add(("categories",), "contains no tasks")
    ck.raise_if_any(file)
    name = raw.get("task_list_id") if isinstance(raw.get("task_list_id"), str) else file.stem
    desc = raw.get("description") if isinstance(raw.get("description"), str) else ""
    suite_extra = {k: v for k, v in raw.items() if k not in ("categories", "description")}
    suite_extra["categories"] = {
        c: {k: v for k, v in b.items() if k != "tasks"} for c, b in categories.items() if isinstance(b, dict)
    }
    return Suite(name, desc, file, FORMAT_UNIFIED, timestamp, tuple(tests), suite_extra)


_TASK_LIST_TEST_KEYS = {"id", "name", "description", "command", "expected_patterns"}


def is_complex_task_list(raw: Mapping[str, Any], file: Path) -> bool:
    """Seed 002 held complex suites to 80% of patterns; we know one by its id or file name."""
    tlid = raw.get("task_list_id")
    return "complex" in file.name.lower() or (isinstance(tlid, str) and "complex" in tlid.lower())


def _load_task_list(raw: dict[str, Any], file: Path, timestamp: str, complex_suite: bool | None) -> Suite:
    ck = _Checker()
    timeout = ck.get(raw, "timeout", (), "number", default=DEFAULT_TIMEOUT)
    tests_raw = ck.get(raw, "tests", (), "list", required=True, default=[])
    if "tests" in raw and isinstance(raw["tests"], list) and not raw["tests"]:
        ck.add(("tests",), "must contain at least one test")
    is_complex = complex_suite if complex_suite is not None else is_complex_task_list(raw, file)
    # The earlier simple and medium runners failed a test unless every pattern was found.
    match = MatchRule("min_ratio", COMPLEX_MIN_RATIO) if is_complex else MATCH_ALL
    seen: dict[str, tuple] = {}
    tests: list[Test] = []
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
        command = _substitute(command, {"TIMESTAMP": timestamp, "TEST_ID": tid})
        claude = _mentions_claude(command, None)
        tests.append(Test(
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


# ---------------------------------------------------------------------------------------------
# Reading files


class _JsonObject(dict):
    """A JSON object that remembers keys it saw twice (json.load keeps only the last)."""

    duplicates: list[str]


def _pairs_hook(pairs: list[tuple[str, Any]]) -> _JsonObject:
    obj = _JsonObject()
    obj.duplicates = []
    for k, v in pairs:
        if k in obj and k not in obj.duplicates:
            obj.duplicates.append(k)
        obj[k] = v
    return obj


def _plain_json(value: Any, loc: tuple, dups: list[Problem]) -> Any:
    """Back to plain dicts, reporting duplicate keys with their paths."""
    if isinstance(value, _JsonObject):
        for k in value.duplicates:
            dups.append(Problem(json_path(loc + (k,)), "key appears more than once in this object"))
        return {k: _plain_json(v, loc + (k,), dups) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_json(v, loc + (i,), dups) for i, v in enumerate(value)]
    return value


def read_json(file: Path) -> Any:
    """Parse a suite file; SuiteError with line and column for bad JSON, paths for duplicate keys."""
    try:
        data = file.read_bytes()
    except OSError as e:
        raise SuiteError(file, [Problem("$", f"cannot read the file: {e.strerror or e}")]) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SuiteError(file, [Problem("$", f"not UTF-8 text (bad byte at offset {e.start})")]) from None
    try:
        parsed = json.loads(text, object_pairs_hook=_pairs_hook)
    except json.JSONDecodeError as e:
        raise SuiteError(file, [Problem("$", f"invalid JSON: {e.msg}", e.lineno, e.colno)]) from None
    dups: list[Problem] = []
    plain = _plain_json(parsed, (), dups)
    if dups:
        raise SuiteError(file, dups)
    return plain


_OUR_ONLY_SUITE_KEYS = {"$schema", "name", "defaults", "extra"}
_OUR_ONLY_TEST_KEYS = {"args", "prompt", "match", "must_not_contain", "expect_exit", "expect_end",
                       "stall_timeout",
                       "repeat", "pass_threshold", "requires", "env", "cwd", "input", "instances",
                       "tags", "extra"}


def detect_format(raw: Any) -> str:
    """Which format a parsed file is in. Ambiguous files are taken as ours (strictest checks)."""
    if not isinstance(raw, dict):
        return FORMAT_OURS
    if "categories" in raw and "tests" not in raw and not (_OUR_ONLY_SUITE_KEYS & set(raw)):
        return FORMAT_UNIFIED
    if _OUR_ONLY_SUITE_KEYS & set(raw):
        return FORMAT_OURS
    tests = raw.get("tests")
    if isinstance(tests, list) and ("task_list_id" in raw or "timeout" in raw):
        if not any(isinstance(t, dict) and _OUR_ONLY_TEST_KEYS & set(t) for t in tests):
            return FORMAT_TASK_LIST
    return FORMAT_OURS


def new_timestamp() -> str:
    """The ${TIMESTAMP} value: local time as seed 004 wrote it (YYYYmmdd_HHMMSS)."""
    return datetime.now().strftime("%Y%m%d_%H%M%S")


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
    fmt = suite_format or detect_format(raw)
    if fmt not in FORMATS:
        raise ValueError(f"unknown suite format {fmt!r} (expected one of {FORMATS})")
    ts = timestamp or new_timestamp()
    if fmt == FORMAT_OURS:
        return _load_ours(raw, file, ts)
    if not isinstance(raw, dict):
        raise SuiteError(file, [Problem("$", f"a suite must be a JSON object, got {describe_json(raw)}")])
    if fmt == FORMAT_UNIFIED:
        return _load_unified(raw, file, ts)
    return _load_task_list(raw, file, ts, complex_suite)
