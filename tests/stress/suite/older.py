"""One test of an older format, read as it is: task lists' tests, categories holding `tests`,
the earlier Python API's prompt fixtures, and their `validation` objects.

The earlier implementation's users wrote tests in several shapes that share most keys: `id` (or
only a `name`, from which a stable id is derived), `command` or `prompt`, `expected_patterns`,
`timeout`, and sometimes a `validation` object or, in the Python API's fixtures, `params` (a
matrix with single-brace `{name}` placeholders), `repeat`, `json_mode` and `stream`. One reader
serves them all so the same key means the same thing wherever it appears.

How they map (docs/suites.md has the table): `validation` becomes assertions
(`stress.suite.assertions`): json -> is-json, json-schema (the `{"answer": "number"}` shorthand
becomes a JSON Schema), json-path for `expected_answer`; content_check -> min/max-length,
contains, not-contains; code_validation (python) -> python-compiles and contains. `params` is
the matrix of `stress.suite.matrix` (a scalar is a one-value list; `{n}` is filled only for the
declared names, so JSON braces in prompts stay). `json_mode` / `stream` choose the CLI's
`--output-format` (json / stream-json). A key we do not act on is kept in `extra` and reported
as a warning with its path, never dropped silently.

Imports the suite helpers (`model`, `problems`, `matrix`, `assertions`, `placeholders`,
`verdict`) and the shared `cc_executor.claude_cli`: never `stress.suite` (which imports this),
never the service's internals (`cc_executor.jobs/server/process/tree/registry`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cc_executor.claude_cli import mentions_claude
from stress.suite.assertions import Assertion, parse_assertion
from stress.suite.matrix import check_vars, expand, fill_params
from stress.suite.model import Source, SuiteTest
from stress.suite.placeholders import substitute
from stress.suite.problems import ProblemCollector, json_path
from stress.suite.schema_shorthand import JSON_TYPE_NAMES, shorthand_schema
from stress.suite.verdict import (
    ALL_REPEATS,
    EXIT_ZERO,
    MatchRule,
    TextPattern,
    describe_json,
)

TEST_KEYS = {"id", "name", "description", "command", "prompt", "expected_patterns", "validation",
             "params", "repeat", "timeout", "json_mode", "stream", "model", "tags", "assert", "threshold"}
"""The keys an older test may have that we act on."""
VALIDATION_KEYS = {
    "json": {"type", "schema", "expected_answer"},
    "content_check": {"type", "min_length", "max_length", "must_contain", "must_not_contain",
                      "min_words", "max_words"},
    "code_validation": {"type", "language", "must_contain", "must_not_contain"},
}


@dataclass
class OlderContext:
    """What every test of one older file shares: where it is, its defaults, what was seen."""

    file: Path
    timestamp: str
    ck: ProblemCollector
    timeout: float
    match: MatchRule
    tags: tuple[str, ...] = ()
    seen: dict[str, tuple] = field(default_factory=dict)
    """Ids (given or derived) -> where first used: ids are unique in a file."""


def derive_id(name: str, seen: dict[str, tuple]) -> str:
    """A stable id from a name: lower case, runs of other characters as `_`, at most 120
    characters; `_2`, `_3` ... when an earlier test took it."""
    base = re.sub(r"[^a-z0-9_.-]+", "_", name.lower()).strip("_.-")[:120] or "test"
    if not base[0].isalnum():
        base = "t" + base
    tid, n = base, 1
    while tid in seen:
        n += 1
        tid = f"{base}_{n}"
    return tid


def read_older_tests(tests_raw: list, ctx: OlderContext) -> list[SuiteTest]:
    """Every test of an older file's `tests` list (a non-object entry is a problem naming it)."""
    tests: list[SuiteTest] = []
    for i, t in enumerate(tests_raw):
        if not isinstance(t, dict):
            ctx.ck.add(("tests", i), f"a test must be an object, got {describe_json(t)}")
            continue
        tests += read_older_test(t, ("tests", i), ctx)
    return tests


