"""Our suite format (schema in `suite.schema.json`): validate a parsed file, then resolve its tests.

Why pydantic models that mirror the schema (and not jsonschema, which isn't a dependency): they
give strict types (no "5" for 5, no unknown keys) and located errors for free; tests/harness/test_suites.py
checks that the models and the schema agree (`SPEC_MODELS`). Rules a schema can't say well (one
of command/args/prompt, unique ids, a prompt unsafe in a string template, an existing cwd) are
checked beside them, tolerant of wrong types, so one load reports every problem in the file.

Resolving applies the suite's defaults to each test, substitutes our placeholders and renders a
prompt through `defaults.claude_command`, giving the `SuiteTest` every format ends in.

Imports the suite helpers (`stress.suite.model`, `stress.suite.problems`, `stress.suite.placeholders`) and
`stress.suite.verdict`: never `stress.suite` (which imports this), never the service's internals
(`cc_executor.jobs/server/process/tree/registry`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError

from stress.suite.assertions import Assertion, parse_assertion
from stress.suite.matrix import PlaceholderError, check_vars, expand, fill_json
from stress.suite.model import (
    DEFAULT_TIMEOUT,
    FORMAT_OURS,
    ID_RE,
    Criterion,
    Instances,
    Source,
    Suite,
    SuiteTest,
    Variant,
)
from stress.suite.placeholders import (
    PLACEHOLDER_RE,
    SHELL_SPECIAL_IN_DQUOTES,
    substitute,
)
from stress.suite.problems import (
    Located,
    Problem,
    SuiteError,
    invalid_id,
    json_path,
    ordered_problems,
)
from stress.suite.verdict import (
    ALL_REPEATS,
    EXIT_ZERO,
    MATCH_ALL,
    ExitExpectation,
    MatchRule,
    PassThreshold,
    Pattern,
    describe_json,
    parse_pattern,
)

DEFAULT_CLAUDE_COMMAND: tuple[str, ...] = (
    "claude", "-p", "${PROMPT}", "--output-format", "stream-json", "--verbose",
)
"""How a prompt test runs when the suite sets no `defaults.claude_command`."""
WORD_RE = r"^\S{1,128}$"
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# ---------------------------------------------------------------------------------------------
# The models: pydantic mirrors of suite.schema.json (strict: no "5" for 5, no unknown keys)


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
AssertionField = Annotated[Assertion, _plain(parse_assertion)]
Seconds = Annotated[float, Field(gt=0, le=86400)]
Repeat = Annotated[int, Field(ge=1, le=1000)]
Word = Annotated[str, Field(pattern=WORD_RE)]
NonEmpty = Annotated[str, Field(min_length=1)]
Argv = Annotated[list[str], Field(min_length=1)]
EnvMap = dict[str, str | None]


class _Spec(BaseModel):
    """Strict and closed, like the schema: no coercion, no unknown keys."""

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
    criterion: Criterion
    variants: list[VariantSpec] = []


class DefaultsSpec(_Spec):
    timeout: Seconds | None = None
    stall_timeout: Seconds | None = None
    match: MatchField | None = None
    repeat: Repeat | None = None
    expect_exit: ExitField | None = None
    claude_command: TemplateField | None = None
    assert_: list[AssertionField] = Field([], alias="assert")


class SuiteTestSpec(_Spec):
    """One entry of `tests` as written (named SuiteTestSpec so pytest never collects it)."""

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
    assert_: list[AssertionField] = Field([], alias="assert")
    threshold: Annotated[float, Field(ge=0, le=1)] | None = None
    vars: dict[str, Any] = {}
    extra: dict[str, Any] = {}


class SuiteSpec(_Spec):
    schema_: str | None = Field(None, alias="$schema")
    name: NonEmpty
    description: str = ""
    defaults: DefaultsSpec = DefaultsSpec()
    tests: Annotated[list[SuiteTestSpec], Field(min_length=1)]
    extra: dict[str, Any] = {}


SPEC_MODELS: dict[str, type[_Spec]] = {
    "suite": SuiteSpec, "defaults": DefaultsSpec, "test": SuiteTestSpec,
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



def load_ours(raw: Any, file: Path, timestamp: str) -> Suite:
    """A file in our format, validated in full (SuiteError lists every problem), then resolved."""
    if not isinstance(raw, dict):
        raise SuiteError(file, [Problem("$", f"a suite must be a JSON object, got {describe_json(raw)}")])
    spec = _validate(raw, file)
    d = spec.defaults
    template = d.claude_command if d.claude_command is not None else DEFAULT_CLAUDE_COMMAND
    tests: list[SuiteTest] = []
    located: list[Located] = []
    for i, t in enumerate(raw["tests"]):
        tests += _cases(t, i, d, template, file, timestamp, located, raw.get("defaults"))
    if located:
        raise SuiteError(file, ordered_problems(located))
    return Suite(spec.name, spec.description, file, FORMAT_OURS, timestamp, tuple(tests), dict(spec.extra))


FILLED_KEYS = ("name", "description", "command", "args", "prompt", "expected_patterns",
               "must_not_contain", "assert", "env", "input", "instances")
"""Where {{var}} placeholders are filled (and `\\{{` unescaped) in a test of our format."""


def _cases(raw_t: dict[str, Any], i: int, d: DefaultsSpec, template: str | tuple[str, ...],
           file: Path, timestamp: str, located: list[Located],
           raw_defaults: dict[str, Any] | None = None) -> list[SuiteTest]:
    """Test `i` as its cases: one per combination of its vars (one when it has none), each
    with the placeholders filled (`defaults.assert` put before the test's own assertions),
    validated again and resolved under the case id."""
    out = []
    shared = (raw_defaults or {}).get("assert", [])
    for case in expand(raw_t.get("vars") or {}):
        filled = {k: (fill_json(v, case.values, typed=k == "assert") if k in FILLED_KEYS else v)
                  for k, v in raw_t.items()}
        if shared:
            try:
                filled["assert"] = fill_json(shared, case.values, typed=True) + filled.get("assert", [])
            except PlaceholderError as e:
                loc = ("defaults", "assert")
                located.append((loc, Problem(json_path(loc), f"{e} (in test {raw_t['id']!r})")))
                continue
        try:  # {{vars}} in the claude_command (e.g. "--model", "{{model}}") are this case's too
            case_template = _filled_template(template, case.values) if "prompt" in raw_t else template
        except PlaceholderError as e:
            loc = ("defaults", "claude_command")
            located.append((loc, Problem(json_path(loc), f"{e} (in test {raw_t['id']!r})")))
            continue
        bad = _shell_specials(case_template, filled.get("prompt")) if case.suffix else ""
        if bad:  # the raw prompt was checked; a var's value must not bring them in either
            loc = ("tests", i, "vars")
            located.append((loc, Problem(json_path(loc), f"case {raw_t['id']}{case.suffix}: the prompt "
                            f"gets {bad} from a var, which the shell would interpret inside the string "
                            "template $.defaults.claude_command; use a list template instead")))
            continue
        try:
            spec_t = SuiteTestSpec.model_validate(filled)
        except ValidationError as e:
            for loc, p in _pydantic_problems(e):
                full = ("tests", i, *loc)
                located.append((full, Problem(json_path(full), f"{p.message} (case {raw_t['id']}{case.suffix})")))
            continue
        t = _resolve_test(spec_t, i, d, case_template, file, timestamp)
        out.append(replace(t, id=t.id + case.suffix, test_id=t.id if case.suffix else None,
                           vars=dict(case.values), origin=raw_t))
    return out


def _validate(raw: dict[str, Any], file: Path) -> SuiteSpec:
    """The file as our models, or SuiteError with the model's and the semantic problems together."""
    located: list[Located] = []
    spec: SuiteSpec | None = None
    try:
        spec = SuiteSpec.model_validate(raw)
    except ValidationError as e:
        located += _pydantic_problems(e)
    located += _semantic_problems(raw, file.parent)
    if located:
        raise SuiteError(file, ordered_problems(located))
    assert spec is not None
    return spec


# ---------------------------------------------------------------------------------------------
# Problems, in words a suite's author reads


_PROMPTFOO_KEYS = {
    "defaultTest": " (promptfoo's defaultTest: here defaults, e.g. defaults.assert)",
    "prompts": " (promptfoo's prompts: here each test has its own prompt; a matrix is its vars)",
    "providers": ' (promptfoo\'s providers: here defaults.claude_command, e.g. "--model", "{{model}}")',
    "options": " (promptfoo's options: here a test's keys, e.g. threshold, repeat)",
}
"""What a promptfoo user moving over writes out of habit, and where it lives here."""


def _pydantic_problems(err: ValidationError) -> list[Located]:
    """Pydantic's errors, reworded: a close known key for a typo, a JSON-ish word for a type."""
    out = []
    for e in err.errors():
        loc = tuple(e["loc"])
        kind, got = e["type"], e.get("input")
        if kind == "missing":
            msg = "required, but missing"
        elif kind == "extra_forbidden":
            key = str(loc[-1])
            close = difflib.get_close_matches(key, _KNOWN_KEYS, n=1, cutoff=0.75)
            msg = f"unknown key {key!r}" + (_PROMPTFOO_KEYS.get(key) or
                                            (f" (did you mean {close[0]!r}?)" if close else ""))
        elif kind in _TYPE_WORDS:
            msg = f"{_TYPE_WORDS[kind]}, got {describe_json(got)}"
        elif kind in ("too_short", "string_too_short"):
            msg = "must not be empty"
        elif kind == "string_pattern_mismatch":
            last = next((p for p in reversed(loc) if isinstance(p, str)), "")
            if last == "id":
                msg = invalid_id(got)
            else:
                msg = f"{got!r} must be a single word without spaces (1-128 characters)"
        elif kind == "value_error" or kind.startswith("value_error"):
            msg = str(e["msg"]).removeprefix("Value error, ")
        else:
            msg = str(e["msg"]).replace("Input should be", "must be") + f", got {describe_json(got)}"
        out.append((loc, Problem(json_path(loc), msg)))
    return out


def _semantic_problems(raw: dict[str, Any], base_dir: Path) -> list[Located]:
    """Rules JSON-Schema-by-pydantic can't say well; tolerant of wrong types (pydantic reports those)."""
    defaults = raw.get("defaults") if isinstance(raw.get("defaults"), dict) else {}
    tests = raw.get("tests")
    if not isinstance(tests, list):
        return []
    out: list[Located] = []
    first_seen: dict[str, int] = {}
    for i, t in enumerate(tests):
        if isinstance(t, dict):
            out += _test_problems(t, i, defaults, base_dir, first_seen)
    return out


def _test_problems(t: dict[str, Any], i: int, defaults: dict[str, Any], base_dir: Path,
                   first_seen: dict[str, int]) -> list[Located]:
    """Test `i`'s semantic problems, in the order a reader meets its keys. `first_seen` maps each
    id to the first test that used it; a new id is added to it."""
    out: list[Located] = []
    loc = ("tests", i)

    def add(where: tuple, msg: str) -> None:
        out.append((where, Problem(json_path(where), msg)))

    given = [k for k in ("command", "args", "prompt") if k in t]
    if not given:
        add(loc, "needs exactly one of 'command', 'args' or 'prompt'; none given")
    elif len(given) > 1:
        add(loc, f"give exactly one of 'command', 'args' or 'prompt', not {' and '.join(map(repr, given))}")
    tid = t.get("id")
    if isinstance(tid, str) and tid in first_seen:
        add(loc + ("id",), f"duplicate id {tid!r} (first used at {json_path(('tests', first_seen[tid], 'id'))})")
    elif isinstance(tid, str):
        first_seen[tid] = i
    prompt = t.get("prompt")
    template = defaults.get("claude_command", list(DEFAULT_CLAUDE_COMMAND))
    bad = _shell_specials(template, prompt)
    if bad:
        add(loc + ("prompt",),
            f"contains {bad}, which the shell would interpret inside the string "
            "template $.defaults.claude_command; use a list template instead")
    repeat = t.get("repeat", defaults.get("repeat"))
    thr = t.get("pass_threshold")
    if isinstance(thr, dict) and isinstance(thr.get("of"), int) and isinstance(repeat, int) \
            and not isinstance(repeat, bool) and thr["of"] != repeat:
        add(loc + ("pass_threshold", "of"), f"{thr['of']} does not match repeat {repeat}")
    inst = t.get("instances") if isinstance(t.get("instances"), dict) else {}
    count, variants = inst.get("count"), inst.get("variants")
    if isinstance(count, int) and isinstance(variants, list) and len(variants) > count:
        add(loc + ("instances", "variants"), f"{len(variants)} variants for {count} instances; give at most count")
    env_locs = [(loc + ("env",), t.get("env"))]
    if isinstance(variants, list):
        env_locs += [(loc + ("instances", "variants", j, "env"), v.get("env"))
                     for j, v in enumerate(variants) if isinstance(v, dict)]
    for eloc, env in env_locs:
        if isinstance(env, dict):
            for k in env:
                if not ENV_NAME_RE.match(k):
                    add(eloc + (k,), f"{k!r} is not a valid environment variable name")
    cwd = t.get("cwd")
    if isinstance(cwd, str) and cwd and not (base_dir / cwd).is_dir():
        add(loc + ("cwd",), f"directory {cwd!r} does not exist (relative to {base_dir})")
    out += _var_problems(t, loc)
    return out


def _shell_specials(template: Any, prompt: Any) -> str:
    """The characters of `prompt` a string (shell) template would interpret, space-separated."""
    if not (isinstance(prompt, str) and isinstance(template, str)):
        return ""
    return " ".join(sorted(set(PLACEHOLDER_RE.sub("", prompt)) & SHELL_SPECIAL_IN_DQUOTES))


def _filled_template(template: str | tuple[str, ...], values: dict[str, Any]) -> str | tuple[str, ...]:
    filled = fill_json(template if isinstance(template, str) else list(template), values)
    return filled if isinstance(filled, str) else tuple(filled)


def _var_problems(t: dict[str, Any], loc: tuple) -> list[Located]:
    """A bad `vars` object, and every {{name}} that names no var (found per key)."""
    out: list[Located] = []
    raw_vars = t.get("vars", {})
    for msg in check_vars(raw_vars):
        out.append((loc + ("vars",), Problem(json_path(loc + ("vars",)), msg)))
    names = {k: None for k in raw_vars} if isinstance(raw_vars, dict) else {}
    for key in FILLED_KEYS:
        if key in t:
            out += _placeholder_problems(t[key], names, loc + (key,))
    return out


def _placeholder_problems(value: Any, names: dict[str, None], loc: tuple) -> list[Located]:
    """Every string under `value` naming an unknown {{var}}, each at its own path
    (`$.tests[2].assert[0].value`, not just `assert`)."""
    if isinstance(value, list | dict):
        items = enumerate(value) if isinstance(value, list) else value.items()
        return [p for k, v in items for p in _placeholder_problems(v, names, loc + (k,))]
    try:
        fill_json(value, names)
    except PlaceholderError as e:
        return [(loc, Problem(json_path(loc), str(e)))]
    return []


# ---------------------------------------------------------------------------------------------
# Resolving: every default applied, placeholders substituted, prompts rendered


def _resolve_test(t: SuiteTestSpec, i: int, d: DefaultsSpec, template: str | tuple[str, ...],
                  file: Path, timestamp: str) -> SuiteTest:
    """Test `i` of the file with the suite's defaults (then ours) filling what it leaves out."""
    values = {"TIMESTAMP": timestamp, "TEST_ID": t.id}

    def sub(s: str) -> str:
        return substitute(s, values)

    kind, command, args, prompt = _what_to_run(t, template, values)
    stall = t.stall_timeout if "stall_timeout" in t.model_fields_set else d.stall_timeout
    repeat = t.repeat or d.repeat or (t.pass_threshold.of if t.pass_threshold and t.pass_threshold.of else 1)
    return SuiteTest(
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
        cwd=str((file.parent / t.cwd).resolve()) if t.cwd is not None else None,
        input=sub(t.input) if t.input is not None else None,
        instances=_resolve_instances(t.instances, sub) if t.instances is not None else None,
        source=Source(str(file), json_path(("tests", i))),
        extra=dict(t.extra),
        expect_end=t.expect_end,
        assertions=tuple(t.assert_),
        threshold=t.threshold,
    )


def _what_to_run(t: SuiteTestSpec, template: str | tuple[str, ...], values: dict[str, str]
                 ) -> tuple[Literal["command", "args", "prompt"], str | None, tuple[str, ...] | None, str | None]:
    """(kind, command, args, prompt). A prompt is rendered through the template: a string template
    gives a shell command, a list template an argv."""
    command = substitute(t.command, values) if t.command is not None else None
    args = tuple(substitute(a, values) for a in t.args) if t.args is not None else None
    prompt = substitute(t.prompt, values) if t.prompt is not None else None
    if prompt is not None:
        metatags = t.extra.get("metatags", "")
        pv = {**values, "PROMPT": prompt, "REQUEST": prompt,
              "METATAGS": metatags if isinstance(metatags, str) else ""}
        if isinstance(template, str):
            command = substitute(template, pv)
        else:
            args = tuple(substitute(a, pv) for a in template)
    kind = "command" if t.command is not None else "args" if t.args is not None else "prompt"
    return kind, command, args, prompt


def _resolve_instances(spec: InstancesSpec, sub: Callable[[str], str]) -> Instances:
    """The test's concurrent instances, placeholders substituted in each variant."""
    return Instances(
        count=spec.count,
        criterion=spec.criterion,
        variants=tuple(
            Variant(
                label=v.label,
                args=tuple(sub(a) for a in v.args) if v.args is not None else None,
                extra_args=tuple(sub(a) for a in v.extra_args),
                model=v.model, temperature=v.temperature,
                env={k: (sub(x) if x is not None else None) for k, x in v.env.items()},
            )
            for v in spec.variants
        ),
    )
