"""A test's `assert` list: what each entry may say, read and checked when the suite is loaded.

Why promptfoo's shape (`{"type": ..., "value": ..., "weight": ...}`, a `not-` prefix that inverts
any type): it is what people who write prompt tests already know, so a promptfoo user moving
here writes the same entries. Why everything is checked at load time (an unknown type with a
close known one, a regex that would backtrack, a JSON Schema that is not one, a JSON path that
does not parse): a suite runs for minutes against a real model, and a typo found after the run
wastes it. Evaluating an assertion against an answer is `stress.suite.assert_eval`.

Out of scope, refused with that reason: `javascript` and `python` custom assertions (the code a
suite would run inside the harness process is exactly what the harness must not run), and the
model-graded types (`llm-rubric`, `similar`, ...), which need a second model.

Imports only `stress.suite.patterns` and the pinned libraries (`jsonschema`, `python-jsonpath`):
never a loader, the runner, or the service's internals (`cc_executor.jobs/server/process/tree/registry`).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import jsonpath
import jsonschema
import jsonschema.exceptions

from stress.suite.patterns import compile_regex, describe_json
from stress.suite.schema_shorthand import shorthand_schema

TEXT_TYPES = ("contains", "icontains", "starts-with", "equals", "regex")
LIST_TYPES = ("contains-all", "contains-any", "icontains-all", "icontains-any")
LENGTH_TYPES = ("min-length", "max-length")
JSON_TYPES = ("is-json", "contains-json", "json-schema", "json-path")
CODE_TYPES = ("python-compiles", "python-runs")
METRIC_TYPES = ("latency", "cost", "tokens")
TYPES: tuple[str, ...] = TEXT_TYPES + LIST_TYPES + LENGTH_TYPES + JSON_TYPES + CODE_TYPES + METRIC_TYPES
"""Every type we evaluate. `not-<type>` inverts any of them except the metrics and python-runs."""
ALIASES = {"not-contains": ("contains", True)}
"""Spelled out in the issue and in promptfoo's docs; the same as the generic `not-` prefix."""
OUT_OF_SCOPE = {
    "javascript": "custom JavaScript assertions are out of scope: the harness runs no suite code",
    "python": "custom Python assertions are out of scope: the harness runs no suite code in its "
              "own process (use python-runs to run the model's code on the executor)",
    "llm-rubric": "model-graded assertions are out of scope (they need a second model)",
    "model-graded-closedqa": "model-graded assertions are out of scope (they need a second model)",
    "similar": "similarity assertions are out of scope (they need an embedding model)",
}
TARGETS = ("result", "stdout", "stderr")
UNITS = ("chars", "words")
KEYS = ("type", "value", "weight", "path", "target", "unit", "flags", "threshold", "timeout", "limits",
        "metric")
CODE_LIMITS = ("memory_mb", "processes", "cpu_seconds", "open_files", "output_mb")
"""What a python-runs job may ask the executor to enforce (its `execute` limits; docs/protocol.md)."""
NOT_NEGATABLE = METRIC_TYPES + ("python-runs",)
DEFAULT_CODE_TIMEOUT = 30.0
"""Seconds a python-runs job may take unless the assertion sets `timeout`."""