def read_older_test(t: dict[str, Any], loc: tuple, ctx: OlderContext) -> list[SuiteTest]:
    """The cases of one older test (one per combination of its `params`); every problem is
    recorded in `ctx.ck`, and nothing is returned for a test without a usable id or run."""
    ck = ctx.ck
    tid = _test_id(t, loc, ctx)
    name = ck.get(t, "name", loc, "string", default=tid)
    desc = ck.get(t, "description", loc, "string", default="")
    command = ck.get(t, "command", loc, "string")
    prompt = ck.get(t, "prompt", loc, "string")
    if command is None and prompt is None and not ({"command", "prompt"} & set(t)):
        ck.add(loc + ("command",), "required, but missing (or give a 'prompt')")
    elif command is not None and prompt is not None:
        ck.add(loc, "give 'command' or 'prompt', not both")
    for key, text in (("command", command), ("prompt", prompt)):
        if isinstance(text, str) and not text.strip():
            ck.add(loc + (key,), "must not be empty")
    patterns = ck.get(t, "expected_patterns", loc, "strings", default=[])
    timeout = ck.get(t, "timeout", loc, "number", default=ctx.timeout)
    repeat = _repeat(t, loc, ck)
    tags = ck.get(t, "tags", loc, "strings", default=[])
    params = _params(t, loc, ck)
    flags = _cli_flags(t, loc, ck)
    assertions = validation_assertions(t["validation"], loc + ("validation",), ck) \
        if "validation" in t else []
    own = _own_assertions(t, loc, ck)
    threshold = _threshold(t, loc, ck)
    extra = ck.warn_unknown({k: v for k, v in t.items() if k != "vars"}, loc, TEST_KEYS)
    if "vars" in t:  # our matrix spelling in an older shape: say what this shape reads instead
        extra["vars"] = t["vars"]
        ck.warn(loc + ("vars",), "not acted on: 'vars' and {{name}} belong to our format; this "
                "older shape's matrix is 'params' with {name} placeholders")
    if tid is None or (command is None) == (prompt is None):
        return []
    out = []
    for case in expand(params):
        text = substitute(fill_params(command if command is not None else prompt, case.values),
                          {"TIMESTAMP": ctx.timestamp, "TEST_ID": tid})
        args = ("claude", "-p", text, *flags) if prompt is not None else None
        claude = prompt is not None or mentions_claude(text)
        out.append(SuiteTest(
            id=tid + case.suffix, name=name or tid, description=desc or "",
            tags=tuple(dict.fromkeys([*ctx.tags, *tags])),
            kind="prompt" if prompt is not None else "command",
            command=text if prompt is None else None, args=args,
            prompt=text if prompt is not None else None,
            expected_patterns=tuple(TextPattern(fill_params(p, case.values)) for p in patterns),
            match=ctx.match, must_not_contain=(), expect_exit=EXIT_ZERO,
            timeout=float(timeout), stall_timeout=None, repeat=repeat, pass_threshold=ALL_REPEATS,
            requires=("claude", "real-model") if claude else (), env={}, cwd=None, input=None,
            instances=None, source=Source(str(ctx.file), json_path(loc)), extra=extra,
            assertions=(*assertions, *_filled(own, case.values, loc, ck)),
            threshold=threshold, test_id=tid if case.suffix else None,
            vars=dict(case.values), origin=t,
        ))
    return out


def _test_id(t: dict[str, Any], loc: tuple, ctx: OlderContext) -> str | None:
    """The given id (checked: rule, unique), else one derived from `name`."""
    if "id" in t:
        tid = ctx.ck.get(t, "id", loc, "string")
        ctx.ck.check_id(tid, loc + ("id",), ctx.seen)
        return tid if isinstance(tid, str) else None
    name = t.get("name")
    if not isinstance(name, str) or not name.strip():
        ctx.ck.add(loc, "needs an 'id' or a 'name' to derive one from")
        return None
    tid = derive_id(name, ctx.seen)
    ctx.seen[tid] = loc
    return tid


def _own_assertions(t: dict[str, Any], loc: tuple, ck: ProblemCollector) -> list[tuple[tuple, Any]]:
    """An `assert` list added to an older test (a user moving to promptfoo-style checks keeps
    the file's shape), read as in our format, after the `validation` object's assertions:
    the entries that parse, with where they are (each case parses them again, its `{param}`
    filled as in the prompt)."""
    raw = t.get("assert", [])
    if not isinstance(raw, list):
        ck.add(loc + ("assert",), f"must be a list of assertions, got {describe_json(raw)}")
        return []
    out = []
    for i, entry in enumerate(raw):
        try:
            parse_assertion(entry)
            out.append((loc + ("assert", i), entry))
        except ValueError as e:
            ck.add(loc + ("assert", i), str(e))
    return out


def added_assertions(t: dict[str, Any], loc: tuple, ck: ProblemCollector) -> tuple[list[Assertion], float | None]:
    """An older test's own `assert` list and `threshold` (no matrix to fill), problems recorded."""
    return _filled(_own_assertions(t, loc, ck), {}, loc, ck), _threshold(t, loc, ck)


def _filled(own: list[tuple[tuple, Any]], values: dict[str, Any], loc: tuple,
            ck: ProblemCollector) -> list[Assertion]:
    out = []
    for where, entry in own:
        try:
            out.append(parse_assertion(_fill_params_json(entry, values)))
        except ValueError as e:
            ck.add(where, str(e))
    return out


