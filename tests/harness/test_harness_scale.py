"""Scale and trust, end to end: several real services (weights, a server killed mid-run), repeats
and flakiness, --halt, concurrent instances with a best response, and the run history with its
comparisons. Every harness run is a real `python -m stress.local` subprocess with a bounded
timeout; the pure parts (instance selection, option parsing) are tested in-process first.

Timing: tests are sleeps of 0.2-1.5 s; the slowest harness run here takes ~8 s.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import REPO, wait_until
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


def test_server_options_parse_weights_concurrency_and_tokens():
    ns = cli.build_parser("p", "local", "").parse_args([
        "--server", "ws://127.0.0.1:1/ws@1", "--server", "ws://127.0.0.1:2/ws@3",
        "--server", "ws://u@10.0.0.1:3/ws@2:5", "--token", "T",
        "--server-token", "ws://127.0.0.1:2/ws=abc=",
        "--concurrency", "2"])
    specs = cli.server_specs(ns)
    assert [(s.url, s.weight, s.concurrency, s.token) for s in specs] == [
        ("ws://127.0.0.1:1/ws", 1.0, 2, "T"), ("ws://127.0.0.1:2/ws", 3.0, 6, "abc="),
        ("ws://u@10.0.0.1:3/ws", 2.0, 5, "T")]
    assert cli.split_server("ws://h:1/ws") == ("ws://h:1/ws", None, None)
    ns = cli.build_parser("p", "local", "").parse_args(["--servers", "3", "--weights", "1,2:1,4"])
    assert cli.local_weights(ns) == [(1.0, 1), (2.0, 1), (4.0, 4)]
    assert cli.redact_argv(["x", "--token", "s1", "--server-token", "ws://h/ws=s2",
                            "--token=s3", "--server-token=ws://h/ws=s4", "--out", "o"]) == [
        "x", "--token", "<token>", "--server-token", "ws://h/ws=<token>", "--token=<token>",
        "--server-token=ws://h/ws=<token>", "--out", "o"]


@pytest.mark.parametrize("args, message", [
    (["--weights", "1,2"], "--weights is only used with --servers N"),
    (["--servers", "2", "--weights", "1,2,3"], "--weights: 3 weights for --servers 2"),
    (["--servers", "2", "--weights", "1,0"], "--weights: bad weight '0'"),
    (["--servers", "2", "--server", "ws://h:1/ws"], "either --server (running services) or --servers N"),
    (["--server", "http://h/ws"], "--server must be a ws:// or wss:// URL"),
    (["--server", "ws://h:1/ws", "--server", "ws://h:1/ws@2"], "--server given twice: ws://h:1/ws"),
    (["--server", "ws://h:1/ws", "--server-token", "ws://other/ws=t"],
     "--server-token: 'ws://other/ws' is not one of the --server URLs"),
    (["--halt", "sometimes"], "--halt: bad halt rule 'sometimes'"),
    (["--retry-budget", "-1"], "argument --retry-budget: must be at least 0, got -1"),
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
# Several servers


def test_three_local_servers_share_the_work_by_weight(tmp_path):
    tests = [{"id": f"t{i:02d}", "command": f"sleep 0.2; echo out-{i}",
              "expected_patterns": [f"out-{i}"], "timeout": 30} for i in range(24)]
    s = suite_file(tmp_path / "w.json", "weights", tests)
    t0 = time.time()
    proc = harness(str(s), "--servers", "3", "--weights", "1,2,3", out=tmp_path / "out")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = Run.only(tmp_path / "out")
    sv = r.json["servers"]
    assert sv["mode"] == "dispatch"
    by_name = {x["name"]: x for x in sv["servers"]}
    counts = [by_name[f"server-{k}"]["tests_run"] for k in (1, 2, 3)]
    assert sum(counts) == 24
    # Throughput follows the weights (concurrency 1, 2, 3): about 4, 8, 12.
    assert counts[0] < counts[1] < counts[2], counts
    for c, w in zip(counts, (1, 2, 3)):
        assert abs(c / 24 - w / 6) <= 0.1, counts
    assert [by_name[f"server-{k}"]["concurrency"] for k in (1, 2, 3)] == [1, 2, 3]
    assert all(x["alive"] and x["busy"] > 0 for x in sv["servers"]) and sv["fairness_cv"] is not None
    for k, c in zip((1, 2, 3), counts):
        assert f"| server-{k} (ws://127.0.0.1:" in r.md and f"| **{c}** |" in r.md
    ran_on = {t["attempts"][0]["server"] for t in r.json["tests"]}
    assert ran_on == {"server-1", "server-2", "server-3"}
    services = r.json["service"]["servers"]
    assert [x["stop"]["how"] for x in services] == ["sigterm"] * 3, [x["stop"] for x in services]
    assert (r.dir / "logs" / "server-3" / "service.stdout").exists()
    assert wait_gone([x["pid"] for x in services] + r.job_pids(), 10) == []
    assert time.time() - t0 < 60


def _job_pids(server_pid: int) -> list[int]:
    try:
        return [c.pid for c in psutil.Process(server_pid).children(recursive=True)]
    except psutil.Error:
        return []


def marked_tests(marks: Path, prefix: str, n: int, seconds: float) -> list[dict]:
    """Tests that leave a side effect: "start" and "end" lines in marks/<id>."""
    marks.mkdir(exist_ok=True)
    return [{"id": f"{prefix}{i}", "expected_patterns": [f"done-{i}"], "timeout": 30,
             "command": f"echo start >> {marks}/{prefix}{i}; sleep {seconds}; "
                        f"echo end >> {marks}/{prefix}{i}; echo done-{i}"} for i in range(n)]


def side_effects(marks: Path, ids: list[str]) -> dict[str, list[str]]:
    return {i: (marks / i).read_text().split() if (marks / i).exists() else [] for i in ids}


def run_hitting_a_server(argv: list[str], victim, sig: int) -> tuple[subprocess.CompletedProcess, set[int]]:
    """Run the harness (`argv`) and send `sig` to the victim service (to it alone: its job trees
    live in their own sessions) once it runs a job. Returns the harness's outcome and the pids
    of the victim's jobs at that moment."""
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: _job_pids(victim.pid), 30, 0.02), "the victim never ran a job"
        doomed = _job_pids(victim.pid)
        victim.proc.send_signal(sig)
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err), doomed