@dataclass(frozen=True)
class Assertion:
    """One entry of a test's `assert` list, read and checked."""

    type: str
    """The base type (`contains` for `not-contains`)."""
    negate: bool = False
    value: Any = None
    weight: float = 1.0
    path: str | None = None
    """json-path: the JSONPath (RFC 9535) whose first match is compared with `value`."""
    target: str | None = None
    """What is judged: None is the answer (see `stress.suite.answer`); result | stdout | stderr."""
    unit: str = "chars"
    flags: str = ""
    timeout: float = DEFAULT_CODE_TIMEOUT
    limits: Mapping[str, float] | None = None
    """python-runs: the job's resource limits on the executor (its ceilings apply regardless)."""
    metric: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)
    """The entry as written (after {{var}} substitution), for reports and --explain."""

    @property
    def name(self) -> str:
        return ("not-" if self.negate else "") + self.type

    @property
    def label(self) -> str:
        """A short text naming the assertion in a report line."""
        bits = [self.name]
        if self.path:
            bits.append(self.path)
        if self.value is not None and self.type not in ("json-schema", "is-json"):
            shown = json.dumps(self.value, ensure_ascii=False) if not isinstance(self.value, str) \
                else repr(self.value)
            bits.append(shown if len(shown) <= 60 else shown[:57] + "...")
        if self.target:
            bits.append(f"on {self.target}")
        return " ".join(bits)

    def to_json(self) -> dict[str, Any]:
        return dict(self.raw)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def parse_assertion(raw: Any) -> Assertion:
    """An assertion from its JSON form; ValueError saying what is wrong (pydantic locates it)."""
    if not isinstance(raw, dict):
        raise ValueError(f'an assertion is an object like {{"type": "contains", "value": "4"}}; '
                         f"got {describe_json(raw)}")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in an assertion (allowed: {', '.join(KEYS)})")
    kind = raw.get("type")
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"an assertion needs a 'type' (one of {', '.join(TYPES)}); "
                         f"got {describe_json(kind)}")
    base, negate = _base_type(kind)
    weight = raw.get("weight", 1.0)
    if not _number(weight) or weight < 0:
        raise ValueError(f"'weight' must be a number >= 0, got {describe_json(weight)}")
    target = raw.get("target")
    if target is not None and target not in TARGETS:
        raise ValueError(f"'target' must be one of {', '.join(TARGETS)}, got {describe_json(target)}")
    metric = raw.get("metric")
    if metric is not None and not isinstance(metric, str):
        raise ValueError(f"'metric' must be a string, got {describe_json(metric)}")
    a = Assertion(type=base, negate=negate, weight=float(weight), target=target, metric=metric,
                  raw=dict(raw))
    return _checked(a, raw)


def _base_type(kind: str) -> tuple[str, bool]:
    """('contains', True) for 'not-contains'; ValueError for unknown or out-of-scope types."""
    if kind in ALIASES:
        return ALIASES[kind]
    negate = kind.startswith("not-")
    base = kind[4:] if negate else kind
    if base in OUT_OF_SCOPE:
        raise ValueError(f"assertion type {kind!r}: {OUT_OF_SCOPE[base]}")
    if base not in TYPES:
        close = difflib.get_close_matches(kind, [*TYPES, *ALIASES], n=1, cutoff=0.7)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown assertion type {kind!r}{hint}; known: {', '.join(TYPES)}, "
                         "and not-<type> for the opposite")
    if negate and base in NOT_NEGATABLE:
        instead = ("check what its stdout must contain instead" if base == "python-runs"
                   else "give the limit instead")
        raise ValueError(f"{kind!r}: {base} cannot be inverted with not- ({instead})")
    return base, negate


def _checked(a: Assertion, raw: Mapping[str, Any]) -> Assertion:
    """The type's own rules for `value` and the keys that go with it."""
    t, v = a.type, raw.get("value")
    extra = {k for k in ("path", "unit", "flags", "threshold", "timeout", "limits") if k in raw}
    allowed = {"json-path": {"path"}, "min-length": {"unit"}, "max-length": {"unit"},
               "regex": {"flags"}, "latency": {"threshold"}, "cost": {"threshold"},
               "python-runs": {"timeout", "limits"}}.get(t, set())
    if extra - allowed:
        raise ValueError(f"{a.name}: key(s) {sorted(extra - allowed)} do not apply to this type")
    if t in TEXT_TYPES + LIST_TYPES and t != "equals":
        v = _numbers_as_text(v)
    if t in TEXT_TYPES and t != "equals":
        _need(isinstance(v, str) and v != "", a, "a non-empty string", v)
        if t == "regex":
            flags = raw.get("flags", "")
            _need(isinstance(flags, str), a, 'flags as a string like "i"', flags, key="flags")
            compile_regex(v, flags)
            return replace(a, value=v, flags=flags)
    elif t == "equals":
        _need("value" in raw, a, "a value (a string, or any JSON value to compare parsed JSON)", v)
    elif t in LIST_TYPES:
        _need(isinstance(v, list) and v and all(isinstance(x, str) and x for x in v), a,
              "a non-empty list of non-empty strings", v)
    elif t in LENGTH_TYPES:
        _need(isinstance(v, int) and not isinstance(v, bool) and v >= 0, a, "an integer >= 0", v)
        unit = raw.get("unit", "chars")
        _need(unit in UNITS, a, f"one of {', '.join(UNITS)}", unit, key="unit")
        return replace(a, value=v, unit=unit)
    elif t in JSON_TYPES:
        return _checked_json(a, raw)
    elif t == "python-compiles":
        _need(v is None, a, "no value", v)
    elif t == "python-runs":
        _need(v is None or isinstance(v, str), a, "a string the program's stdout must contain (or none)", v)
        timeout = raw.get("timeout", DEFAULT_CODE_TIMEOUT)
        _need(_number(timeout) and 0 < timeout <= 600, a, "seconds from 0 to 600", timeout, key="timeout")
        return replace(a, value=v, timeout=float(timeout), limits=_code_limits(a, raw.get("limits")))
    else:
        return _checked_metric(a, raw)
    return replace(a, value=v)


