"""The stress harness end to end: `python -m stress.local|complex` as a subprocess, starting the real
service, running real commands, and the three reports it writes (asserted on their content).

Timing: the service stretches limits by the host's load (x1..x3), so stall/timeout tests use 1 s
limits (at most 3 s each) and run side by side (--concurrency). `--max-load 1000` keeps the
service from queueing our jobs when other work loads the machine. Every harness run is bounded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import psutil
import pytest

from conftest import REPO, SHARED, wait_until

PY = sys.executable
UPSTREAM = SHARED / "upstream-suites"
SCHEMA = json.loads((REPO / "tests" / "stress" / "report.schema.json").read_text())
TEN_MIB = 10 * 1024 * 1024
BIG_SCRIPT = "import sys; sys.stdout.buffer.write(bytes(range(256)) * 40960)"
RUN_TIMEOUT = 90


def harness(tool: str, *args: str, out: Path | None = None, timeout: float = RUN_TIMEOUT
            ) -> subprocess.CompletedProcess:
    argv = [PY, "-m", f"stress.{tool}", *args]
    if out is not None:
        argv += ["--out", str(out), "--max-load", "1000"]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def write_suite(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc, indent=2))
    return path


class Report:
    """One run's folder, read back: report.md text, report.json, junit.xml root."""

    def __init__(self, out: Path):
        dirs = [d for d in out.iterdir() if d.is_dir()]
        assert len(dirs) == 1, dirs
        self.dir = dirs[0]
        self.md = (self.dir / "report.md").read_text()
        self.json = json.loads((self.dir / "report.json").read_text())
        self.junit = ET.parse(self.dir / "junit.xml").getroot()
        self.tests = {t["id"]: t for t in self.json["tests"]}

    def attempt(self, test_id: str, n: int = 1) -> dict:
        return self.tests[test_id]["attempts"][n - 1]

    def output(self, test_id: str, n: int = 1, stream: str = "stdout") -> bytes:
        return (self.dir / self.attempt(test_id, n)[f"{stream}_path"]).read_bytes()

    def cases(self) -> dict[str, ET.Element]:
        return {c.get("name"): c for c in self.junit.iter("testcase")}


# --- a small JSON Schema checker, enough for report.schema.json -------------------------------