def _fill_params_json(value: Any, values: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return fill_params(value, values)
    if isinstance(value, list):
        return [_fill_params_json(v, values) for v in value]
    if isinstance(value, dict):
        return {k: _fill_params_json(v, values) for k, v in value.items()}
    return value


def _threshold(t: dict[str, Any], loc: tuple, ck: ProblemCollector) -> float | None:
    th = t.get("threshold")
    if th is None:
        return None
    if isinstance(th, bool) or not isinstance(th, int | float) or not 0 <= th <= 1:
        ck.add(loc + ("threshold",), f"must be a number from 0 to 1, got {describe_json(th)}")
        return None
    return float(th)


def _repeat(t: dict[str, Any], loc: tuple, ck: ProblemCollector) -> int:
    r = t.get("repeat", 1)
    if isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= 1000:
        ck.add(loc + ("repeat",), f"must be an integer from 1 to 1000, got {describe_json(r)}")
        return 1
    return r


def _params(t: dict[str, Any], loc: tuple, ck: ProblemCollector) -> dict[str, Any]:
    """`params` as a matrix (a scalar is a one-value list); {} when absent or malformed."""
    raw = t.get("params", {})
    problems = check_vars(raw)
    for msg in problems:
        ck.add(loc + ("params",), msg)
    return {} if problems else {k: (v if isinstance(v, list) else [v]) for k, v in raw.items()}


def _cli_flags(t: dict[str, Any], loc: tuple, ck: ProblemCollector) -> tuple[str, ...]:
    """`stream` -> stream-json (with --verbose, which -p needs for it), else `json_mode` -> json;
    `model` -> --model. Neither: the CLI's text output."""
    stream = ck.get(t, "stream", loc, "bool", default=False)
    json_mode = ck.get(t, "json_mode", loc, "bool", default=False)
    model = ck.get(t, "model", loc, "string")
    flags: list[str] = []
    if stream:
        flags += ["--output-format", "stream-json", "--verbose"]
    elif json_mode:
        flags += ["--output-format", "json"]
    if model:
        flags += ["--model", model]
    return tuple(flags)


def validation_assertions(ver: Any, vloc: tuple, ck: ProblemCollector) -> list[Assertion]:
    """An older `validation` object as assertions; problems and unknown keys recorded."""
    if not isinstance(ver, dict):
        ck.add(vloc, f"must be an object, got {describe_json(ver)}")
        return []
    vtype = ver.get("type")
    if vtype not in VALIDATION_KEYS:
        ck.warn(vloc + ("type",), f"unknown validation type {vtype!r} (known: "
                f"{', '.join(VALIDATION_KEYS)}); its must_contain / length keys are still applied")
    known = VALIDATION_KEYS.get(vtype, set().union(*VALIDATION_KEYS.values()))
    ck.warn_unknown(ver, vloc, known)
    entries: list[tuple[tuple, dict[str, Any]]] = []
    if vtype == "json":
        entries += _json_entries(ver, vloc)
    if vtype == "code_validation":
        lang = ver.get("language", "python")
        if lang in ("python", "py", "python3"):
            entries.append((vloc + ("language",), {"type": "python-compiles"}))
        else:
            ck.warn(vloc + ("language",), f"no compile check for language {lang!r} (python only)")
    for key, kind, unit in (("min_length", "min-length", "chars"), ("max_length", "max-length", "chars"),
                            ("min_words", "min-length", "words"), ("max_words", "max-length", "words")):
        if key in ver and key in known:
            entries.append((vloc + (key,), {"type": kind, "value": ver[key], "unit": unit}))
    for key, kind in (("must_contain", "contains"), ("must_not_contain", "not-contains")):
        if key in ver and key in known:
            items = ver[key] if isinstance(ver[key], list) else [ver[key]]
            entries += [(vloc + (key, i), {"type": kind, "value": v}) for i, v in enumerate(items)]
    out = []
    for where, entry in entries:
        try:
            out.append(parse_assertion(entry))
        except ValueError as e:
            ck.add(where, str(e))
    return out


def _json_entries(ver: dict[str, Any], vloc: tuple) -> list[tuple[tuple, dict[str, Any]]]:
    """is-json; json-schema from `schema` (shorthand or real); json-path for `expected_answer`
    on the schema's `answer` key (or its only key), else the answer must contain it."""
    out: list[tuple[tuple, dict[str, Any]]] = [(vloc + ("type",), {"type": "is-json"})]
    schema = ver.get("schema")
    keys: list[str] = []
    if isinstance(schema, dict):
        real = shorthand_schema(schema)
        out.append((vloc + ("schema",), {"type": "json-schema", "value": real}))
        props = real.get("properties")
        keys = list(props) if isinstance(props, dict) else []
    elif schema is not None:
        out.append((vloc + ("schema",), {"type": "json-schema", "value": schema}))
    if "expected_answer" in ver:
        key = "answer" if "answer" in keys else keys[0] if len(keys) == 1 else None
        expected = ver["expected_answer"]
        if key is not None and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            out.append((vloc + ("expected_answer",),
                        {"type": "json-path", "path": f"$.{key}", "value": expected}))
        else:
            text = expected if isinstance(expected, str) else json.dumps(expected)
            out.append((vloc + ("expected_answer",), {"type": "contains", "value": text}))
    return out


__all__ = ["JSON_TYPE_NAMES", "TEST_KEYS", "VALIDATION_KEYS", "OlderContext", "added_assertions", "derive_id",
           "read_older_test", "shorthand_schema", "validation_assertions"]
