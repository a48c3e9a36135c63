"""Scale and trust, end to end: repeats and flakiness, --halt, concurrent instances with a best
response, and the run history with its comparisons (several hosts: test_fleet.py, on Dask). Every harness run is a real `python -m stress.local` subprocess with a bounded
timeout; the pure parts (instance selection, option parsing) are tested in-process first.

Timing: tests are sleeps of 0.2-1.5 s; the slowest harness run here takes ~8 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from service_fixture import wait_gone
from stress import cli
from stress.run.instances import InstanceRun, select, why_not_eligible
from stress.suite import load_suite
from stress.suite.verdict import judge
from test_harness import SCHEMA, schema_errors

PY = sys.executable
RUN_TIMEOUT = 90


def harness(*args: str, out: Path, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    argv = [PY, "-m", "stress.local", *args, "--out", str(out), "--max-load", "1000", "--quiet"]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def suite_file(path: Path, name: str, tests: list[dict], **defaults) -> Path:
    doc = {"name": name, "tests": tests}
    if defaults:
        doc["defaults"] = defaults
    path.write_text(json.dumps(doc, indent=2))
    return path


class Run:
    """One run's folder: report.json (checked against its schema), report.md."""

    def __init__(self, folder: Path):
        self.dir = folder
        self.json = json.loads((folder / "report.json").read_text())
        self.md = (folder / "report.md").read_text()
        self.tests = {t["id"]: t for t in self.json["tests"]}
        assert schema_errors(self.json, SCHEMA) == []

    @classmethod
    def only(cls, out: Path) -> "Run":
        dirs = [d for d in out.iterdir() if d.is_dir()]
        assert len(dirs) == 1, dirs
        return cls(dirs[0])

    def job_pids(self) -> list[int]:
        return [a["pid"] for t in self.json["tests"] for a in t["attempts"] if a["pid"]]


# ---------------------------------------------------------------------------------------------
# Pure parts


def _run(i: int, eligible: bool = True, duration: float = 1.0, size: int = 10,
         cost: float | None = None, found: int = 0, total: int = 0) -> InstanceRun:
    return InstanceRun(i, eligible, duration, size, cost, found, total,
                       None if eligible else "unexpected exit code (exit 1)")


def test_instance_selection_by_each_criterion():
    runs = [_run(0, duration=0.5, size=50, cost=0.02, found=1, total=3),
            _run(1, eligible=False, duration=0.1, size=500, cost=0.001, found=3, total=3),
            _run(2, duration=0.3, size=20, cost=0.01, found=2, total=3)]
    assert select("fastest", runs).winner == 2  # #2 is faster but did not succeed
    assert select("longest", runs).winner == 0
    assert select("cheapest", runs).winner == 2
    sel = select("most_patterns", runs)
    assert (sel.winner, sel.ranking) == (2, (2, 0))
    assert "#3 is the most patterns of 2 that succeeded (2/3 patterns; others: #1 1/3 patterns)" in sel.why
    assert "not eligible: #2 unexpected exit code (exit 1)" in sel.why
    assert sel.to_json() == {"criterion": "most_patterns", "winner": 3, "ranking": [3, 1], "why": sel.why}


def test_instance_selection_ties_missing_costs_and_no_winner():
    tie = [_run(0, duration=0.4, found=2, total=2), _run(1, duration=0.2, found=2, total=2)]
    sel = select("most_patterns", tie)
    assert sel.winner == 1 and "a tie, broken by run time" in sel.why
    same = [_run(0, duration=0.2), _run(1, duration=0.2)]
    assert select("fastest", same).winner == 0  # then by instance number: reproducible
    no_cost = [_run(0, duration=0.9), _run(1, duration=0.1)]
    sel = select("cheapest", no_cost)
    assert sel.winner == 1 and "no instance reported a cost, so the fastest won" in sel.why
    mixed = [_run(0, duration=0.1), _run(1, duration=0.9, cost=0.5)]
    assert select("cheapest", mixed).winner == 1  # a known cost beats an unknown one
    none = select("fastest", [_run(0, eligible=False), _run(1, eligible=False)])
    assert none.winner is None and none.ranking == ()
    assert none.why.startswith("no instance succeeded (#1 unexpected exit code")
    with pytest.raises(ValueError, match="unknown criterion 'best'"):
        select("best", tie)
    with pytest.raises(ValueError, match="no instances"):
        select("fastest", [])


