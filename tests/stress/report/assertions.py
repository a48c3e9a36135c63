"""The `assert` lists in the reports: every assertion of every attempt, with pass/fail and why.

Kept apart from the renderers (markdown.py, junit.py, and the HTML report) so each of them
needs one small hook: report.md's "Assertions" section, the lines a JUnit failure adds, and the
JUnit properties of a test case. report.json carries the same facts as `attempts[].assertions`
(written by `Attempt.to_json`).

Imports `stress.report.results` and `stress.report.text` only: never a renderer (they import
this), nothing that runs tests.
"""

from __future__ import annotations

from stress.report.results import Attempt, RunResult
from stress.report.text import attempt_tag, cell

MAX_ROWS = 400
"""report.md lists at most this many assertion rows (a load run may judge thousands)."""
MARK = {"passed": "pass", "failed": "**FAIL**", "skipped": "skip"}


def assertions_section(run: RunResult) -> list[str]:
    """report.md: one table row per assertion per attempt that judged any."""
    rows = [(o, a) for o in run.outcomes for a in o.attempts if a.assertions]
    if not rows:
        return []
    lines = ["## Assertions", "",
             "Every assertion of each test's `assert` list, judged on the answer (the CLI's "
             "result text, else stdout; see docs/suites.md). " + _counts(rows), ""]
    lines += _metric_lines(rows)
    lines += ["| test | assertion | result | why |", "|---|---|---|---|"]
    shown = 0
    for o, a in rows:
        for r in a.assertions or ():
            if shown == MAX_ROWS:
                break
            shown += 1
            test = cell(o.id + attempt_tag(o, a, " attempt {}"))
            weight = "" if r.get("weight", 1) == 1 else f" (weight {r['weight']:g})"
            lines.append(f"| {test} | `{cell(r['label'])}`{weight} | {MARK.get(r['status'], r['status'])} "
                         f"| {cell(r['why'])} |")
    total = sum(len(a.assertions or ()) for _, a in rows)
    if total > shown:
        lines.append(f"\n... and {total - shown} more (report.json)")
    lines.append("")
    return lines


def _counts(rows: list) -> str:
    results = [r for _, a in rows for r in a.assertions or ()]
    n = {k: sum(r["status"] == k for r in results) for k in ("passed", "failed", "skipped")}
    return f"{len(results)} judged: {n['passed']} passed, {n['failed']} failed, {n['skipped']} skipped."


def _metric_lines(rows: list) -> list[str]:
    """promptfoo's named metrics: per `metric`, how many of its assertions passed."""
    by: dict[str, list[bool]] = {}
    for _, a in rows:
        for r in a.assertions or ():
            if r.get("metric") and r["status"] != "skipped":
                by.setdefault(r["metric"], []).append(r["status"] == "passed")
    if not by:
        return []
    return ["Metrics: " + ", ".join(f"**{cell(m)}** {sum(v)}/{len(v)}" for m, v in sorted(by.items())), ""]


def failure_lines(a: Attempt) -> list[str]:
    """What a failed attempt's assertions say, for a JUnit failure's text."""
    return [f"assertion {r['status']}: {r['label']}: {r['why']}"
            for r in (a.assertions or ()) if r["status"] != "passed"]


def junit_properties(a: Attempt) -> list[tuple[str, str]]:
    """(name, value) per assertion, for a JUnit test case's <properties>."""
    return [(f"assert[{r['index']}] {r['type']}", f"{r['status']}: {r['why']}")
            for r in (a.assertions or ())]


__all__ = ["MAX_ROWS", "assertions_section", "failure_lines", "junit_properties"]
