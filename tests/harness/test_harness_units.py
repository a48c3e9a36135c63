"""Pure pieces of the harness: ratio and graduation, planning, templates, histograms, reports.

No processes: values in, values out. The end-to-end behaviour is in tests/harness/test_harness.py.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import pytest

from stress.cli import (
    UsageError,
    apply_template,
    build_plan,
    effective_threshold,
    executables,
    matches_filter,
    parse_template,
    unmet_requirement,
)
from stress.report import SIZE_BUCKETS, cell, fence, histogram, render_junit, render_markdown
from stress.report.results import Attempt, Ratio, RunResult, Outcome
from stress.suite import load_suite
from stress.suite.verdict import PassThreshold


@pytest.mark.parametrize("passes, failures, text, graduates", [
    (23, 2, "23:2", True), (10, 1, "10:1", True), (9, 1, "9:1", False), (5, 0, "5:0", False),
    (10, 0, "10:0", True),
    (0, 0, "0:0", False), (0, 3, "0:3", False), (1, 6, "1:6", False),
])
def test_success_ratio_and_graduation(passes, failures, text, graduates):
    r = Ratio(passes, failures)
    assert (r.text(), r.graduates) == (text, graduates)
    value = r.to_json()["value"]
    if failures:
        assert math.isfinite(value)
    else:
        assert value is None if passes else value == 0.0


def suite_file(tmp_path, tests, name="s", **top):
    p = tmp_path / f"{name}.json"
    p.write_text(json.dumps({"name": name, **top, "tests": tests}))
    return load_suite(p)


def test_filters_match_ids_and_tags_by_glob(tmp_path):
    s = suite_file(tmp_path, [{"id": "alpha_1", "tags": ["fast"], "command": "true"},
                              {"id": "beta", "tags": ["slow", "net"], "command": "true"}])
    a, b = s.tests
    assert matches_filter(a, []) and matches_filter(a, ["alpha_*"]) and matches_filter(b, ["n?t"])
    assert not matches_filter(a, ["slow"]) and not matches_filter(b, ["BETA"])


def test_plan_qualifies_clashing_ids_and_applies_repeat(tmp_path):
    s1 = suite_file(tmp_path, [{"id": "same", "command": "true"}, {"id": "only1", "args": ["printf", "x"]}],
                    name="one")
    s2 = suite_file(tmp_path, [{"id": "same", "command": "true", "repeat": 2}], name="two words")
    plan = build_plan([s1, s2], [], None)
    assert [(p.stem, p.repeat) for p in plan] == [("one/same", 1), ("only1", 1), ("two_words/same", 2)]
    assert plan[2].attempt_stem(2) == "two_words/same.2" and plan[1].attempt_stem(1) == "only1"
    assert [p.repeat for p in build_plan([s1, s2], [], 5)] == [5, 5, 5]
    assert executables(plan) == ["sh", "printf"]


def test_repeat_override_keeps_the_threshold_ratio(tmp_path):
    s = suite_file(tmp_path, [{"id": "t", "command": "true", "repeat": 3,
                               "pass_threshold": {"passes": 2, "of": 3}}])
    t = s.tests[0]
    assert effective_threshold(t, 3) == PassThreshold(passes=2, of=3)
    th = effective_threshold(t, 6)
    assert th.ratio == pytest.approx(2 / 3) and th.required(6) == 4


def test_claude_template_renders_prompt_tests_as_argv(tmp_path):
    s = suite_file(tmp_path, [{"id": "q", "prompt": 'What is "2+2"? $HOME'},
                              {"id": "c", "command": "echo hi"}])
    argv = parse_template("claude -p ${PROMPT} --model 'claude x' --tag ${TEST_ID}")
    q, c = apply_template(s, argv).tests
    assert q.command is None
    assert q.args == ("claude", "-p", 'What is "2+2"? $HOME', "--model", "claude x", "--tag", "q")
    assert c.command == "echo hi"
    plan = build_plan([s], [], None)
    assert plan[0].uses_claude and not plan[1].uses_claude
    with pytest.raises(UsageError, match="must contain"):
        parse_template("claude -p hi")
    with pytest.raises(UsageError, match="cannot split"):
        parse_template("claude -p '${PROMPT}")


def test_requirements_name_what_is_missing(tmp_path):
    s = suite_file(tmp_path, [{"id": "r", "command": "claude -p x", "requires": ["real-model"]},
                              {"id": "g", "command": "true", "requires": ["gpu"]},
                              {"id": "ok", "command": "true"}])
    r, g, ok = build_plan([s], [], None)
    assert "requires 'claude'" in unmet_requirement(r, set(), "auto", "executable not found: claude")
    assert "--model real" in unmet_requirement(r, {"claude"}, "local", "")
    assert unmet_requirement(r, {"claude", "real-model"}, "real", "") is None
    assert unmet_requirement(g, {"claude"}, "real", "") == "requires 'gpu', which this harness does not provide"
    assert unmet_requirement(ok, set(), "auto", "") is None


def test_histogram_and_fences():
    text = histogram([0, 100, 2000, 70_000, 11 * 1024**2], SIZE_BUCKETS, width=10)
    lines = text.splitlines()
    assert lines[0].strip().startswith("< 1 KiB |    2 ##########")
    assert lines[-1].strip() == ">= 10 MiB |    1 #####"
    assert fence("no ticks") == "```" and fence("has ```` four") == "`````"


def _run_with(outcome: Outcome) -> RunResult:
    run = RunResult(run_id="r1", tool="stress.local", argv=["x"], started_at=0.0, finished_at=1.0,
                    exit_code=1, environment={"hostname": "h", "cores": 2, "model_mode": "auto"})
    run.outcomes = [outcome]
    return run


def test_reports_escape_what_they_show():
    a = Attempt(attempt=1, status="failed", reason="missing_patterns",
                message="missing 'a|b' \x00\x1b[31m", end_reason="exited", exit_code=0,
                started_at=1.0, preview="```\nbinary \x00\x07 and <xml> & stuff\n",
                stdout_path="outputs/t.stdout", stderr_path="outputs/t.stderr",
                patterns_missing=["a|b"])
    o = Outcome(suite="s", id="t", name="t", tags=[], source="f.json:$.tests[0]", kind="command",
                    invocation="echo", requires=[], timeout=1.0, stall_timeout=None, repeat=1,
                    status="failed", reason="missing_patterns", message=a.message, runs=1, required=1,
                    attempts=[a])
    run = _run_with(o)
    md = render_markdown(run)
    assert cell("a|b\nc") == "a\\|b c"  # table cells: one line, pipes escaped
    assert "\x00" not in md and "\x1b" not in md and "missing 'a|b' \ufffd\ufffd[31m" in md
    assert "\n````\n```\nbinary" in md  # the preview's own fence cannot close ours
    root = ET.fromstring(render_junit(run))  # control characters removed: parses
    case = root.find("testsuite/testcase")
    assert case.find("failure").get("type") == "missing_patterns"
    assert "<xml> & stuff" in case.find("system-out").text


def test_claude_path_env_puts_the_found_cli_first(monkeypatch):
    from stress.cli import claude_path_env

    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert claude_path_env("/opt/x/.bin/claude") == {"PATH": "/opt/x/.bin:/usr/bin:/bin"}
    assert claude_path_env("/usr/bin/claude") == {}  # already found through PATH
    assert claude_path_env(None) == {} and claude_path_env("claude") == {}


def test_markdown_shows_both_limits_and_long_job_timelines():
    """Per test both stretched limits; for a run of a minute or more (stress.complex's long
    tests) its job tree's timeline; without resource sampling (stress.local) one line says so."""
    # [t, service CPU %, service RSS, job CPU %, job RSS, job processes] every 0.5 s over 90 s
    timeline = [[i * 0.5, 1.0, 50 << 20, 98.0 if 60 <= i < 100 else 2.0, (i + 1) << 20,
                 5 if i > 120 else 2] for i in range(181)]
    long = Attempt(attempt=1, status="passed", reason="passed", message="passed", end_reason="exited",
                   exit_code=0, started_at=1.0, duration=90.4, factor=1.5, timeout=360.0,
                   stall_timeout=90.0, stdout_path="outputs/long.stdout",
                   resources={"samples": 181, "service": None, "job": {}, "timeline": timeline,
                              "timeline_columns": []})
    o = Outcome(suite="s", id="long", name="long", tags=["long"], source="f.json:$.tests[0]",
                    kind="prompt", invocation="claude", requires=[], timeout=240.0,
                    stall_timeout=60.0, repeat=1, status="passed", reason="passed", message="passed",
                    runs=1, passes=1, required=1, attempts=[long])
    run = _run_with(o)
    md = render_markdown(run)
    assert "| long | s | PASS | passed | 1 min 30 s | 360 s (240 s x 1.50) | 90 s (60 s x 1.50) | 0 |" in md
    assert "## Resources\n\nNot measured by stress.local" in md and "Job timeline" not in md
    run.resources = {"interval": 0.5, "samples": 181, "errors": 0, "service_pid": None, "peak": {},
                     "timeline": []}
    md = render_markdown(run)
    head = "Job timeline of long (1 min 30 s; every few samples; CPU summed over the job tree):"
    assert head in md and "Not measured" not in md
    rows = md.split(head)[1].split("```")[1].strip().splitlines()
    assert rows[0].split() == ["t", "(s)", "job", "CPU", "%", "job", "RSS", "procs", "svc", "CPU", "%",
                               "svc", "RSS"]
    assert 15 <= len(rows) - 1 <= 25 and rows[-1].split()[:4] == ["90.0", "2.0", "181.0", "MiB"]
    assert any(r.split()[1] == "98.0" for r in rows[1:])  # the busy phase shows
    short = Attempt(**{**long.__dict__, "duration": 30.0})
    o.attempts = [short]
    assert "Job timeline" not in render_markdown(run)