def test_a_server_killed_mid_run_loses_nothing(tmp_path, executor_service):
    tokens = ["tok-one", "tok-two", "tok-three"]
    svcs = [executor_service("--token", t, allow=["sh"]) for t in tokens]
    victim = svcs[1]
    marks = tmp_path / "marks"
    tests = marked_tests(marks, "j", 9, 1.2)
    s = suite_file(tmp_path / "k.json", "kill", tests)
    argv = [PY, "-m", "stress.local", str(s), "--out", str(tmp_path / "out"), "--quiet",
            "--token", tokens[0], "--server-token", f"{svcs[1].url}={tokens[1]}",
            "--server-token", f"{svcs[2].url}={tokens[2]}"]
    for svc in svcs:
        argv += ["--server", f"{svc.url}@1"]
    # SIGKILL the victim while it runs a job: its job trees keep running, as after a real
    # crash. The harness must end the lost attempt's processes before its retry, or the side
    # effect happens twice.
    proc, doomed = run_hitting_a_server(argv, victim, signal.SIGKILL)
    victim.proc.wait(10)
    assert wait_gone(doomed, 10) == []
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = Run.only(tmp_path / "out")
    ids = [t["id"] for t in r.json["tests"]]
    assert sorted(ids) == sorted(f"j{i}" for i in range(9))  # each exactly once
    assert {t["status"] for t in r.json["tests"]} == {"passed"}
    sv = {x["name"]: x for x in r.json["servers"]["servers"]}
    lost = sv[victim.url]
    assert lost["alive"] is False and lost["lost_items"] >= 1 and lost["lost_reason"]
    assert r.json["servers"]["retries_used"] >= 1
    moved = [t for t in r.json["tests"] if len(t["attempts"][0]["tries"]) > 1]
    assert moved and all(t["attempts"][0]["tries"][0] == victim.url for t in moved)
    assert all(t["attempts"][0]["server"] != victim.url for t in moved)
    assert sum(x["tests_run"] for x in sv.values()) == 9
    effects = side_effects(marks, ids)
    assert all(e.count("end") == 1 for e in effects.values()), effects  # exactly once each
    assert any(effects[t["id"]] == ["start", "start", "end"] for t in moved), effects  # cut, rerun
    assert "LOST at" in r.md and "## Servers" in r.md
    for t in tokens[1:]:  # per-server tokens never reach the reports
        assert t not in r.md and t not in json.dumps(r.json)
    assert all(s.alive() for s in (svcs[0], svcs[2]))  # not ours to stop


