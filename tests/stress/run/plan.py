"""Suites -> the plan: what a run will try, decided before anything starts.

Owns: loading the named suites (all problems of all suites reported at once), the
`--claude-template` rewrite of prompt tests, `--filter`, `--repeat`, building the plan (one
`stress.run.runner.Planned` per selected test: the number of attempts and the pass threshold in
effect), what executables the plan needs a service to allow, which requirement a test does not
meet, and `--list`'s output.

Why apart from the session: all of it is values in, values out, so a typo or an empty filter
fails with exit 2 before a service is started, and it can be tested without processes.

Glossary: a *test* is an entry of a suite; a *case* is one expansion of a test; an *attempt*
is one run of a case (repeats, retries); an *instance* is one of K concurrent runs of an
instances test.

Must not import `stress.cli`, `stress.session` or anything that starts processes.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import shlex
import sys
from dataclasses import replace
from typing import TextIO

from stress.argtypes import UsageError
from stress.run.runner import CLAUDE_CAPABILITY, Planned, invocation_summary
from stress.suite import (
    COMPLEX_MIN_RATIO,
    FORMAT_OURS,
    Suite,
    SuiteError,
    SuiteTest,
    load_suite,
    read_json,
)
from stress.suite import claude_stream as claude_mod
from stress.suite.explain import explain
from stress.suite.model import REAL_MODEL
from stress.suite.verdict import MatchRule, PassThreshold

COMPLEX_DEFAULT_MATCH = MatchRule("min_ratio", COMPLEX_MIN_RATIO)


def load_suites(names: list[str], *, complex_mode: bool) -> list[Suite]:
    """Load every suite; raise UsageError listing the problems of all of them."""
    suites, errors = [], []
    for name in names:
        try:
            suite = load_suite(name, complex_suite=True if complex_mode else None)
        except SuiteError as e:
            errors.append(str(e))
            continue
        if complex_mode and suite.format == FORMAT_OURS:
            suite = _default_complex_match(suite)
        for w in suite.warnings:
            print(f"{suite.path}: warning: {w}", file=sys.stderr)
        suites.append(suite)
    if errors:
        raise UsageError("\n".join(errors))
    return suites


def _default_complex_match(suite: Suite) -> Suite:
    """Our format under stress.complex: a test that sets no `match` (nor defaults) needs 80%."""
    raw = read_json(suite.path)
    if "match" in (raw.get("defaults") or {}):
        return suite
    explicit = {t.get("id") for t in raw.get("tests", []) if isinstance(t, dict) and "match" in t}
    tests = tuple(t if (t.test_id or t.id) in explicit else replace(t, match=COMPLEX_DEFAULT_MATCH)
                  for t in suite.tests)
    return replace(suite, tests=tests)


_TEMPLATE_VARS = re.compile(r"\$\{(PROMPT|REQUEST|TEST_ID|TIMESTAMP|METATAGS)\}")


def parse_template(template: str) -> list[str]:
    """`--claude-template` split like a shell line; UsageError when it has no ${PROMPT}
    (a template that drops the prompt would run every prompt test with the same argv)."""
    try:
        argv = shlex.split(template)
    except ValueError as e:
        raise UsageError(f"--claude-template: cannot split {template!r}: {e}") from None
    if not argv:
        raise UsageError("--claude-template: empty")
    if not any("${PROMPT}" in a or "${REQUEST}" in a for a in argv):
        raise UsageError("--claude-template: must contain ${PROMPT} where the prompt goes")
    return argv


def apply_template(suite: Suite, template: list[str]) -> Suite:
    """Re-render `prompt` tests through the template, as an argv (no shell)."""
    def render(t: SuiteTest) -> SuiteTest:
        if t.kind != "prompt" or t.prompt is None:
            return t
        meta = t.extra.get("metatags", "")
        values = {"PROMPT": t.prompt, "REQUEST": t.prompt, "TEST_ID": t.id,
                  "TIMESTAMP": suite.timestamp, "METATAGS": meta if isinstance(meta, str) else ""}
        args = tuple(_TEMPLATE_VARS.sub(lambda m: values[m.group(1)], a) for a in template)
        return replace(t, command=None, args=args)

    return replace(suite, tests=tuple(render(t) for t in suite.tests))


def matches_filter(test: SuiteTest, filters: list[str]) -> bool:
    """`--filter`: a glob on the case's id, its test's id (every case of a matrix) or any of its
    tags; no filter keeps every test."""
    if not filters:
        return True
    names = [test.id, *([test.test_id] if test.test_id else []), *test.tags]
    return any(fnmatch.fnmatchcase(n, f) for f in filters for n in names)


def uses_claude(test: SuiteTest) -> bool:
    """Whether the test runs the Claude CLI (it then needs the model and the preflight)."""
    if CLAUDE_CAPABILITY in test.requires or test.kind == "prompt":
        return True
    if claude_mod.mentions_claude(test.command, test.args):
        return True
    if test.instances:
        for i in range(test.instances.count):
            inv = test.invocation(i)
            if claude_mod.mentions_claude(inv.command, inv.args):
                return True
    return False


def effective_threshold(test: SuiteTest, repeat: int) -> PassThreshold:
    """--repeat N with a {"passes": p, "of": q} threshold keeps the ratio p/q over N runs."""
    th = test.pass_threshold
    if th.passes is not None and th.of is not None and th.of != repeat:
        return PassThreshold(ratio=th.passes / th.of)
    return th


def build_plan(suites: list[Suite], filters: list[str], repeat: int | None) -> list[Planned]:
    """The selected tests of every suite, in suite order, each with its attempts (`repeat`) and
    threshold; a test id found in two suites gets its outputs under `<suite>/<id>`."""
    chosen = [(s, t) for s in suites for t in s.tests if matches_filter(t, filters)]
    counts: dict[str, int] = {}
    for _, t in chosen:
        counts[t.id] = counts.get(t.id, 0) + 1
    plan = []
    for s, t in chosen:
        stem = _short(t.id) if counts[t.id] == 1 else f"{_slug(s.name)[:100]}/{_short(t.id)}"
        n = repeat or t.repeat
        plan.append(Planned(s.name, t, stem, n, effective_threshold(t, n), uses_claude(t)))
    return plan


MAX_STEM = 200
"""Longest output file stem: a file name holds 255 bytes, and `.<attempt>.stdout` follows."""


def _short(test_id: str) -> str:
    """The id as a file name; a matrix case id too long for one (many or long var names) keeps
    its first characters and a digest of the whole, so it stays unique and recognisable."""
    if len(test_id.encode()) <= MAX_STEM:
        return test_id
    digest = hashlib.sha256(test_id.encode()).hexdigest()[:12]
    return test_id.encode()[:MAX_STEM - 14].decode("utf-8", "ignore") + "~" + digest


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "suite"


def executables(plan: list[Planned]) -> list[str]:
    """What the service must allow: sh for command strings, argv[0] of argv tests, claude."""
    names: list[str] = []
    for p in plan:
        t = p.test
        idx = range(t.instances.count) if t.instances else [None]
        for i in idx:
            inv = t.invocation(i)
            names.append("sh" if inv.command is not None else (inv.args or ("sh",))[0])
        if p.uses_claude:
            names.append("claude")
        if any(a.type == "python-runs" for a in t.assertions):
            names.append("python3")  # stress.run.code_runs runs the model's code on the service
    return list(dict.fromkeys(names))


def unmet_requirement(p: Planned, caps: set[str], model_mode: str, claude_note: str) -> str | None:
    """Why the test is skipped (never passed) in this run, or None when every word it requires
    is among `caps`, what the model mode and the Claude preflight provide."""
    needs = list(p.test.requires)
    if p.uses_claude and CLAUDE_CAPABILITY not in needs:
        needs.insert(0, CLAUDE_CAPABILITY)
    for word in needs:
        if word in caps:
            continue
        if word == REAL_MODEL:
            return f"requires '{REAL_MODEL}', but the model mode is '{model_mode}' (use --model real)"
        if word == CLAUDE_CAPABILITY:
            return f"requires 'claude', which the service cannot run: {claude_note}"
        return f"requires '{word}', which this harness does not provide"
    return None


def count_runs(plan: list[Planned]) -> int:
    """How many runs the progress display counts towards: every attempt of every test, skipped
    ones included and an instances attempt once, as the summary's Runs line counts them."""
    return sum(p.repeat for p in plan)