def test_eligibility_follows_the_verdict(tmp_path):
    s = suite_file(tmp_path / "s.json", "e", [
        {"id": "t", "command": "true", "expected_patterns": ["x", "y"], "must_not_contain": ["bad"]}])
    t = load_suite(s).tests[0]
    assert why_not_eligible(judge(t, 0, "exited", "x")) is None  # missing patterns still eligible
    assert why_not_eligible(judge(t, 1, "exited", "x y")) == "unexpected exit code (exit 1)"
    assert why_not_eligible(judge(t, 0, "exited", "x y bad")) == "forbidden output"
    assert why_not_eligible(judge(t, None, "timeout", "x y")) == "timed out"
    assert why_not_eligible(judge(t, None, "error", "", detail="boom")) == "did not complete"


def test_server_option_takes_one_url_with_its_token():
    ns = cli.build_parser("p", "local", "").parse_args([
        "--server", "ws://127.0.0.1:2/ws", "--token", "T", "--server-token", "ws://127.0.0.1:2/ws=abc="])
    [spec] = cli.server_specs(ns)
    assert (spec.url, spec.token) == ("ws://127.0.0.1:2/ws", "abc=")
    assert cli.split_server("ws://h:1/ws") == ("ws://h:1/ws", None, None)
    assert cli.redact_argv(["x", "--token", "s1", "--server-token", "ws://h/ws=s2",
                            "--token=s3", "--server-token=ws://h/ws=s4", "--out", "o"]) == [
        "x", "--token", "<token>", "--server-token", "ws://h/ws=<token>", "--token=<token>",
        "--server-token=ws://h/ws=<token>", "--out", "o"]


@pytest.mark.parametrize("args, message", [
    (["--weights", "1,2"], "--weights: several services are now a Dask cluster: use --cluster"),
    (["--servers", "2"], "--servers: several services are now a Dask cluster: use --cluster"),
    (["--server", "http://h/ws"], "--server must be a ws:// or wss:// URL"),
    (["--server", "ws://h:1/ws", "--server", "ws://h:2/ws"], "use --cluster tcp://HOST:PORT"),
    (["--server", "ws://h:1/ws", "--server-token", "ws://other/ws=t"],
     "--server-token: 'ws://other/ws' is not the --server URL"),
    (["--halt", "sometimes"], "--halt: bad halt rule 'sometimes'"),
    (["--retries", "-1"], "argument --retries: must be at least 0, got -1"),
    (["--no-history", "--baseline", "x"], "--no-history cannot be combined with --baseline"),
    (["--learned-timeouts", "fast"], "--learned-timeouts: not a percentage: 'fast'"),
    (["--baseline", "no-such-run"], "--baseline: no run 'no-such-run'"),
])
def test_bad_scale_options_are_usage_errors(tmp_path, capsys, args, message):
    s = suite_file(tmp_path / "s.json", "u", [{"id": "t", "command": "true"}])
    code = cli.main([str(s), "--out", str(tmp_path / "out"), *args])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not any(p.is_dir() for p in (tmp_path / "out").glob("*"))  # nothing ran


# ---------------------------------------------------------------------------------------------
# Repeats, halting, instances


