"""Load runs end to end: `python -m stress.local` as a subprocess with --stages, --arrival-rate,
--threshold (and :abort) and --find-capacity, starting the real service and running real
commands (`sleep`, a shell line), asserted on the reports they write.

In flight is measured from report.json as a test's [execute request, completion] interval
(`attempts[].started_at` and `wall`, each instance's for instances tests) on the profile's clock
(`profile.started_at`). The bounds are the ones docs/harness.md promises, kept wide: a test
starts only when the target in force allows it (checked against the highest target of the
second before its request), the peak is never exceeded, a plateau stays near its target; timing
figures themselves are never asserted. Each run is a few seconds of profile.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from conftest import REPO, wait_until
from test_harness import PY, SCHEMA, Report, schema_errors, write_suite

LOAD_TIMEOUT = 60


def run(tmp_path: Path, suite: Path, *args: str) -> tuple[subprocess.CompletedProcess, Report]:
    """The harness on `suite`; its service runs every job at once (CC_EXECUTOR_THROTTLE=0: the
    service's own admission, which other work on this host can trigger, is not under test here)."""
    out = tmp_path / "out"
    proc = subprocess.run([PY, "-m", "stress.local", str(suite), "--no-history", *args,
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=LOAD_TIMEOUT, stdin=subprocess.DEVNULL,
                          env={**os.environ, "CC_EXECUTOR_THROTTLE": "0"})
    assert "Traceback" not in proc.stderr, proc.stderr
    r = Report(out)
    assert schema_errors(r.json, SCHEMA) == []
    return proc, r


def intervals(r: Report) -> list[tuple[float, float]]:
    """Every job's [request, completion] on the profile's clock (instances one each)."""
    t0 = r.json["profile"]["started_at"]
    spans = []
    for t in r.json["tests"]:
        for a in t["attempts"]:
            jobs = a["instances"] or [a]
            spans += [(j["started_at"] - t0, j["started_at"] - t0 + j["wall"]) for j in jobs
                      if j["started_at"] is not None and a["status"] != "skipped"]
    return sorted(spans)


def in_flight(spans: list[tuple[float, float]], t: float) -> int:
    return sum(1 for s, e in spans if s <= t < e)


def stages_target(stages: list[dict], t: float) -> int:
    """The profile's promise, written out again here (0 before the first stage's ramp)."""
    start, t0 = 0, 0.0
    for st in stages:
        d, b = st["duration"], st["target"]
        if t < t0 + d:
            steps = int(abs(b - start) * (t - t0) / d + 1e-9) if d else abs(b - start)
            return start + (steps if b >= start else -steps)
        start, t0 = b, t0 + d
    return 0


def test_stages_keep_the_promised_number_in_flight_and_a_crossed_threshold_exits_99(tmp_path):
    suite = write_suite(tmp_path / "s.json", {"name": "ramp", "defaults": {"timeout": 20}, "tests": [
        {"id": "sleepy", "command": "sleep 0.3"},
        {"id": "pair", "args": ["sleep", "0.3"], "instances": {"count": 2, "criterion": "fastest"}},
    ]})
    proc, r = run(tmp_path, suite, "--stages", "1s:4,2s:4,1s:0",
                  "--threshold", "error_rate<1%", "--threshold", "p95_duration<10ms")
    assert proc.returncode == 99, proc.stderr
    p = r.json["profile"]
    assert p["kind"] == "stages" and p["peak"] == 4 and p["starts"] >= 6
    spans = intervals(r)
    assert len(spans) >= 8
    for s, _ in spans:  # never more in flight than the target in force when it was started
        allowed = max(stages_target(p["stages"], s - k / 20) for k in range(21))
        assert in_flight(spans, s) <= allowed, (s, spans)
        assert s < p["duration"] + 1.0  # nothing starts after the profile ended
    assert max(in_flight(spans, s) for s, _ in spans) <= 4
    plateau = [in_flight(spans, 1.3 + k / 100) for k in range(170)]
    assert sum(plateau) / len(plateau) >= 0.6 * 4, plateau
    assert r.tests["pair"]["attempts"][0]["instances"][0]["started_at"] is not None
    # the crossed threshold comes first: report.json, report.md (under the title), terminal
    th = r.json["thresholds"]
    assert [t["expr"] for t in th] == ["p95_duration<10ms", "error_rate<1%"]
    assert [t["passed"] for t in th] == [False, True] and th[0]["observed"] > 0.01
    suites = r.junit.findall("testsuite")  # junit.xml: the thresholds first, as k6 lists them
    assert suites[0].get("name") == "thresholds" and suites[0].get("failures") == "1"
    head = r.md.split("## Summary")[0]
    assert "**Threshold crossed:** `p95_duration<10ms`" in head
    assert "| Result | **THRESHOLD CROSSED** |" in r.md and "## Load" in r.md
    lines = proc.stdout.splitlines()
    crossed = next(i for i, x in enumerate(lines) if "THRESHOLD CROSSED: p95_duration<10ms" in x)
    assert crossed < next(i for i, x in enumerate(lines) if "tests:" in x and "passed" in x)


def test_arrival_rate_starts_on_schedule_and_counts_dropped_starts(tmp_path):
    suite = write_suite(tmp_path / "a.json", {"name": "open", "defaults": {"timeout": 20},
                                              "tests": [{"id": "hold", "command": "echo go; sleep 0.6"}]})
    proc, r = run(tmp_path, suite, "--arrival-rate", "5/s", "--duration", "2s",
                  "--max-in-flight", "2", "--threshold", "p95_first_output<10s")
    assert proc.returncode == 0, proc.stderr
    p = r.json["profile"]
    assert p["planned_starts"] == 10 and p["kind"] == "arrival_rate"
    spans = intervals(r)
    assert len(spans) == p["starts"] and p["starts"] + p["dropped_starts"] == 10
    assert p["dropped_starts"] >= 2 and p["dropped_by_test"] == {"hold": p["dropped_starts"]}
    assert max(in_flight(spans, s) for s, _ in spans) <= 2
    assert spans[0][0] < 0.5 and all(s < 2.0 + 1.0 for s, _ in spans)
    assert r.json["thresholds"][0]["passed"] and r.json["thresholds"][0]["observed"] is not None
    assert "starts dropped" in r.md and "dropped (max in flight reached)" in proc.stdout


def test_an_abort_threshold_stops_the_run_early(tmp_path):
    suite = write_suite(tmp_path / "b.json", {"name": "abort", "defaults": {"timeout": 20},
                                              "tests": [{"id": "nap", "command": "sleep 0.3"}]})
    t0 = time.monotonic()
    proc, r = run(tmp_path, suite, "--stages", "0s:2,30s:2",
                  "--threshold", "error_rate<1%", "--threshold", "max_duration<10ms:abort")
    assert proc.returncode == 99, proc.stderr
    assert time.monotonic() - t0 < 25 and r.json["duration"] < 20  # not the profile's 30 s
    first = r.json["thresholds"][0]
    assert first["expr"] == "max_duration<10ms:abort" and first["aborted"] and not first["passed"]
    assert r.json["profile"]["ended_early"].startswith("threshold max_duration<10ms:abort crossed")
    assert r.json["totals"]["failed"] == 0 and r.json["halted"] is None
    cut = [a for a in r.tests["nap"]["attempts"] if a["status"] == "skipped"]
    # Cut by the threshold: cancelled in flight, or never started ("not run") when the
    # crossing came between a stage's starts; never failed.
    assert all(a["reason"] in ("cancelled", "skipped") and "threshold max_duration<10ms:abort "
               "crossed" in a["message"] for a in cut), [(a["reason"], a["message"]) for a in cut]
    assert "(ABORTED: a threshold was crossed)" in r.md.splitlines()[0]


def test_a_failing_test_with_a_crossed_threshold_exits_99_not_1(tmp_path):
    suite = write_suite(tmp_path / "f.json", {"name": "mixed", "defaults": {"timeout": 20}, "tests": [
        {"id": "ok", "command": "echo ok"}, {"id": "bad", "command": "exit 3"}]})
    proc, r = run(tmp_path, suite, "--concurrency", "2", "--threshold", "error_rate<10%")
    assert proc.returncode == 99, proc.stderr
    assert r.json["profile"]["kind"] == "concurrency"
    assert r.json["thresholds"][0]["observed"] == 0.5 and r.tests["bad"]["status"] == "failed"


def test_find_capacity_ends_with_a_step_table_and_a_named_limit(tmp_path):
    """A fixed-latency command that fails when more than two run at once: the search must hold
    at 1 and 2 in flight and stop at 3, limited by errors."""
    slots = tmp_path / "slots"
    slots.mkdir()
    gate = (f"d={slots}; touch $d/$$; n=$(ls $d | wc -l); sleep 0.2; rm -f $d/$$; "
            "echo n=$n; test $n -le 2")
    suite = write_suite(tmp_path / "c.json", {"name": "cap", "defaults": {"timeout": 20},
                                              "tests": [{"id": "gate", "command": gate}]})
    proc, r = run(tmp_path, suite, "--find-capacity", "--step", "1", "--step-duration", "1s",
                  "--max-steps", "4", "--threshold", "error_rate<1%")
    assert proc.returncode == 0, proc.stderr
    c = r.json["capacity"]
    assert (c["max_sustainable_concurrency"], c["limited_by"]) == (2, "errors"), c["reason"]
    assert [s["concurrency"] for s in c["steps"]] == [1, 2, 3]
    assert [s["held"] for s in c["steps"]] == [True, True, False]
    assert c["steps"][-1]["crossed"] == ["error_rate<1%"] and c["steps"][-1]["error_rate"] > 0.01
    assert all(s["p95_duration"] is not None and s["attempts"] >= 1 for s in c["steps"])
    assert "**Capacity:** this host sustains **2** tests in flight" in r.md.split("## Summary")[0]
    assert "### Capacity" in r.md and "| 3 | 3 |" in r.md
    assert "capacity: sustains 2 tests in flight; limited by errors" in proc.stdout
    assert r.json["thresholds"] == [] and r.json["profile"]["kind"] == "find_capacity"
    first = r.junit.findall("testsuite")[0]  # CI sees the search's answer, passed
    assert first.get("name") == "thresholds" and first.get("failures") == "0"
    assert "sustainable concurrency 2" in first.find("testcase/system-out").text


def test_sigint_during_a_profile_writes_a_partial_report(tmp_path):
    suite = write_suite(tmp_path / "i.json", {"name": "int", "defaults": {"timeout": 20},
                                              "tests": [{"id": "nap", "command": "echo z; sleep 5"}]})
    out = tmp_path / "out"
    with open(tmp_path / "stdout", "wb") as so, open(tmp_path / "stderr", "wb") as se:
        proc = subprocess.Popen([PY, "-m", "stress.local", str(suite), "--out", str(out),
                                 "--no-history", "--stages", "0s:2,60s:2"],
                                cwd=REPO, stdout=so, stderr=se, stdin=subprocess.DEVNULL,
                                env={**os.environ, "CC_EXECUTOR_THROTTLE": "0"})
        try:
            assert wait_until(lambda: len([f for f in out.glob("*/outputs/*.stdout")
                                           if f.read_bytes()]) >= 2, timeout=30), "never started"
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 130
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    r = Report(out)
    assert r.json["interrupted"] and r.json["profile"]["starts"] == 2
    assert all(a["status"] == "skipped" for a in r.tests["nap"]["attempts"])
