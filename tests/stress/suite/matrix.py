"""Variable matrices: a test's `vars` expanded into cases, `{{name}}` filled, and each case's id.

A test with `vars: {"n": [5, 10], "model": ["a", "b"]}` becomes one case per combination (the
cartesian product, first variable slowest, values in the order written), with the id
`answer(n=5,model=a)`. Why that spelling: parentheses, `=` and `,` are safe in file names and
are not glob characters, so `--filter 'answer(n=5,*'` picks cases as written. A value that is
not short and plain (`[A-Za-z0-9._-]`, up to 24 characters) appears as its 1-based position
instead (`q=#3`), so ids stay short and safe whatever the values are.

Placeholders stay apart by their spelling: `${NAME}` is ours and the shell's
(`stress.suite.placeholders`), `{{name}}` is a var (this module), and single-brace `{name}`
only in the older `params` shape, for the names its `params` declare (`fill_params`), so JSON
braces in older prompts are left alone. `\\{{` writes a literal `{{`. An unknown `{{name}}` is an
error naming it: a misspelt var must not reach the model as text.

Pure. Imports only `stress.suite.patterns` (`describe_json`): never a loader or the service's
internals (`cc_executor.jobs/server/process/tree/registry`).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stress.suite.patterns import describe_json

VAR_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
PLAIN_VALUE_RE = re.compile(r"^[A-Za-z0-9._-]{1,24}$")
_PLACEHOLDER = re.compile(r"\\\{\{|\{\{\s*([^{}]*?)\s*\}\}")
MAX_CASES = 1000
"""At most this many cases from one test: a matrix is a list of runs, each against a model."""


class PlaceholderError(ValueError):
    """An unknown `{{name}}` (or a malformed one), named in the message."""


@dataclass(frozen=True)
class Case:
    """One combination of a test's vars."""

    values: Mapping[str, Any]
    """name -> the value, in the order the vars were declared."""
    suffix: str
    """"(n=5,model=a)", or "" for a test without vars."""


def check_vars(raw: Any) -> list[str]:
    """Problems with a `vars` object (empty when fine): names, lists of scalars, the case count."""
    if not isinstance(raw, dict):
        return [f'vars must be an object like {{"n": [1, 2]}}, got {describe_json(raw)}']
    out = []
    count = 1
    for name, values in raw.items():
        if not VAR_NAME_RE.match(name):
            out.append(f"var name {name!r} must be a letter or _ then letters, digits, _ (up to 64)")
        vals = values if isinstance(values, list) else [values]
        if not vals:
            out.append(f"var {name!r} has no values")
        rendered = [render_value(v) for v in vals if not isinstance(v, dict | list)]
        twice = sorted({r for r in rendered if rendered.count(r) > 1})
        if twice:  # 1 and "1" read the same in the text and the case id: one case, twice
            out.append(f"var {name!r} lists a value twice (each case needs its own id): "
                       + ", ".join(repr(r) for r in twice))
        for v in vals:
            if isinstance(v, dict | list):
                out.append(f"var {name!r}: values must be strings, numbers, true, false or null; "
                           f"got {describe_json(v)}")
                break
        count *= max(1, len(vals))
    if count > MAX_CASES:
        out.append(f"vars make {count} cases; at most {MAX_CASES}")
    return out


def expand(vars_: Mapping[str, Any]) -> list[Case]:
    """Every combination, first var slowest; a scalar is a one-value list."""
    if not vars_:
        return [Case({}, "")]
    names = list(vars_)
    lists = [v if isinstance(v, list) else [v] for v in vars_.values()]
    cases = []
    for combo in itertools.product(*(list(enumerate(vals, 1)) for vals in lists)):
        values = {n: v for n, (_, v) in zip(names, combo)}
        parts = [f"{n}={_id_piece(v, pos)}" for n, (pos, v) in zip(names, combo)]
        cases.append(Case(values, "(" + ",".join(parts) + ")"))
    return cases


def render_value(value: Any) -> str:
    """How a value reads in text: strings as they are, everything else as JSON (true, 5, null)."""
    return value if isinstance(value, str) else json.dumps(value)


def _id_piece(value: Any, position: int) -> str:
    text = render_value(value)
    return text if PLAIN_VALUE_RE.match(text) else f"#{position}"


def fill(text: str, values: Mapping[str, Any]) -> str:
    """`{{name}}` replaced by its value; `\\{{` becomes `{{`; PlaceholderError for an unknown name."""
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "\\{{":
            return "{{"
        name = m.group(1)
        if name not in values:
            known = ", ".join(values) or "none declared"
            raise PlaceholderError(f"unknown placeholder {{{{{name}}}}} (vars: {known}); "
                                   "write \\{{ for a literal {{")
        return render_value(values[name])
    return _PLACEHOLDER.sub(sub, text)


def fill_json(value: Any, values: Mapping[str, Any], *, typed: bool = False) -> Any:
    """`fill` through a JSON value (patterns, env, assertions). `typed` (assertions): a string
    that is exactly one placeholder takes the var's own value, so `"value": "{{sum}}"` compares
    a number with a number; elsewhere every value stays text."""
    if isinstance(value, str):
        m = _PLACEHOLDER.fullmatch(value)
        if typed and m and m.group(0) != "\\{{" and m.group(1) in values:
            return values[m.group(1)]
        return fill(value, values)
    if isinstance(value, list):
        return [fill_json(v, values, typed=typed) for v in value]
    if isinstance(value, dict):
        return {k: fill_json(v, values, typed=typed) for k, v in value.items()}
    return value


def placeholders_in(texts: Sequence[str]) -> list[str]:
    """Every `{{name}}` named in `texts` (escapes skipped), in order of appearance."""
    names: list[str] = []
    for t in texts:
        for m in _PLACEHOLDER.finditer(t):
            if m.group(1) is not None and m.group(1) not in names:
                names.append(m.group(1))
    return names


def fill_params(text: str, values: Mapping[str, Any]) -> str:
    """The older `params` shape: `{name}` for the declared names only; every other brace stays."""
    if not values:
        return text
    pattern = re.compile(r"\{(" + "|".join(re.escape(n) for n in values) + r")\}")
    return pattern.sub(lambda m: render_value(values[m.group(1)]), text)


__all__ = ["MAX_CASES", "PLAIN_VALUE_RE", "VAR_NAME_RE", "Case", "PlaceholderError", "check_vars",
           "expand", "fill", "fill_json", "fill_params", "placeholders_in", "render_value"]