def test_repeat_classifies_flaky_tests_with_their_pass_rate(tmp_path):
    counter = tmp_path / "count"
    flaky = (f"n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; "
             "echo attempt $n; [ $((n % 2)) -eq 1 ]")
    s = suite_file(tmp_path / "f.json", "flaky", [
        {"id": "odd_passes", "command": flaky, "pass_threshold": {"passes": 2, "of": 3}},
        {"id": "always", "command": "echo fine"},
        {"id": "never", "command": "exit 4"},
    ])
    proc = harness(str(s), "--repeat", "3", out=tmp_path / "out")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # "never" fails
    r = Run.only(tmp_path / "out")
    odd = r.tests["odd_passes"]
    assert [a["status"] for a in odd["attempts"]] == ["passed", "failed", "passed"]
    assert odd["status"] == "passed" and (odd["passes"], odd["runs"], odd["required"]) == (2, 3, 2)
    assert odd["stability"] == {"stability": "flaky", "passes": 2, "runs": 3, "required": 2,
                                "passed": True, "pass_rate": 0.6667}
    assert r.tests["always"]["stability"]["stability"] == "stable_pass"
    assert r.tests["never"]["stability"]["stability"] == "stable_fail"
    assert r.json["stability"] == {"stable_pass": 1, "stable_fail": 1, "flaky": 1, "not_run": 0}
    md = r.md
    assert "| Stability | 1 stable passes, 1 stable failures, 1 flaky, 0 not run |" in md
    assert "### Flaky (1)" in md and "| odd_passes | flaky | 67% | 2/3 | 2 | PASS | `P F P` |" in md
    assert "PASS 2/3 (needed 2), flaky 67%" in md


def test_halt_now_cancels_running_tests_and_starts_no_more(tmp_path):
    s = suite_file(tmp_path / "h.json", "halt", [
        {"id": "boom", "command": "sleep 0.3; exit 3", "timeout": 60},
        *({"id": f"slow{i}", "command": "sleep 20", "timeout": 30} for i in range(4)),
    ])
    t0 = time.monotonic()
    proc = harness(str(s), "--concurrency", "2", "--halt", "now,fail=1", out=tmp_path / "out")
    elapsed = time.monotonic() - t0
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert elapsed < 15, elapsed
    assert "HALTED" in proc.stdout
    r = Run.only(tmp_path / "out")
    assert r.json["halted"].startswith("--halt now,fail=1: 1 of 1 finished tests failed")
    assert r.tests["boom"]["status"] == "failed"
    slow = [r.tests[f"slow{i}"] for i in range(4)]
    assert all(t["status"] == "skipped" for t in slow)
    cancelled = [t for t in slow if t["reason"] == "cancelled"]
    assert cancelled, [t["message"] for t in slow]  # at least one was running and was cut short
    for t in cancelled:
        a = t["attempts"][0]
        assert "cancelled: --halt now,fail=1" in a["message"]
        if a["started_at"] is not None:  # (a busy host may cancel one while it still connects)
            assert a["end_reason"] == "cancelled" and a["interrupted"]
    for t in slow:
        if t["reason"] != "cancelled":
            assert "not run: --halt now,fail=1" in t["message"]
    assert "(HALTED early by --halt)" in r.md and "| Halted | --halt now,fail=1" in r.md
    assert wait_gone(r.job_pids(), 10) == []


def test_instances_pick_the_best_response_and_report_every_instance(tmp_path):
    s = suite_file(tmp_path / "i.json", "inst", [
        {"id": "fastest", "command": "true", "instances": {"count": 3, "criterion": "fastest", "variants": [
            {"label": "slow", "args": ["sh", "-c", "sleep 0.8; echo slow"]},
            {"label": "quick-but-failing", "args": ["sh", "-c", "echo oops; exit 1"]},
            {"label": "fast", "args": ["sh", "-c", "sleep 0.2; echo fast"]}]}},
        {"id": "patterns", "command": "true", "expected_patterns": ["alpha", "beta", "gamma"],
         "match": "any", "instances": {"count": 3, "criterion": "most_patterns", "variants": [
             {"args": ["echo", "alpha"]}, {"args": ["echo", "alpha beta gamma"]},
             {"args": ["echo", "alpha beta"]}]}},
        {"id": "nobody", "command": "true", "instances": {"count": 2, "criterion": "fastest", "variants": [
            {"args": ["sh", "-c", "exit 1"]}, {"args": ["sh", "-c", "exit 2"]}]}},
    ])
    proc = harness(str(s), out=tmp_path / "out")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # "nobody" fails
    r = Run.only(tmp_path / "out")
    fa = r.tests["fastest"]["attempts"][0]
    assert r.tests["fastest"]["status"] == "passed"
    assert fa["instance_selection"]["winner"] == 3 and fa["instance_selection"]["ranking"] == [3, 1]
    assert [(i["label"], i["exit_code"], i["eligible"], i["chosen"]) for i in fa["instances"]] == [
        ("slow", 0, True, False), ("quick-but-failing", 1, False, False), ("fast", 0, True, True)]
    durations = [i["duration"] for i in fa["instances"]]
    assert durations[1] < durations[2] < durations[0]
    assert all(set(i) >= {"duration", "stdout_bytes", "cost_usd", "exit_code"} for i in fa["instances"])
    assert (r.dir / fa["stdout_path"]).read_bytes() == b"fast\n"
    pa = r.tests["patterns"]["attempts"][0]
    assert r.tests["patterns"]["status"] == "passed" and pa["instance_selection"]["winner"] == 2
    assert [i["patterns_found"] for i in pa["instances"]] == [1, 3, 2]
    nb = r.tests["nobody"]
    assert nb["status"] == "failed" and nb["attempts"][0]["instance_selection"]["winner"] is None
    assert "no instance succeeded" in nb["message"]
    md = r.md
    assert "## Instances" in md and "### fastest: 3 instances, criterion fastest" in md
    assert "**Winner:** #3: #3 is the fastest of 2 that succeeded" in md
    assert "no: unexpected exit code (exit 1)" in md and "**Winner:** none: no instance succeeded" in md