@pytest.mark.parametrize("limit, why", [
    (("--retry-budget", "0"), "the run's retry budget of 0 is spent"),
    (("--retries", "0"), "retried 0 time(s), the per-test limit is 0"),
], ids=["retry-budget-0", "retries-0"])
def test_with_no_retries_left_a_test_on_a_killed_server_is_lost(tmp_path, executor_service, limit, why):
    svcs = [executor_service(allow=["sh"]) for _ in range(2)]
    victim = svcs[1]
    marks = tmp_path / "marks"
    ids = [f"b{i}" for i in range(6)]
    s = suite_file(tmp_path / "b.json", "budget", marked_tests(marks, "b", 6, 1.2))
    argv = [PY, "-m", "stress.local", str(s), "--out", str(tmp_path / "out"), "--quiet", *limit]
    for svc in svcs:
        argv += ["--server", svc.url]
    proc, doomed = run_hitting_a_server(argv, victim, signal.SIGKILL)
    victim.proc.wait(10)
    assert wait_gone(doomed, 10) == []
    assert proc.returncode == 1, proc.stdout + proc.stderr  # a lost test fails the run
    r = Run.only(tmp_path / "out")
    assert sorted(r.tests) == ids  # each reported exactly once
    lost = [t for t in r.json["tests"] if t["status"] == "lost"]
    assert len(lost) == 1, [(t["id"], t["status"], t["message"]) for t in r.json["tests"]]
    (a,) = lost[0]["attempts"]
    assert a["status"] == "lost" and a["tries"] == [victim.url] and why in a["message"], a
    assert all(t["status"] == "passed" for t in r.json["tests"] if t is not lost[0])
    assert r.json["servers"]["retries_used"] == 0
    assert r.json["options"]["retry_budget"] == (0 if limit[0] == "--retry-budget" else None)
    # Not retried: the lost test started once (on the victim) and its end never came.
    effects = side_effects(marks, ids)
    assert effects.pop(lost[0]["id"]) == ["start"], effects
    assert all(e == ["start", "end"] for e in effects.values()), effects
    assert "## Lost" in r.md and why in r.md
    if limit[0] == "--retry-budget":
        assert "retries used: 0 (run-wide budget 0)." in r.md
    assert svcs[0].alive()


def test_a_server_shut_down_mid_run_hands_its_tests_on(tmp_path, executor_service):
    svcs = [executor_service(allow=["sh"]) for _ in range(3)]
    victim = svcs[1]
    marks = tmp_path / "marks"
    s = suite_file(tmp_path / "t.json", "term", marked_tests(marks, "g", 9, 0.8))
    argv = [PY, "-m", "stress.local", str(s), "--out", str(tmp_path / "out"), "--quiet"]
    for svc in svcs:
        argv += ["--server", svc.url]
    # A graceful stop: the service ends its jobs (reason "shutdown") and refuses new ones
    # ("server is shutting down"), quickly, so it would fail and steal everything left.
    proc, _ = run_hitting_a_server(argv, victim, signal.SIGTERM)
    assert victim.proc.wait(20) == 0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = Run.only(tmp_path / "out")
    assert {t["status"] for t in r.json["tests"]} == {"passed"}
    sv = {x["name"]: x for x in r.json["servers"]["servers"]}
    lost = sv[victim.url]
    assert not lost["alive"] and lost["lost_items"] >= 1 and "shut down" in lost["lost_reason"]
    moved = [t for t in r.json["tests"] if len(t["attempts"][0]["tries"]) > 1]
    assert moved and all(t["attempts"][0]["server"] != victim.url for t in moved)
    effects = side_effects(marks, [f"g{i}" for i in range(9)])
    assert all(e.count("end") == 1 for e in effects.values()), effects


