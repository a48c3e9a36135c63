"""`--explain ID`: how a test was read - the object as the file wrote it, the test as the
harness will run it, and its assertions - for a person puzzled by what a suite does.

Why: older formats are mapped (a `validation` object becomes assertions, `params` a matrix,
`json_mode` a CLI flag) and our format fills defaults and {{vars}}; reading the mapping in the
docs is slower than seeing it for the one test in question.

Pure: values in, text out. Imports `stress.suite.model` only (never the runner, never the
service's internals `cc_executor.jobs/server/process/tree/registry`).
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Sequence

from stress.suite.model import Suite, SuiteTest


def find_cases(suites: Sequence[Suite], wanted: str) -> list[tuple[Suite, SuiteTest]]:
    """The cases whose id is `wanted`, or whose test's id is (all its cases), or that match it
    as a glob (`answer(n=5,*`)."""
    out = [(s, t) for s in suites for t in s.tests if wanted in (t.id, t.test_id)]
    if not out:
        out = [(s, t) for s in suites for t in s.tests if fnmatch.fnmatchcase(t.id, wanted)]
    return out


def explain(suites: Sequence[Suite], wanted: str) -> str | None:
    """The explanation of every case `wanted` names; None when it names none."""
    found = find_cases(suites, wanted)
    if not found:
        return None
    blocks = []
    shown_origin: set[int] = set()
    for suite, t in found:
        lines = [f"== {t.id}  (suite {suite.name}, {suite.format}; defined at {t.source})"]
        if t.vars:
            lines.append("vars: " + ", ".join(f"{k}={json.dumps(v)}" for k, v in t.vars.items()))
        if t.origin is not None and id(t.origin) not in shown_origin:
            shown_origin.add(id(t.origin))
            lines += ["-- as written:", json.dumps(t.origin, indent=2, ensure_ascii=False)]
        lines += ["-- as run (our format, every value explicit):",
                  json.dumps(t.to_json(), indent=2, ensure_ascii=False)]
        if t.assertions:
            rule = (f"weighted score >= {t.threshold:g}" if t.threshold is not None
                    else "every assertion must pass")
            lines.append(f"-- assertions ({rule}):")
            lines += [f"  [{i}] {a.label}  (weight {a.weight:g})" for i, a in enumerate(t.assertions)]
        else:
            lines.append("-- assertions: none")
        blocks.append("\n".join(lines))
    warnings = [w for s in {id(s): s for s, _ in found}.values() for w in s.warnings]
    if warnings:
        blocks.append("-- warnings of the file:\n" + "\n".join(f"  {w}" for w in warnings))
    return "\n\n".join(blocks)


__all__ = ["explain", "find_cases"]