_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def schema_errors(value: Any, schema: dict, path: str = "$") -> list[str]:
    if "$ref" in schema:
        return schema_errors(value, SCHEMA["$defs"][schema["$ref"].split("/")[-1]], path)
    if "oneOf" in schema:
        ok = [s for s in schema["oneOf"] if not schema_errors(value, s, path)]
        return [] if len(ok) == 1 else [f"{path}: matches {len(ok)} of oneOf"]
    errs: list[str] = []
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types

        def is_type(t: str) -> bool:
            if t == "integer":
                return isinstance(value, int) and not isinstance(value, bool)
            if t == "number":
                return isinstance(value, int | float) and not isinstance(value, bool)
            return isinstance(value, _TYPES[t])

        if not any(is_type(t) for t in types):
            return [f"{path}: {value!r:.60} is not {types}"]
    if "enum" in schema and value not in schema["enum"]:
        errs.append(f"{path}: {value!r} not in {schema['enum']}")
    if isinstance(value, dict):
        errs += [f"{path}: missing {k}" for k in schema.get("required", []) if k not in value]
        for k, sub in schema.get("properties", {}).items():
            if k in value:
                errs += schema_errors(value[k], sub, f"{path}.{k}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errs += schema_errors(item, schema["items"], f"{path}[{i}]")
    if isinstance(value, int | float) and "minimum" in schema and value < schema["minimum"]:
        errs.append(f"{path}: {value} < {schema['minimum']}")
    return errs


def is_gone(pid: int, since: float) -> bool:
    """Not running (a zombie, or a different process that reused the pid, counts as gone)."""
    try:
        p = psutil.Process(pid)
        return p.create_time() > since + 1 or p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def assert_all_gone(pids: list[int], since: float) -> None:
    left = wait_until(lambda: all(is_gone(p, since) for p in pids), timeout=10)
    assert left, f"still alive: {[p for p in pids if not is_gone(p, since)]}"


# --- the main run: every kind of result in one stress.complex run -----------------------------


FAKE_STREAM = r'''
import json, sys
def out(o): print(json.dumps(o), flush=True)
out({"type": "system", "subtype": "init", "session_id": "sess-1", "model": "claude-test",
     "claude_code_version": "0.0-test"})
out({"type": "assistant", "message": {"role": "assistant", "content": [
     {"type": "text", "text": 'He said "hi"\nthen left'}]}})
out({"type": "result", "subtype": "success", "is_error": False, "num_turns": 1,
     "duration_ms": 10, "duration_api_ms": 5, "result": "done: 42", "session_id": "sess-1",
     "total_cost_usd": 0.25, "usage": {"input_tokens": 7, "output_tokens": 11}})
'''

FAKE_529 = r'''
import json, sys
msg = "API Error: 529 Overloaded. This is a server-side issue, usually temporary"
print(json.dumps({"type": "assistant", "error": "server_error", "message": {"role": "assistant",
      "model": "<synthetic>", "content": [{"type": "text", "text": msg}]}}))
print(json.dumps({"type": "result", "subtype": "success", "is_error": True, "api_error_status": 529,
      "num_turns": 1, "result": msg, "total_cost_usd": 0, "usage": {}}))
sys.exit(1)
'''


@pytest.fixture(scope="module")
def main_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("main_run")
    (tmp / "stream.py").write_text(FAKE_STREAM)
    (tmp / "fail529.py").write_text(FAKE_529)
    suite = write_suite(tmp / "e2e.json", {
        "name": "harness-e2e",
        "defaults": {"timeout": 20},
        "tests": [
            {"id": "pass_echo", "tags": ["basic"], "command": "echo 'hello harness'",
             "expected_patterns": ["HELLO harness"]},
            {"id": "fail_exit", "tags": ["basic"], "command": "echo failing; exit 3"},
            {"id": "missing_pattern", "command": "echo alpha beta",
             "expected_patterns": ["alpha", "gamma-missing"]},
            {"id": "regex_ok", "args": ["printf", "line %s\\n", "one", "two"],
             "expected_patterns": [{"regex": "^line two$", "flags": "m"}]},
            {"id": "must_not", "command": "echo 'Traceback (most recent call last)'",
             "must_not_contain": ["traceback"]},
            {"id": "stall", "command": "echo partial-before-stall; sleep 30", "stall_timeout": 1,
             "expected_patterns": ["partial-before-stall"]},
            {"id": "timeout", "command": "echo tick; sleep 30", "timeout": 1},
            {"id": "big_output", "args": ["python3", "-c", BIG_SCRIPT]},
            {"id": "children", "timeout": 1,
             "command": "sleep 60 & echo child=$!; setsid sleep 61 & echo child=$!; "
                        "sleep 62 & echo child=$!; wait"},
            {"id": "complex_default", "command": "echo a b c d",
             "expected_patterns": ["a", "b", "c", "d", "zzz-not-there"]},
            {"id": "claude_stream", "args": ["python3", str(tmp / "stream.py")],
             "expected_patterns": [{"text": 'He said "hi"\nthen', "case_sensitive": True}, "done: 42"]},
            {"id": "claude_fail", "requires": ["claude"], "args": ["python3", str(tmp / "fail529.py")]},
            # A shell line finds the project's pinned CLI (not on PATH) because the harness adds it.
            {"id": "claude_in_shell", "command": "command -v claude && claude --version",
             "expected_patterns": [{"regex": "/claude\n"}, "Claude Code"]},
            {"id": "needs_real_model", "requires": ["real-model"], "command": "echo never"},
            {"id": "instances", "command": "echo short",
             "expected_patterns": ["longer"],
             "instances": {"count": 2, "criterion": "longest", "variants": [
                 {"label": "plain"}, {"label": "long", "args": ["printf", "a longer output\\n"]}]}},
        ],
    })
    out = tmp / "out"
    t0 = time.time()
    # Claude tests are in the suite: pin the loopback model so a machine with credentials does
    # not send real requests.
    proc = harness("complex", str(suite), "--concurrency", "4", "--model", "local", out=out)
    return proc, Report(out), t0


def test_main_run_exit_status_and_summary(main_run):
    proc, r, _ = main_run
    assert proc.returncode == 1, proc.stderr
    assert f"report: {r.dir / 'report.md'}" in proc.stdout
    t = r.json["totals"]
    # claude_fail needs the claude CLI (installed by ./dev setup); without it, it is skipped.
    has_claude = not r.json["environment"]["claude"].startswith("unavailable")
    passed, failed, skipped = (7, 7, 1) if has_claude else (6, 6, 3)
    assert (t["tests"], t["passed"], t["failed"], t["skipped"]) == (15, passed, failed, skipped), t
    assert t["ratio"]["text"] == f"{passed}:{failed}" and t["ratio"]["graduates"] is False
    assert "| Result | **FAILED** |" in r.md
    assert f"**{passed}:{failed}** (runs passed : runs failed); does not graduate (needs 10:1 over at least 10 passes)" in r.md
    assert f"| Tests | 15: {passed} passed, {failed} failed, {skipped} skipped |" in r.md


def test_main_run_report_json_follows_its_schema(main_run):
    _, r, _ = main_run
    assert r.json["schema_version"] == 3 and r.json["tool"] == "stress.complex"
    assert schema_errors(r.json, SCHEMA) == []
    env = r.json["environment"]
    assert env["cores"] == os.cpu_count() and env["hostname"]
    assert env["load_start"]["cores"] == os.cpu_count() and env["load_end"]
    assert env["model_mode"] == "local"
    assert env["model_description"].startswith("local: loopback model server")
    assert r.json["options"]["concurrency"] == 4
    assert r.json["service"]["kind"] == "managed" and "<token>" in r.json["service"]["argv"]
    assert r.json["service"]["stop"]["how"] == "sigterm", r.json["service"]["stop"]


def test_each_result_has_its_reason(main_run):
    _, r, _ = main_run
    expect = {"pass_echo": ("passed", "passed"), "fail_exit": ("failed", "exit_code"),
              "missing_pattern": ("failed", "missing_patterns"), "regex_ok": ("passed", "passed"),
              "must_not": ("failed", "forbidden_pattern"), "stall": ("failed", "stalled"),
              "timeout": ("failed", "timeout"), "big_output": ("passed", "passed"),
              "children": ("failed", "timeout"), "complex_default": ("passed", "passed"),
              "claude_stream": ("passed", "passed"), "needs_real_model": ("skipped", "skipped"),
              "instances": ("passed", "passed")}
    got = {k: (r.tests[k]["status"], r.tests[k]["reason"]) for k in expect}
    assert got == expect
    assert r.attempt("fail_exit")["exit_code"] == 3
    assert "exit code 3, expected 0" in r.tests["fail_exit"]["message"]
    assert r.attempt("missing_pattern")["patterns_missing"] == ["gamma-missing"]
    assert r.attempt("must_not")["forbidden_seen"] == ["traceback"]
    # stress.complex: a test in our format without `match` needs 80% (4 of 5 found here).
    cd = r.attempt("complex_default")
    assert cd["patterns_required"] == 4 and cd["patterns_missing"] == ["zzz-not-there"]
    skip = r.tests["needs_real_model"]
    assert "real-model" in skip["message"] and "--model real" in skip["message"]
    assert skip["attempts"][0]["started_at"] is None  # never run


def test_timeouts_are_stretched_by_the_load_factor(main_run):
    _, r, _ = main_run
    for tid, configured in (("timeout", 1.0), ("pass_echo", 20.0)):
        a = r.attempt(tid)
        assert 1.0 <= a["factor"] <= 3.0
        assert a["timeout"] == pytest.approx(configured * a["factor"])
    a = r.attempt("stall")
    assert a["stall_timeout"] == pytest.approx(1.0 * a["factor"])
    assert re.search(r"\| timeout \| harness-e2e \| \*\*FAIL\*\* \| timeout \| [0-9.]+ s \| "
                     r"[0-9.]+ s \(1 s x [0-9.]+\) \| off \| -15 \|", r.md), r.md
    # Both stretched limits per test: the total and the stall limit, each with its factor.
    f = a["factor"]
    assert re.search(rf"\| stall \| harness-e2e \| \*\*FAIL\*\* \| stalled \| [0-9.]+ s \| "
                     rf"{20 * f:.3g} s \(20 s x {f:.2f}\) \| {f:.3g} s \(1 s x {f:.2f}\) \|", r.md), r.md


def test_stall_is_detected_and_partial_output_kept(main_run):
    _, r, _ = main_run
    a = r.attempt("stall")
    assert a["end_reason"] == "stalled" and a["guard"] is None
    assert r.output("stall") == b"partial-before-stall\n"
    assert a["patterns_found"] == ["partial-before-stall"]
    assert "partial output kept (21 bytes stdout" in a["message"]
    assert a["duration"] < a["stall_timeout"] + 5
    assert r.output("timeout") == b"tick\n" and r.attempt("timeout")["end_reason"] == "timeout"


def test_ten_mib_output_is_saved_byte_exact(main_run):
    _, r, _ = main_run
    a = r.attempt("big_output")
    assert a["stdout_bytes"] == TEN_MIB and a["stdout_batches"] >= 2
    assert r.output("big_output") == bytes(range(256)) * 40960


def test_children_of_a_job_are_gone_after_the_run(main_run):
    _, r, t0 = main_run
    pids = [int(p) for p in re.findall(rb"child=(\d+)", r.output("children"))]
    assert len(pids) == 3
    assert_all_gone(pids, t0)
    job_pids = [a["pid"] for t in r.json["tests"] for a in t["attempts"] if a["pid"]]
    assert_all_gone([r.json["service"]["pid"], *job_pids], t0)


def test_claude_stream_json_is_read_and_summed(main_run):
    _, r, _ = main_run
    c = r.attempt("claude_stream")["claude"]
    assert c["session_id"] == "sess-1" and c["total_cost_usd"] == 0.25 and c["has_result"]
    assert c["usage"] == {"input_tokens": 7, "output_tokens": 11}
    # The answer itself: a bounded preview with its length and digest (the stdout has it whole).
    assert (c["result_text_preview"], c["result_text_chars"], c["result_text_truncated"]) == \
        ("done: 42", 8, False)
    assert c["result_text_sha256"] == hashlib.sha256(b"done: 42").hexdigest()
    # The quote and newline are escaped in the raw JSON: found only in the assembled text.
    assert b'He said "hi"' not in r.output("claude_stream")
    assert r.json["claude_totals"]["total_cost_usd"] >= 0.25
    assert "## Claude totals" in r.md and "| 0.2500 |" in r.md


def test_claude_failures_are_classified(main_run):
    _, r, _ = main_run
    t = r.tests["claude_fail"]
    if r.json["environment"]["claude"].startswith("unavailable"):
        assert t["status"] == "skipped" and "requires 'claude'" in t["message"]
        return
    assert t["status"] == "failed" and t["reason"] == "exit_code"
    assert t["attempts"][0]["cli_failure"]["kind"] == "api_error"
    assert "claude: API error 529" in t["message"]
    assert "**Claude CLI:** api_error: API error 529" in r.md
    assert "Claude Code" in r.json["environment"]["claude"]
    assert r.tests["claude_in_shell"]["status"] == "passed", r.tests["claude_in_shell"]["message"]
    assert r.json["environment"]["claude_path"].endswith("/claude")


def test_instances_pick_the_best_by_criterion(main_run):
    _, r, _ = main_run
    inst = r.attempt("instances")["instances"]
    assert [(i["instance"], i["status"], i["chosen"]) for i in inst] == [
        (1, "failed", False), (2, "passed", True)]
    assert (r.dir / "outputs" / "instances.i1.stdout").read_bytes() == b"short\n"
    assert r.output("instances") == b"a longer output\n"


def test_markdown_report_content(main_run):
    _, r, _ = main_run
    md = r.md
    for section in ("## Summary", "## Environment", "## Tests", "## Failures", "## Skipped",
                    "## Resources", "## Distributions", "## Passed tests' output"):
        assert section in md, section
    assert f"| Host | {r.json['environment']['hostname']} |" in md
    assert "| Load at start |" in md and "| Model mode | local: loopback model server" in md
    assert "### missing_pattern: missing_patterns" in md and "`gamma-missing`" in md
    assert "[stdout](outputs/stall.stdout) (21 B)" in md
    assert "- **needs_real_model**: skipped: requires 'real-model'" in md
    assert "<details><summary>output preview</summary>" in md
    page = (r.dir / "report.html").read_text()  # stress.complex: resources feed the host chart
    assert 'id="chart-host"' in page and "could not be drawn" not in page
    assert re.search(r"\| big_output \| harness-e2e \| PASS \| passed \| .* \| 10\.0 MiB \|", md)
    assert re.search(r"^\s*< 1 s \|\s+\d+ #+$", md, re.M)  # duration histogram
    assert re.search(r"^\s*1-10 MiB \|\s+0\s*$", md, re.M) and re.search(r">= 10 MiB \|\s+1 #", md)


def test_resources_are_sampled(main_run):
    _, r, _ = main_run
    res = r.json["resources"]
    assert res["service_pid"] == r.json["service"]["pid"] and res["samples"] >= 2
    assert res["peak"]["rss_bytes"] > 10 * 1024 * 1024 and res["peak"]["threads"] >= 1
    assert res["peak"]["processes"] >= 2  # the service plus at least one job at some sample
    big = r.attempt("big_output")["resources"]
    assert big["samples"] >= 1 and big["service"]["rss_bytes"] > 0
    kids = r.attempt("children")["resources"]
    assert kids["job"]["processes"] >= 3  # sh and its sleeps, seen while it waited
    assert "Service process" in r.md and "| children |" in r.md


def test_junit_xml_structure(main_run):
    _, r, _ = main_run
    root = r.junit
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["harness-e2e"]
    s = suites[0]
    t = r.json["totals"]
    assert (s.get("tests"), s.get("failures"), s.get("errors"), s.get("skipped")) == (
        "15", str(t["failed"]), "0", str(t["skipped"]))
    cases = r.cases()
    assert set(cases) == set(r.tests)
    f = cases["fail_exit"].find("failure")
    assert f is not None and f.get("type") == "exit_code" and "exit code 3" in f.get("message")
    assert cases["needs_real_model"].find("skipped") is not None
    assert cases["pass_echo"].find("failure") is None
    assert "hello harness" in cases["pass_echo"].find("system-out").text
    assert "gamma-missing" in cases["missing_pattern"].find("failure").text


# --- other runs ----------------------------------------------------------------------------


def test_repeat_with_a_pass_threshold(tmp_path):
    suite = write_suite(tmp_path / "repeats.json", {
        "name": "repeats", "defaults": {"timeout": 20},
        "tests": [
            # Fails on the first attempt only: deterministic, not flaky.
            {"id": "threshold", "command": 'test "$STRESS_ATTEMPT" != 1',
             "pass_threshold": {"passes": 2, "of": 3}, "repeat": 3},
            {"id": "strict", "command": 'test "$STRESS_ATTEMPT" != 1'},
        ],
    })
    proc = harness("local", str(suite), "--repeat", "6", "--concurrency", "2", out=tmp_path / "out")
    r = Report(tmp_path / "out")
    assert proc.returncode == 1, proc.stderr
    th, st = r.tests["threshold"], r.tests["strict"]
    # --repeat 6 keeps the threshold's ratio 2/3: 4 of 6 needed.
    assert (th["status"], th["passes"], th["runs"], th["required"]) == ("passed", 5, 6, 4)
    assert (st["status"], st["passes"], st["runs"], st["required"]) == ("failed", 5, 6, 6)
    assert [a["status"] for a in st["attempts"]] == ["failed"] + ["passed"] * 5
    assert r.json["totals"]["ratio"]["text"] == "10:2"  # passes:failures, as counted
    # The terminal counts tests and, when they differ, runs: the units report.md's Summary uses.
    assert "2 tests: 1 passed, 1 failed, 0 skipped (12 runs: 10 passed, 2 failed, 0 skipped)" in proc.stdout
    assert "PASS 5/6 (needed 4)" in r.md and "**FAIL** 5/6 (needed 6)" in r.md
    assert (r.dir / "outputs" / "strict.6.stdout").exists()
    assert {"threshold [attempt 1]", "strict [attempt 6]"} <= set(r.cases())
    assert r.cases()["strict [attempt 1]"].find("failure") is not None


def test_fail_fast_and_filter(tmp_path):
    suite = write_suite(tmp_path / "ff.json", {
        "name": "ff", "defaults": {"timeout": 20},
        "tests": [
            {"id": "first_fails", "tags": ["ff"], "command": "exit 1"},
            {"id": "second", "tags": ["ff"], "command": "echo second"},
            {"id": "excluded", "tags": ["other"], "command": "echo excluded"},
        ],
    })
    proc = harness("local", str(suite), "--fail-fast", "--filter", "f?", "--quiet", out=tmp_path / "out")
    r = Report(tmp_path / "out")
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[-1] == f"report: {r.dir / 'report.md'}"
    assert len(proc.stdout.splitlines()) == 2  # --quiet: summary and report path only
    assert set(r.tests) == {"first_fails", "second"}
    assert r.tests["second"]["status"] == "skipped"
    assert "not run: --fail-fast: stopped after first_fails failed" in r.tests["second"]["message"]
    assert not (r.dir / "outputs" / "second.stdout").exists()


def test_both_seed_formats_run(tmp_path):
    unified = write_suite(tmp_path / "unified_tasks.json", {
        "task_list_id": "SYNTH_UNIFIED", "description": "seed 004 shape",
        "execution_config": {"default_timeout": 20},
        "categories": {"simple": {"description": "plain commands", "tasks": [
            {"id": "echo_task", "name": "Echo", "natural_language_request": "say hi",
             "metatags": "[category:simple]", "command_template": 'echo "${REQUEST} ${METATAGS}"',
             "verification": {"expected_patterns": ["say hi", "not-there"], "marker": "M_${TIMESTAMP}"}},
            {"id": "failure_expected", "name": "Must fail", "command_template": "exit 2",
             "verification": {"expected_patterns": []}},
        ]}},
    })
    task_list = write_suite(tmp_path / "complex_synth.json", {
        "task_list_id": "SYNTH_COMPLEX", "timeout": 20, "tests": [
            {"id": "four_of_five", "name": "80 percent", "command": "echo one two three four",
             "expected_patterns": ["one", "two", "three", "four", "five"]},
            {"id": "date_like", "name": "Date", "command": "echo 2025-01-01", "expected_patterns": ["202"]},
        ]})
    proc = harness("local", str(unified), str(task_list), out=tmp_path / "out")
    r = Report(tmp_path / "out")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [s["format"] for s in r.json["suites"]] == ["unified-tasks", "task-list"]
    assert all(t["status"] == "passed" for t in r.json["tests"]), r.md
    assert r.tests["echo_task"]["tags"] == ["simple", "category:simple"]
    assert r.attempt("four_of_five")["patterns_required"] == 4  # complex task list: 80%
    assert r.attempt("failure_expected")["exit_code"] == 2
    assert [s.get("name") for s in r.junit.findall("testsuite")] == ["SYNTH_UNIFIED", "SYNTH_COMPLEX"]
    assert "| Result | **PASSED** |" in r.md
    assert "## Resources\n\nNot measured by stress.local: CPU, memory" in r.md  # stress.complex does
    # No test uses Claude, yet the report says which CLI this host has (issue 5: every report).
    from stress.service.preflight import find_local_claude

    env = r.json["environment"]
    if find_local_claude() is None:
        assert env["claude"] == "not used"
    else:
        assert re.fullmatch(r"\d+\.\d+\.\d+ \(Claude Code\)", env["claude"]), env["claude"]
        assert env["claude_used"] is False and env["claude_path"] == find_local_claude()
        assert f"| claude | {env['claude']} at {env['claude_path']} (not used by the selected tests) |" in r.md


def test_list_and_filter_print_without_running(tmp_path):
    proc = harness("local", "configs/smoke.json", "--list", "--filter", "exit-codes", "--filter", "echo")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("suite smoke (cc_executor, ") and lines[0].endswith(": 2 of 6 tests")
    ids = [ln.split("\t")[0].strip() for ln in lines[1:-1]]
    assert ids == ["echo", "exit_code"]
    assert "tags=smoke,shell\ttimeout 20 s; stall 10 s\techo 'Hello from cc_executor'" in lines[1]
    assert lines[-1] == "2 tests"


def test_list_reads_the_upstream_suites():
    if not UPSTREAM.is_dir():
        pytest.skip("../shared/upstream-suites is absent")
    files = sorted(str(p) for p in UPSTREAM.glob("*.json"))
    from stress import complex as complex_cli
    from stress import local

    assert local.main([*files, "--list"]) == 0
    assert complex_cli.main([str(UPSTREAM / "complex_stress_tests.json"), "--list"]) == 0


def test_upstream_list_output(capsys):
    if not UPSTREAM.is_dir():
        pytest.skip("../shared/upstream-suites is absent")
    from stress import local

    assert local.main([str(UPSTREAM / "unified_stress_test_tasks.json"), "--list",
                       "--filter", "failure_*"]) == 0
    out = capsys.readouterr().out
    assert "unified-tasks" in out and "\nfailure_1\t" not in out  # ids are indented
    listed = [ln.split("\t")[0].strip() for ln in out.splitlines()[1:-1]]
    assert listed and all(i.startswith("failure_") for i in listed)
    assert "requires claude" in out


def test_malformed_suite_is_refused_before_anything_runs(tmp_path, capsys):
    from stress import local

    bad = write_suite(tmp_path / "bad.json", {
        "name": "bad", "defaults": {"timout": 5},
        "tests": [{"id": "a", "command": "echo a", "expect_exit": "zero"}],
    })
    broken = tmp_path / "broken.json"
    broken.write_text('{"name": "x",\n "tests": [}\n')
    out = tmp_path / "out"
    assert local.main([str(bad), str(broken), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: 2 problems" in err
    assert "$.defaults.timout: unknown key 'timout' (did you mean 'timeout'?)" in err
    assert "$.tests[0].expect_exit:" in err
    assert f"{broken}: $ (line 2, column 12): invalid JSON" in err
    assert not out.exists()  # nothing ran, no report


@pytest.mark.parametrize("argv, message", [
    (["--concurrency", "0"], "must be at least 1"),
    (["--filter", "no-such-test"], "no test matches --filter 'no-such-test'"),
    (["--token", "x"], "--token is only used with --server"),
    (["--claude-template", "claude -p hi"], "must contain ${PROMPT}"),
])
def test_usage_errors_exit_2(argv, message, capsys):
    from stress import local

    assert local.main(["configs/smoke.json", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_run_stops_everything_and_writes_a_partial_report(tmp_path, sig, code):
    suite = write_suite(tmp_path / "slow.json", {
        "name": "slow", "defaults": {"timeout": 60},
        "tests": [
            {"id": "fast", "command": "echo fast"},
            {"id": "sleeper", "command": "echo started; sleep 60 & echo child=$!; wait"},
            {"id": "later", "command": "echo later"},
        ],
    })
    out = tmp_path / "out"
    t0 = time.time()
    with open(tmp_path / "stdout", "wb") as so, open(tmp_path / "stderr", "wb") as se:
        proc = subprocess.Popen([PY, "-m", "stress.local", str(suite), "--out", str(out),
                                 "--max-load", "1000"], cwd=REPO, stdout=so, stderr=se,
                                stdin=subprocess.DEVNULL)
        try:
            def sleeper_started():
                files = list(out.glob("*/outputs/sleeper.stdout"))
                return files and b"child=" in files[0].read_bytes()

            assert wait_until(sleeper_started, timeout=60, interval=0.05), "sleeper never started"
            proc.send_signal(sig)
            assert proc.wait(timeout=60) == code
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    r = Report(out)
    assert r.json["interrupted"] is True and r.json["interrupt_signal"] == sig.name
    assert r.json["exit_code"] == code
    assert r.md.startswith(f"# Stress run {r.json['run_id']} (INTERRUPTED by {sig.name}: partial report)")
    assert r.tests["fast"]["status"] == "passed"
    sl = r.attempt("sleeper")
    assert sl["interrupted"] and sl["status"] == "skipped" and sl["end_reason"] == "cancelled"
    assert r.output("sleeper").startswith(b"started\nchild=")
    assert r.tests["later"]["message"] == f"skipped: not run: interrupted by {sig.name}"
    assert "| sleeper | slow | INTERRUPTED | interrupted |" in r.md
    assert (tmp_path / "stdout").read_text().strip().endswith(f"report: {r.dir / 'report.md'}")
    child = int(re.search(rb"child=(\d+)", r.output("sleeper")).group(1))
    assert_all_gone([r.json["service"]["pid"], sl["pid"], child], t0)


def test_second_sigint_kills_at_once_and_prints_no_asyncio_noise(tmp_path):
    """Ctrl-C twice: the first cancels, the second kills the service while the harness still waits
    for the cancelled jobs (they ignore SIGTERM, so the service's kill grace is still running). The
    broken connection must end quietly: no "Task exception was never retrieved", no traceback."""
    stubborn = "trap '' TERM; echo pid=$$; while :; do sleep 0.1; done"
    suite = write_suite(tmp_path / "stubborn.json", {
        "name": "stubborn", "defaults": {"timeout": 60},
        "tests": [{"id": "one", "command": stubborn}, {"id": "two", "command": stubborn}]})
    out = tmp_path / "out"
    t0 = time.time()
    with open(tmp_path / "stdout", "wb") as so, open(tmp_path / "stderr", "wb") as se:
        proc = subprocess.Popen([PY, "-m", "stress.local", str(suite), "--out", str(out),
                                 "--concurrency", "2", "--no-history", "--max-load", "1000"],
                                cwd=REPO, stdout=so, stderr=se, stdin=subprocess.DEVNULL)
        try:
            def both_started():
                files = list(out.glob("*/outputs/*.stdout"))
                return len(files) == 2 and all(b"pid=" in f.read_bytes() for f in files)

            assert wait_until(both_started, timeout=60, interval=0.05), "the jobs never started"
            proc.send_signal(signal.SIGINT)
            assert wait_until(lambda: b"SIGINT: cancelling" in (tmp_path / "stderr").read_bytes(),
                              timeout=10), "the first SIGINT was not handled"
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 130
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    err = (tmp_path / "stderr").read_text()
    assert "never retrieved" not in err and "Traceback" not in err, err
    r = Report(out)
    assert r.json["interrupted"] is True and {t["status"] for t in r.json["tests"]} == {"skipped"}
    pids = [int(re.search(rb"pid=(\d+)", r.output(t)).group(1)) for t in ("one", "two")]
    assert_all_gone([r.json["service"]["pid"], *pids], t0)