def explain_or_usage(suites: list[Suite], wanted: str, out: TextIO | None = None) -> int:
    """`--explain ID`: print how it was read (exit 0), or UsageError when nothing is named so."""
    text = explain(suites, wanted)
    if text is None:
        raise UsageError(f"--explain: no test or case {wanted!r} in "
                         + ", ".join(s.name for s in suites))
    print(text, file=out or sys.stdout)
    return 0


def list_plan(suites: list[Suite], plan: list[Planned], out: TextIO | None = None) -> None:
    """`--list`: per suite, the selected tests with their limits, tags and invocation."""
    out = out or sys.stdout
    by_suite: dict[str, list[Planned]] = {}
    for p in plan:
        by_suite.setdefault(p.suite, []).append(p)
    for s in suites:
        items = by_suite.get(s.name, [])
        print(f"suite {s.name} ({s.format}, {s.path}): {len(items)} of {len(s.tests)} tests", file=out)
        for p in items:
            t = p.test
            bits = [f"timeout {t.timeout:g} s"]
            if t.stall_timeout is not None:
                bits.append(f"stall {t.stall_timeout:g} s")
            if p.repeat > 1:
                bits.append(f"repeat {p.repeat}")
            if t.requires:
                bits.append("requires " + ",".join(t.requires))
            if t.instances:
                bits.append(f"{t.instances.count} instances ({t.instances.criterion})")
            if t.assertions:
                n = len(t.assertions)
                bits.append(f"{n} assertion" + ("s" if n != 1 else ""))
            tags = ",".join(t.tags) or "-"
            print(f"  {t.id}\t{t.name}\ttags={tags}\t{'; '.join(bits)}\t{invocation_summary(t)}", file=out)
    print(f"{len(plan)} tests", file=out)
