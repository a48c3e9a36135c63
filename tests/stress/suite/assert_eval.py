"""Judging a test's `assert` list against one answer: every assertion passed, failed or skipped,
each with the reason a person reads in the report.

Why every assertion is evaluated (not only until the first failure): the report lists each with
pass/fail and why, and a promptfoo-style weighted score needs them all. Scoring: each assertion
that was not skipped counts its `weight`; the score is the weighted share that passed. Without a
test `threshold` every assertion must pass (promptfoo's rule); with one, the score must reach it.

Pure: no I/O, no clock (python-runs jobs were run by the runner beforehand; their ends arrive in
`Answer.code_runs`). Imports `stress.suite.assertions`, `stress.suite.answer`,
`stress.suite.patterns` and the pinned `jsonschema` / `python-jsonpath`: never the runner or the
service's internals (`cc_executor.jobs/server/process/tree/registry`).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jsonpath
import jsonschema

from stress.suite.answer import Answer, find_json, find_python
from stress.suite.assertions import Assertion
from stress.suite.patterns import compile_regex

PASS, FAIL, SKIP = "passed", "failed", "skipped"


@dataclass(frozen=True)
class AssertionResult:
    """One assertion's outcome: `status` passed | failed | skipped, and why."""

    index: int
    type: str
    """As written: `not-contains` stays `not-contains`."""
    label: str
    status: str
    why: str
    weight: float = 1.0
    metric: str | None = None

    @property
    def passed(self) -> bool:
        return self.status == PASS

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "type": self.type, "label": self.label, "status": self.status,
                "why": self.why, "weight": self.weight, "metric": self.metric}


@dataclass(frozen=True)
class Score:
    """The weighted outcome of a test's assertions."""

    passed: bool
    score: float
    threshold: float | None
    failed: tuple[AssertionResult, ...]

    def describe(self) -> str:
        if self.threshold is not None:
            return f"assertion score {self.score:.2f}, needed {self.threshold:g}"
        return f"{len(self.failed)} assertion(s) failed: " + "; ".join(
            f"{r.label}: {r.why}" for r in self.failed[:4]) + (" ..." if len(self.failed) > 4 else "")


def evaluate_all(assertions: Sequence[Assertion], answer: Answer) -> tuple[AssertionResult, ...]:
    return tuple(evaluate(a, answer, i) for i, a in enumerate(assertions))


def score(results: Sequence[AssertionResult], threshold: float | None) -> Score:
    """Without a threshold every counted assertion must pass; with one, the weighted share."""
    counted = [r for r in results if r.status != SKIP]
    total = sum(r.weight for r in counted)
    got = sum(r.weight for r in counted if r.passed)
    share = got / total if total else 1.0
    failed = tuple(r for r in counted if not r.passed)
    ok = share >= threshold - 1e-9 if threshold is not None else not failed
    return Score(ok, share, threshold, failed)


def evaluate(a: Assertion, answer: Answer, index: int = 0) -> AssertionResult:
    """One assertion against one answer; `not-` inverts a pass or fail (never a skip)."""
    try:
        status, why = _CHECKS[a.type](a, answer, index)
    except (RecursionError, MemoryError) as e:  # an answer no check should be able to crash on
        why = f"could not be judged: {type(e).__name__} on this answer"
        return AssertionResult(index, a.name, a.label, FAIL, why, a.weight, a.metric)
    if a.negate and status != SKIP:
        status = FAIL if status == PASS else PASS
        why = f"not wanted, but {why}" if status == FAIL else f"as wanted: {why}"
    return AssertionResult(index, a.name, a.label, status, why, a.weight, a.metric)


Outcome = tuple[str, str]


def _ok(cond: bool, yes: str, no: str) -> Outcome:
    return (PASS, yes) if cond else (FAIL, no)


def _short(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= n else text[: n - 3] + "...")