# ---------------------------------------------------------------------------------------------
# History


def test_history_compares_runs_and_tracks_the_suite_ratio(tmp_path):
    flag = tmp_path / "flag"
    flag.write_text("present")
    s = suite_file(tmp_path / "hist.json", "hist", [
        {"id": "steady", "command": "echo ok", "timeout": 20},
        {"id": "breaks", "command": f"test -f {flag}", "timeout": 20},
    ])
    out = tmp_path / "out"
    first = harness(str(s), out=out)
    assert first.returncode == 0, first.stdout + first.stderr
    run1 = Run.only(out)
    assert run1.json["history"]["comparisons"] == []
    assert "No earlier finished run of these suites" in run1.md
    flag.unlink()
    second = harness(str(s), "--baseline", run1.json["run_id"], "--learned-timeouts", "500%",
                     "--learned-floor", "1", out=out)
    assert second.returncode == 1, second.stdout + second.stderr
    run2 = Run(next(d for d in out.iterdir() if d.is_dir() and d != run1.dir))
    h = run2.json["history"]
    assert h["recorded"] and h["path"] == str(out / "history.sqlite3")
    (c,) = h["comparisons"]  # the previous run is also the chosen baseline: compared once
    assert c["against"] == "previous and baseline" and c["baseline_id"] == run1.json["run_id"]
    assert c["new_failures"] == ["hist/breaks"] and c["fixed"] == [] and c["regressed"]
    ratios = {r["suite"]: r for r in h["suite_ratios"]}
    assert (ratios["hist"]["passes"], ratios["hist"]["failures"], ratios["hist"]["text"]) == (3, 1, "3:1")
    assert ratios["hist"]["graduated"] is False
    assert "**New failures (1):** `hist/breaks`" in run2.md
    assert "| hist | 3 | 1 | 3:1 | no |" in run2.md
    # Learned timeout: 500% of a ~10 ms median is below the 1 s floor, so 1 s (configured 20 s).
    lt = run2.tests["steady"]["learned_timeout"]
    assert lt["median"] == pytest.approx(run1.tests["steady"]["attempts"][0]["duration"], abs=1e-3)
    assert lt["learned"] == pytest.approx(max(1.0, lt["median"] * 5), abs=1e-3)
    assert lt["configured"] == 20 and lt["percent"] == 500 and not lt["capped"]
    a = run2.tests["steady"]["attempts"][0]
    assert a["timeout"] == pytest.approx(lt["learned"] * a["factor"], rel=1e-3)
    assert "learned: 500% of median" in run2.md and "configured 20 s" in run2.md
    wide = {**os.environ, "COLUMNS": "300"}  # rich tables: no wrapped run ids
    listing = subprocess.run([PY, "-m", "stress.history", "--db", str(out / "history.sqlite3"), "list"],
                             cwd=REPO, capture_output=True, text=True, timeout=30, env=wide)
    assert listing.returncode == 0, listing.stderr
    for rid in (run1.json["run_id"], run2.json["run_id"]):
        assert rid in listing.stdout
    shown = subprocess.run([PY, "-m", "stress.history", "--db", str(out / "history.sqlite3"),
                            "show", run2.json["run_id"]],
                           cwd=REPO, capture_output=True, text=True, timeout=30, env=wide)
    assert shown.returncode == 0 and "new failures (1): hist/breaks" in shown.stdout, shown.stdout