def _code_limits(a: Assertion, limits: Any) -> dict[str, float] | None:
    """python-runs `limits`: names the executor knows, positive numbers (it checks the rest)."""
    if limits is None:
        return None
    _need(isinstance(limits, dict) and limits, a, f"an object of limits ({', '.join(CODE_LIMITS)})",
          limits, key="limits")
    unknown = sorted(set(limits) - set(CODE_LIMITS))
    if unknown:
        raise ValueError(f"{a.name}: unknown limit(s) {unknown} (allowed: {', '.join(CODE_LIMITS)})")
    for k, v in limits.items():
        _need(_number(v) and v > 0, a, "a number > 0", v, key=f"limits.{k}")
    return dict(limits)


def _numbers_as_text(v: Any) -> Any:
    """`"value": 4` means the text "4" for the text types (as in promptfoo), also in a list."""
    if _number(v):
        return json.dumps(v)
    if isinstance(v, list):
        return [json.dumps(x) if _number(x) else x for x in v]
    return v


def _need(ok: bool, a: Assertion, what: str, got: Any, key: str = "value") -> None:
    if not ok:
        raise ValueError(f"{a.name}: '{key}' must be {what}, got {describe_json(got)}")


def _checked_json(a: Assertion, raw: Mapping[str, Any]) -> Assertion:
    """is-json (optional schema), json-schema (a schema), json-path (a path, an optional value)."""
    v = raw.get("value")
    if a.type in ("is-json", "contains-json", "json-schema"):
        if a.type == "json-schema" or v is not None:
            _need(isinstance(v, dict | bool), a, "a JSON Schema (an object)", v)
            if isinstance(v, dict):
                v = shorthand_schema(v)
            check_schema(v, a.name)
        return replace(a, value=v)
    path = raw.get("path")
    _need(isinstance(path, str) and path.startswith("$"), a, 'a JSONPath starting with "$"', path,
          key="path")
    try:
        jsonpath.compile(path)
    except jsonpath.JSONPathError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{a.name}: invalid JSONPath {path!r}: {first}") from None
    return replace(a, value=v, path=path)


def check_schema(schema: Any, name: str) -> None:
    """A JSON Schema valid under its own draft (2020-12 when it names none)."""
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.exceptions.SchemaError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(root)"
        raise ValueError(f"{name}: not a valid JSON Schema at {where}: {e.message}") from None


def _checked_metric(a: Assertion, raw: Mapping[str, Any]) -> Assertion:
    """latency: seconds (promptfoo's `threshold` is milliseconds); cost: USD; tokens: a count or
    {"input", "output", "total"} limits."""
    v = raw.get("value")
    if "threshold" in raw:
        if "value" in raw:
            raise ValueError(f"{a.name}: give 'value' or 'threshold', not both")
        th = raw["threshold"]
        _need(_number(th) and th > 0, a, "a number > 0", th, key="threshold")
        v = th / 1000.0 if a.type == "latency" else th
    if a.type == "tokens":
        if isinstance(v, int) and not isinstance(v, bool):
            v = {"total": v}
        if isinstance(v, dict) and set(v) - {"input", "output", "total"}:
            raise ValueError(f"tokens: unknown limit(s) {sorted(set(v) - {'input', 'output', 'total'})} "
                             "(allowed: input, output, total)")
        _need(isinstance(v, dict) and v and set(v) <= {"input", "output", "total"}
              and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v.values()),
              a, 'a token count or {"input", "output", "total"} limits', v)
        return replace(a, value=dict(v))
    unit = "seconds" if a.type == "latency" else "USD"
    _need(_number(v) and v > 0, a, f"a number of {unit} > 0", v)
    return replace(a, value=float(v))


__all__ = ["ALIASES", "DEFAULT_CODE_TIMEOUT", "KEYS", "OUT_OF_SCOPE", "TARGETS", "TYPES", "UNITS",
           "Assertion", "check_schema", "parse_assertion"]