def _json_short(value: Any, n: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= n else text[: n - 3] + "..."


def _text_check(a: Assertion, ans: Answer, _i: int) -> Outcome:
    text = ans.text(a.target)
    v = a.value
    if a.type == "contains":
        return _ok(v in text, f"found {v!r}", f"{v!r} not found in {len(text)} characters")
    if a.type == "icontains":
        return _ok(v.casefold() in text.casefold(), f"found {v!r} (ignoring case)",
                   f"{v!r} not found, ignoring case, in {len(text)} characters")
    if a.type == "starts-with":
        body = text.lstrip()
        return _ok(body.startswith(v), f"starts with {v!r}", f"starts with {_short(body, 40)}")
    m = compile_regex(v, a.flags).search(text)
    return _ok(m is not None, f"matched {_short(m.group(0)) if m else ''}", f"/{v}/{a.flags} has no match")


def _equals(a: Assertion, ans: Answer, _i: int) -> Outcome:
    """A string equals the answer with surrounding whitespace ignored (commands end in a newline);
    any other JSON value equals the answer parsed as JSON."""
    text = ans.text(a.target)
    if isinstance(a.value, str):
        return _ok(text.strip() == a.value.strip(), "equal", f"the answer is {_short(text)}")
    found, value, how = find_json(text)
    if not found:
        return FAIL, how
    return _ok(json_equal(value, a.value), f"JSON equal ({how})", f"JSON differs: {_json_short(value)}")


def json_equal(x: Any, y: Any) -> bool:
    """Equality as JSON means it: true is not 1, 4 is 4.0, objects ignore key order."""
    if isinstance(x, bool) or isinstance(y, bool):
        return type(x) is type(y) and x == y
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(json_equal(x[k], y[k]) for k in x)
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(json_equal(p, q) for p, q in zip(x, y))
    return type(x) in (int, float) and type(y) in (int, float) and x == y or \
        type(x) is type(y) and x == y


def _list_check(a: Assertion, ans: Answer, _i: int) -> Outcome:
    fold = a.type.startswith("i")
    text = ans.text(a.target)
    hay = text.casefold() if fold else text
    found = [v for v in a.value if (v.casefold() if fold else v) in hay]
    missing = [v for v in a.value if v not in found]
    if a.type.endswith("-all"):
        return _ok(not missing, f"all {len(a.value)} found", f"missing {missing}")
    return _ok(bool(found), f"found {found}", f"none of {a.value} found")


def _length(a: Assertion, ans: Answer, _i: int) -> Outcome:
    text = ans.text(a.target)
    n = len(text.split()) if a.unit == "words" else len(text)
    unit = "words" if a.unit == "words" else "characters"
    if a.type == "min-length":
        return _ok(n >= a.value, f"{n} {unit} >= {a.value}", f"{n} {unit}, needed at least {a.value}")
    return _ok(n <= a.value, f"{n} {unit} <= {a.value}", f"{n} {unit}, allowed at most {a.value}")


def _schema_errors(schema: Any, value: Any) -> list[str]:
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    errors = sorted(cls(schema).iter_errors(value), key=lambda e: list(e.absolute_path))
    return [f"{'$' + ''.join(f'[{p!r}]' if isinstance(p, str) else f'[{p}]' for p in e.absolute_path)}: "
            f"{e.message}" for e in errors]


def _json_check(a: Assertion, ans: Answer, _i: int) -> Outcome:
    """is-json: the whole answer or a fence is JSON; contains-json, json-schema, json-path: the
    answer's JSON wherever it is (a sentence around it is fine)."""
    found, value, how = find_json(ans.text(a.target), anywhere=a.type != "is-json")
    if not found:
        return FAIL, how
    if a.type in ("is-json", "contains-json") and a.value is None:
        return PASS, f"parses as JSON ({how})"
    if a.type in ("is-json", "contains-json", "json-schema"):
        errors = _schema_errors(a.value, value)
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        return _ok(not errors, f"fits the schema ({how})", "; ".join(errors[:3]) + more)
    matches = jsonpath.findall(a.path, value)
    if not matches:
        return FAIL, f"{a.path} matches nothing in {_json_short(value)}"
    if "value" not in a.raw:
        return PASS, f"{a.path} is {_json_short(matches[0])}"
    got = matches[0]
    return _ok(json_equal(got, a.value),
               f"{a.path} == {json.dumps(a.value)}",
               f"{a.path} is {_json_short(got)}, expected {json.dumps(a.value)}")


def _python_compiles(a: Assertion, ans: Answer, _i: int) -> Outcome:
    code, where = find_python(ans.text(a.target))
    if not code.strip():
        return FAIL, f"no code in {where}"
    try:
        ast.parse(code, "<answer>")
    except SyntaxError as e:
        return FAIL, f"{where}: {e.msg} at line {e.lineno}"
    except ValueError as e:  # null bytes
        return FAIL, f"{where}: {e}"
    return PASS, f"{where} parses ({len(code.splitlines())} lines)"


def _python_runs(a: Assertion, ans: Answer, i: int) -> Outcome:
    run = ans.code_runs.get(i)
    if run is None:
        return SKIP, "the code was not run (the attempt did not finish, or no executor was reached)"
    if run.error is not None:
        return FAIL, f"could not run it on the executor: {run.error}"
    if run.reason != "exited" or run.exit_code != 0:
        tail = (run.stderr.strip().splitlines() or [""])[-1]
        return FAIL, f"ended {run.reason}, exit {run.exit_code}" + (f": {_short(tail, 100)}" if tail else "")
    if a.value is not None:
        return _ok(a.value in run.stdout, f"exit 0 in {run.duration:.2f} s, stdout has {a.value!r}",
                   f"exit 0, but stdout {_short(run.stdout)} lacks {a.value!r}")
    return PASS, f"exit 0 in {run.duration:.2f} s"


def _metric(a: Assertion, ans: Answer, _i: int) -> Outcome:
    if a.type == "latency":
        if ans.latency is None:
            return SKIP, "no duration was measured"
        return _ok(ans.latency <= a.value, f"{ans.latency:.2f} s <= {a.value:g} s",
                   f"took {ans.latency:.2f} s, allowed {a.value:g} s")
    if a.type == "cost":
        if ans.cost is None:
            return SKIP, "no cost reported (not a Claude stream-json or json run)"
        if ans.cost_simulated:
            return SKIP, "the loopback model's cost is simulated (run with --model real to judge cost)"
        return _ok(ans.cost <= a.value, f"${ans.cost:.4f} <= ${a.value:g}",
                   f"cost ${ans.cost:.4f}, allowed ${a.value:g}")
    if not ans.usage:
        return SKIP, "no token usage reported (not a Claude stream-json or json run)"
    seen = {"input": ans.usage.get("input_tokens", 0), "output": ans.usage.get("output_tokens", 0)}
    seen["total"] = seen["input"] + seen["output"]
    over = [f"{k} {seen[k]} > {lim}" for k, lim in a.value.items() if seen[k] > lim]
    counts = ", ".join(f"{k} {seen[k]}" for k in a.value)
    return _ok(not over, f"tokens within limits ({counts})", "; ".join(over))


_CHECKS: dict[str, Callable[[Assertion, Answer, int], Outcome]] = {
    "contains": _text_check, "icontains": _text_check, "starts-with": _text_check,
    "regex": _text_check, "equals": _equals,
    "contains-all": _list_check, "contains-any": _list_check,
    "icontains-all": _list_check, "icontains-any": _list_check,
    "min-length": _length, "max-length": _length,
    "is-json": _json_check, "contains-json": _json_check, "json-schema": _json_check,
    "json-path": _json_check,
    "python-compiles": _python_compiles, "python-runs": _python_runs,
    "latency": _metric, "cost": _metric, "tokens": _metric,
}

__all__ = ["FAIL", "PASS", "SKIP", "AssertionResult", "Score", "evaluate", "evaluate_all", "score"]