def test_a_server_that_cannot_run_the_plan_is_left_out_with_one_message(tmp_path, executor_service):
    good = [executor_service(allow=["sh"]) for _ in range(2)]
    bad = executor_service(allow=["echo"])  # misconfigured: every test needs sh
    s = suite_file(tmp_path / "m.json", "misconf", [
        {"id": f"m{i}", "command": f"sleep 0.2; echo ok-{i}", "expected_patterns": [f"ok-{i}"]}
        for i in range(6)])
    argv = [PY, "-m", "stress.local", str(s), "--out", str(tmp_path / "out"), "--max-load", "1000"]
    for svc in (*good, bad):
        argv += ["--server", svc.url]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    said = f"server {bad.url} left out: cannot run this plan: it does not allow sh (it allows "
    assert proc.stderr.count(said) == 1 and "which " in proc.stderr, proc.stderr
    r = Run.only(tmp_path / "out")
    assert {t["status"] for t in r.json["tests"]} == {"passed"}
    entry = next(x for x in r.json["service"]["servers"] if x["name"] == bad.url)
    assert entry["error"].startswith("cannot run this plan: it does not allow sh")
    assert bad.url not in {x["name"] for x in r.json["servers"]["servers"]}
    assert bad.health()["jobs"] == {"running": 0, "queued": 0}


def test_a_server_that_refuses_the_token_is_left_out_unless_none_accepts(tmp_path, executor_service):
    good = executor_service("--token", "tok-good", allow=["sh"])
    other = executor_service("--token", "tok-other", allow=["sh"])
    s = suite_file(tmp_path / "tok.json", "tok", [
        {"id": f"k{i}", "command": f"echo ok-{i}", "expected_patterns": [f"ok-{i}"]} for i in range(4)])

    def run(token: str, out: Path) -> subprocess.CompletedProcess:
        argv = [PY, "-m", "stress.local", str(s), "--out", str(out), "--max-load", "1000",
                "--token", token, "--server", good.url, "--server", other.url]
        return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                              stdin=subprocess.DEVNULL)

    # --token fits one of the two: the other is left out with one message, the run goes on.
    proc = run("tok-good", tmp_path / "out")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    said = (f"stress.local: server {other.url} left out: refused the token (HTTP 401); give it the "
            f"token its service was started with: --server-token {other.url}=T")
    assert proc.stderr.count(said) == 1 and proc.stderr.count("HTTP 401") == 1, proc.stderr
    assert "preflight failed" not in proc.stderr
    r = Run.only(tmp_path / "out")
    assert {t["status"] for t in r.json["tests"]} == {"passed"}
    assert {a["server"] for t in r.json["tests"] for a in t["attempts"]} == {good.url}
    entry = next(x for x in r.json["service"]["servers"] if x["name"] == other.url)
    assert entry["error"].startswith("refused the token (HTTP 401)")
    assert [x["name"] for x in r.json["servers"]["servers"]] == [good.url]
    assert "tok-good" not in r.md and "tok-good" not in json.dumps(r.json)
    assert other.health()["jobs"] == {"running": 0, "queued": 0}
    # Neither accepts: one preflight message naming both, exit 3, no test run, nobody "left out".
    bad = run("tok-wrong", tmp_path / "out2")
    assert bad.returncode == 3, bad.stdout + bad.stderr
    assert bad.stderr.count("preflight failed") == 1 and "left out" not in bad.stderr, bad.stderr
    for svc in (good, other):
        assert f"the service at {svc.url} refused the token (HTTP 401)" in bad.stderr
    assert "exit status 3" in bad.stderr
    r2 = Run.only(tmp_path / "out2")
    assert r2.json["exit_code"] == 3 and r2.json["error"].startswith("preflight: the service at ")
    assert all(t["status"] == "skipped" for t in r2.json["tests"]) and len(r2.json["tests"]) == 4
    assert not any(a["started_at"] for t in r2.json["tests"] for a in t["attempts"])
    assert all(x["error"] is None for x in r2.json["service"]["servers"])
    assert good.alive() and other.alive()  # not ours to stop


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


@pytest.mark.parametrize("servers", [[], ["--servers", "2"]], ids=["one-service", "two-services"])
def test_halt_now_cancels_running_tests_and_starts_no_more(tmp_path, servers):
    # boom has the longest timeout, so several servers also start it first (longest expected first).
    s = suite_file(tmp_path / "h.json", "halt", [
        {"id": "boom", "command": "sleep 0.3; exit 3", "timeout": 60},
        *({"id": f"slow{i}", "command": "sleep 20", "timeout": 30} for i in range(4)),
    ])
    t0 = time.monotonic()
    proc = harness(str(s), "--concurrency", "2", "--halt", "now,fail=1", *servers, out=tmp_path / "out")
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