def test_no_history_records_nothing(tmp_path):
    s = suite_file(tmp_path / "n.json", "nohist", [{"id": "t", "command": "echo x"}])
    proc = harness(str(s), "--no-history", out=tmp_path / "out")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = Run.only(tmp_path / "out")
    assert r.json["history"] is None and "## History" not in r.md
    assert not (tmp_path / "out" / "history.sqlite3").exists()
    assert r.json["servers"]["mode"] == "single" and r.json["servers"]["servers"][0]["tests_run"] == 1


def test_report_md_lists_lost_tests_and_flaky_passes_from_the_history(tmp_path):
    """A run whose only change is a test that stopped running is not "no changes" in report.md;
    a flaky pass is listed apart from failures (and both reach junit.xml)."""
    flag = tmp_path / "fail-once"

    def write(gone_requires: list[str]) -> Path:
        return suite_file(tmp_path / "lf.json", "lostflaky", [
            {"id": "steady", "command": "echo ok"},
            {"id": "gone", "command": "echo here", "requires": gone_requires},
            {"id": "wobbly", "command": f"if [ -f {flag} ]; then rm {flag}; exit 1; fi; echo ok",
             "pass_threshold": {"passes": 2, "of": 3}},
        ])

    out = tmp_path / "out"
    opts = ("--repeat", "3", "--duration-min", "30")  # no duration changes on a busy host
    runs: list[Run] = []

    def run(*args: str, rc: int) -> Run:
        proc = harness(*args, *opts, out=out)
        assert proc.returncode == rc, proc.stdout + proc.stderr
        seen = {r.dir for r in runs}
        (folder,) = [d for d in out.iterdir() if d.is_dir() and d not in seen]
        runs.append(Run(folder))
        return runs[-1]

    first = run(str(write([])), rc=0)
    # 2: "gone" is skipped now (a requirement nobody provides): its only change.
    second = run(str(write(["gpu"])), rc=0)
    (c,) = second.json["history"]["comparisons"]
    assert c["baseline_id"] == first.json["run_id"] and c["regressed"]
    assert c["lost"] == ["lostflaky/gone"] and c["flaky"] == [] and c["new_failures"] == []
    assert c["lost_detail"] == [{"test": "lostflaky/gone", "now": "skipped", "passed_before": True}]
    md = second.md
    assert "- **Lost or not run (1):** `lostflaky/gone` (skipped; passed before)" in md, md
    assert "no changes in outcomes or durations" not in md
    junit = (second.dir / "junit.xml").read_text()
    assert (f'<property name="history_lost" value="gone (against the previous run '
            f'{first.json["run_id"]})" />') in junit, junit
    # 3: every test runs again; wobbly fails its first attempt and passes 2 of 3 (its threshold).
    flag.write_text("x")
    third = run(str(write([])), rc=0)
    assert not flag.exists()
    (c,) = third.json["history"]["comparisons"]
    assert c["baseline_id"] == first.json["run_id"]  # the run that ran every test, not the second
    assert c["flaky"] == ["lostflaky/wobbly"] and c["lost"] == [] and c["new_failures"] == []
    assert c["flaky_detail"] == [{"test": "lostflaky/wobbly", "passes": 2, "runs": 3, "required": 2}]
    md = third.md
    assert "- **Flaky, passed their threshold (1):** `lostflaky/wobbly` (2/3 passed, needed 2)" in md, md
    assert "New failures" not in md and "no changes in outcomes or durations" not in md
    assert '<property name="history_flaky" value="wobbly' in (third.dir / "junit.xml").read_text()
    # And a run with nothing new still says so.
    fourth = run(str(write([])), rc=0)
    assert "- no changes in outcomes or durations" in fourth.md, fourth.md
