"""The run history (`stress.history`): a real SQLite file per test, real writer processes."""

from __future__ import annotations

import io
import math
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from stress.history import (History, HistoryError, HistoryKey, make_ratio)
from stress.history.cli import main as history_main
from stress.report.results import Attempt, Outcome

T0 = 1_800_000_000.0


def add_run(h: History, run_id: str, at: float, results: dict[str, list], *, suites=("local",),
            finished: bool = True, required: dict[str, int] | None = None, **run_fields) -> None:
    """results: test_id -> list of (passed, duration) per attempt; required: test_id -> passes
    its threshold needed (unset: every attempt)."""
    h.record_run(run_id, started=at, suites=suites, **run_fields)
    rows = []
    for test_id, attempts in results.items():
        for n, (passed, duration) in enumerate(attempts, 1):
            reason = "passed" if passed else "exit_code" if passed is False else "lost"
            rows.append(dict(suite=suites[0], test_id=test_id, attempt=n, passed=passed,
                             duration=duration, reason=reason,
                             required=(required or {}).get(test_id)))
    h.record_results(run_id, rows)
    if finished:
        h.finish_run(run_id, ended=at + 60, exit_code=0)


@pytest.fixture
def hist(tmp_path):
    with History(tmp_path / "history.sqlite3") as h:
        yield h


def test_a_run_and_its_results_read_back(hist):
    hist.record_run("r1", started=T0, suites=["local", "b"], host="box", cores=2, load_start=0.5,
                    model_mode="mock", versions={"cc_executor": "0.1.0"}, argv=["--repeat", "2"])
    hist.record_result("r1", suite="local", test_id="echo", attempt=1, passed=True, duration=0.25,
                       server="ws://a/ws", output_bytes=12, cost_usd=0.001, tokens=30, load1=0.7,
                       timeout_used=20.0, reason="passed")
    hist.record_result("r1", suite="b", test_id="x", passed=None, reason="skipped")
    hist.record_run("r1", started=T0, suites=["b", "local"], load_end=1.5)  # update keeps the rest
    hist.finish_run("r1", ended=T0 + 3, exit_code=1)
    run = hist.run("r1")
    assert (run.suites, run.host, run.cores, run.load_start, run.load_end) == (["b", "local"], "box", 2, 0.5, 1.5)
    assert run.versions == {"cc_executor": "0.1.0"} and run.argv == ["--repeat", "2"]
    assert (run.duration, run.exit_code, run.attempts, run.passed, run.failed) == (3, 1, 1, 1, 0)
    rows = hist.results("r1")
    assert [(r.suite, r.test_id, r.passed) for r in rows] == [("b", "x", None), ("local", "echo", True)]
    echo = rows[1]
    assert (echo.server, echo.output_bytes, echo.cost_usd, echo.tokens, echo.load1, echo.timeout_used) == \
        ("ws://a/ws", 12, 0.001, 30, 0.7, 20.0)
    assert [r.run_id for r in hist.runs()] == ["r1"]


def test_bad_input_is_refused_by_name(hist):
    with pytest.raises(HistoryError, match="record_run\\('nope'"):
        hist.record_result("nope", suite="s", test_id="t", passed=True)
    hist.record_run("r", started=T0, suites=["s"])
    with pytest.raises(ValueError, match="passed must be True, False or None"):
        hist.record_result("r", suite="s", test_id="t", passed="yes")
    with pytest.raises(ValueError, match="unknown result fields \\['colour'\\]"):
        hist.record_results("r", [dict(suite="s", test_id="t", passed=True, colour=1)])
    with pytest.raises(ValueError, match="at least one suite"):
        hist.record_run("r2", started=T0, suites=[])
    with pytest.raises(HistoryError, match="no run 'zz'"):
        hist.run("zz")


def test_outcomes_from_the_harness_are_recorded_one_row_per_attempt(hist):
    o = Outcome(suite="local", id="t1", name="t1", tags=[], source="x.json", kind="command",
                invocation="echo", requires=[], timeout=20.0, stall_timeout=None, repeat=2)
    o.attempts = [
        Attempt(attempt=1, status="passed", reason="passed", message="", end_reason="exited",
                duration=1.5, stdout_bytes=10, stderr_bytes=2, load1=0.3, timeout=20.0,
                claude={"total_cost_usd": 0.02, "usage": {"input_tokens": 5, "output_tokens": 7}}),
        Attempt(attempt=2, status="skipped", reason="skipped", message="", end_reason="skipped"),
    ]
    o.passes, o.runs, o.required = 1, 1, 1
    # Three instances ran at once: the attempt cost what all three cost, not only the winner.
    inst = Outcome(suite="local", id="best", name="best", tags=[], source="x.json",
                   kind="prompt", invocation="claude", requires=[], timeout=20.0,
                   stall_timeout=None, repeat=1, passes=1, runs=1, required=1)
    inst.attempts = [Attempt(
        attempt=1, status="passed", reason="passed", message="", end_reason="exited",
        claude={"total_cost_usd": 0.01}, instances=[
            {"instance": 1, "cost_usd": 0.01, "chosen": True}, {"instance": 2, "cost_usd": 0.03},
            {"instance": 3, "cost_usd": None}])]
    hist.record_run("r", started=T0, suites=["local"])
    n = hist.record_outcomes("r", [o, inst], server_for=lambda suite, tid, a: f"srv{a}")
    assert n == 3
    a1, a2, best = sorted(hist.results("r"), key=lambda r: (r.test_id != "t1", r.attempt))
    assert (a1.passed, a1.duration, a1.output_bytes, a1.cost_usd, a1.tokens, a1.server) == \
        (True, 1.5, 12, 0.02, 12, "srv1")
    assert (a2.passed, a2.duration, a2.reason) == (None, None, "skipped")
    assert (a1.required, a2.required) == (1, 1)
    assert best.test_id == "best" and best.cost_usd == pytest.approx(0.04)


def test_compare_finds_new_failures_fixed_tests_and_duration_changes(hist):
    add_run(hist, "base", T0, {
        "steady": [(True, 1.0)], "breaks": [(True, 1.0)], "heals": [(False, 1.0)],
        "broken": [(False, 1.0)], "slows": [(True, 1.0)], "speeds": [(True, 4.0)],
        "tiny": [(True, 0.01)], "gone": [(True, 1.0)], "wobbles": [(True, 1.0), (True, 1.0)],
    })
    add_run(hist, "now", T0 + 100, {
        "steady": [(True, 1.1)], "breaks": [(False, 1.0)], "heals": [(True, 1.0)],
        "broken": [(False, 1.0)], "slows": [(True, 1.5)], "speeds": [(True, 2.0)],
        "tiny": [(True, 0.05)], "new": [(True, 1.0)], "wobbles": [(True, 1.0), (False, 1.0)],
    })
    c = hist.compare("now", "base")
    k = lambda t: HistoryKey("local", t)  # noqa: E731
    assert c.new_failures == [k("breaks"), k("wobbles")]
    assert c.fixed == [k("heals")] and c.still_failing == [k("broken")]
    assert c.added == [k("new")] and c.removed == [k("gone")]
    # +10% is under the 25% threshold; "tiny" is +400% but only 0.04 s, under the absolute floor.
    assert [(d.key, d.before, d.after) for d in c.slower] == [(k("slows"), 1.0, 1.5)]
    assert [d.key for d in c.faster] == [k("speeds")] and c.faster[0].relative == pytest.approx(-0.5)
    assert c.regressed
    text = "\n".join(c.lines())
    assert "new failures (2): local/breaks, local/wobbles [flaky (1/2 passed, needed 2)]" in text
    assert "slower: local/slows: 1 s -> 1.5 s (+0.5 s, +50%)" in text
    j = c.to_json()
    assert j["new_failures"] == ["local/breaks", "local/wobbles"] and j["slower"][0]["relative"] == 0.5
    # A tighter threshold and no floor see the small changes too.
    fine = hist.compare("now", "base", duration_threshold=0.05, min_seconds=0)
    assert {d.key.test_id for d in fine.slower} == {"slows", "steady", "tiny"}
    with pytest.raises(ValueError, match="duration_threshold must be > 0"):
        hist.compare("now", "base", duration_threshold=0)


def test_tests_that_stopped_running_are_a_lost_regression(hist):
    add_run(hist, "base", T0, {"a": [(True, 1.0)], "b": [(True, 1.0)], "c": [(False, 1.0)],
                               "d": [(True, 1.0)]})
    # A server died: b and c were lost, d skipped; a still passed.
    hist.record_run("now", started=T0 + 100, suites=["local"])
    hist.record_results("now", [
        dict(suite="local", test_id="a", passed=True, duration=1.0, reason="passed"),
        dict(suite="local", test_id="b", passed=None, reason="lost"),
        dict(suite="local", test_id="c", passed=None, reason="lost"),
        dict(suite="local", test_id="d", passed=None, reason="skipped")])
    hist.finish_run("now", ended=T0 + 160, exit_code=1)
    c = hist.compare("now", "base")
    k = lambda t: HistoryKey("local", t)  # noqa: E731
    assert c.lost == [k("b"), k("c"), k("d")] and c.new_failures == [] and c.regressed
    text = "\n".join(c.lines())
    assert ("lost or not run (3): local/b [lost; passed before], local/c [lost; failed before], "
            "local/d [skipped; passed before]") in text
    assert "no changes" not in text
    assert c.to_json()["lost"] == ["local/b", "local/c", "local/d"]
    assert c.to_json()["lost_detail"] == [  # what report.md shows next to each
        {"test": "local/b", "now": "lost", "passed_before": True},
        {"test": "local/c", "now": "lost", "passed_before": False},
        {"test": "local/d", "now": "skipped", "passed_before": True}]


def test_the_automatic_baseline_is_a_run_that_ran_the_tests(hist):
    add_run(hist, "full", T0, {f"t{i}": [(True, 1.0)] for i in range(5)})
    add_run(hist, "crippled", T0 + 10, {"t0": [(True, 1.0)], **{f"t{i}": [(None, None)] for i in range(1, 5)}})
    add_run(hist, "now", T0 + 20, {f"t{i}": [(True, 1.0)] for i in range(5)})
    # "crippled" is newer but ran one test of the five "now" ran: it would compare as no change.
    assert hist.baseline("now").run_id == "full"
    assert hist.previous_run(["local"], before="now").run_id == "crippled"
    # The crippled run itself is compared with the newest run before it: its losses show.
    assert hist.baseline("crippled").run_id == "full"
    assert len(hist.compare("crippled", "full").lost) == 4
    # A run that skipped a test in every run (say, no Claude) does not disqualify the newest.
    add_run(hist, "x1", T0 + 30, {"t0": [(True, 1.0)], "t1": [(None, None)]})
    add_run(hist, "x2", T0 + 40, {"t0": [(True, 1.0)], "t1": [(None, None)]})
    assert hist.baseline("x2").run_id == "x1"
    # Nothing complete within the window: the one that left out fewest, newest among equals.
    assert hist.baseline("now", window=1).run_id == "crippled"


def test_pass_thresholds_are_kept_and_flaky_passes_are_not_new_failures(hist, tmp_path):
    add_run(hist, "base", T0, {"thr": [(True, 1.0)] * 3, "strict": [(True, 1.0)] * 3,
                               "low": [(True, 1.0)] * 3},
            required={"thr": 2, "strict": 3, "low": 2})
    add_run(hist, "now", T0 + 100, {"thr": [(True, 1.0), (False, 1.0), (True, 1.0)],
                                    "strict": [(True, 1.0), (False, 1.0), (True, 1.0)],
                                    "low": [(False, 1.0), (False, 1.0), (True, 1.0)]},
            required={"thr": 2, "strict": 3, "low": 2})
    c = hist.compare("now", "base")
    k = lambda t: HistoryKey("local", t)  # noqa: E731
    assert c.new_failures == [k("low"), k("strict")]  # 1 of 3 (needed 2); 2 of 3 (needed 3)
    assert c.flaky == [k("thr")]  # passed its 2 of 3: not a failure, shown apart
    assert c.stability[k("thr")][1].required == 2 and c.stability[k("thr")][1].passed
    text = "\n".join(c.lines())
    assert "flaky, passed their threshold (1): local/thr [flaky (2/3 passed, needed 2)]" in text
    assert "new failures (2): local/low [flaky (1/3 passed, needed 2)], " \
           "local/strict [flaky (2/3 passed, needed 3)]" in text
    assert c.to_json()["flaky"] == ["local/thr"]
    assert c.to_json()["flaky_detail"] == [{"test": "local/thr", "passes": 2, "runs": 3, "required": 2}]
    assert [r.required for r in hist.results("now") if r.test_id == "thr"] == [2, 2, 2]
    with pytest.raises(ValueError, match="required must be a whole number"):
        hist.record_result("now", suite="local", test_id="x", passed=True, required=-1)


def test_a_schema_1_history_file_is_migrated_in_place(tmp_path):
    path = tmp_path / "old.sqlite3"

    class Version1(History):
        MIGRATIONS = History.MIGRATIONS[:1]

    with Version1(path) as h:  # what the code before `required` wrote
        assert h.schema_version == 1
        h.record_run("old", started=T0, suites=["local"])
        h._db.execute("INSERT INTO results (run_id, suite, test_id, attempt, passed, duration, "
                      "recorded) VALUES ('old', 'local', 't', 1, 1, 1.0, 0), "
                      "('old', 'local', 't', 2, 0, 1.0, 0)")
        h.finish_run("old", ended=T0 + 1)
    with History(path) as h:
        assert h.schema_version == 2
        assert [(r.passed, r.required) for r in h.results("old")] == [(True, None), (False, None)]
        add_run(h, "new", T0 + 10, {"t": [(True, 1.0), (False, 1.0)]}, required={"t": 1})
        c = h.compare("new", "old")  # old rows: every attempt had to pass, so it failed then
        assert c.fixed == [HistoryKey("local", "t")] and c.flaky == [HistoryKey("local", "t")]


def test_baseline_is_the_previous_finished_run_of_the_same_suites(hist):
    add_run(hist, "a1", T0, {"t": [(True, 1.0)]})
    add_run(hist, "other", T0 + 10, {"t": [(True, 1.0)]}, suites=("local", "extra"))
    add_run(hist, "a2", T0 + 20, {"t": [(True, 1.0)]})
    add_run(hist, "running", T0 + 30, {"t": [(True, 1.0)]}, finished=False)
    add_run(hist, "a3", T0 + 40, {"t": [(True, 1.0)]})
    assert hist.baseline("a3").run_id == "a2"  # "running" has not finished
    assert hist.baseline("a2").run_id == "a1"
    assert hist.baseline("a1") is None
    assert hist.previous_run(["local"]).run_id == "a3"
    assert hist.previous_run(["extra", "local"]).run_id == "other"
    assert hist.previous_run(["nothing"]) is None


def test_graduation_needs_ten_to_one_and_ten_passes():
    assert make_ratio(9, 0).graduated is False  # too little evidence
    assert make_ratio(10, 0) == (10, 0, math.inf, True)
    assert make_ratio(10, 1).graduated and make_ratio(23, 2).graduated  # seed 004's 11.5:1
    assert not make_ratio(19, 2).graduated  # 9.5:1
    assert make_ratio(0, 0) == (0, 0, 0.0, False)
    assert make_ratio(23, 2).text() == "23:2"


def test_suite_ratio_is_cumulative_over_runs_and_ignores_skipped(hist):
    for i in range(4):
        add_run(hist, f"r{i}", T0 + i, {f"t{j}": [(True, 1.0)] for j in range(3)})
    add_run(hist, "bad", T0 + 10, {"t0": [(False, 1.0)], "t1": [(None, None)]})
    add_run(hist, "o", T0 + 11, {"x": [(False, 1.0)]}, suites=("other",))
    passes, failures, ratio, graduated = hist.suite_ratio("local")
    assert (passes, failures, ratio, graduated) == (12, 1, 12.0, True)
    assert hist.suite_ratio("other") == (0, 1, 0.0, False)
    assert hist.suite_ratio(None)[:2] == (12, 2)
    assert hist.suite_ratio("absent") == (0, 0, 0.0, False)
    assert {s: runs for s, (_, runs) in hist.suite_ratios().items()} == {"local": 5, "other": 1}


def test_trend_and_medians_come_from_recent_passed_attempts(hist):
    durations = [1.0, 2.0, 3.0, 4.0, 50.0]
    for i, d in enumerate(durations):
        add_run(hist, f"r{i}", T0 + i, {"t": [(d < 10, d)], "u": [(True, 0.5)]})
    trend = hist.trend("t", limit=3)
    assert [r.run_id for r in trend] == ["r2", "r3", "r4"]  # the last three, oldest first
    assert [r.passed for r in trend] == [True, True, False]
    assert hist.median_durations(["t", "u", "never"]) == {"t": 2.5, "u": 0.5}  # 50 s failed
    assert hist.median_durations(["t"], window=2) == {"t": 3.5}
    assert hist.trend("t", suite="other") == []


def test_schema_is_versioned_and_migrations_run_once(tmp_path):
    path = tmp_path / "h.sqlite3"
    with History(path) as h:
        assert h.schema_version == len(History.MIGRATIONS) == 2
        add_run(h, "r", T0, {"t": [(True, 1.0)]})

    def add_notes(db):
        db.execute("ALTER TABLE runs ADD COLUMN notes TEXT")

    class Newer(History):
        MIGRATIONS = History.MIGRATIONS + (add_notes,)

    with Newer(path) as h:
        assert h.schema_version == 3 and h.run("r").passed == 1  # data kept
    with Newer(path) as h:  # already migrated: runs nothing again (would fail: duplicate column)
        assert h.schema_version == 3
    with pytest.raises(HistoryError, match="schema version 3, newer than this code knows \\(2\\)"):
        History(path)


def test_unusable_paths_are_refused_by_name(tmp_path):
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(HistoryError, match="cannot use .*junk.sqlite3 as a history database"):
        History(junk)
    with pytest.raises(HistoryError, match="is a directory"):
        History(tmp_path)
    with pytest.raises(HistoryError, match="no history database at"):
        History(tmp_path / "absent.sqlite3", create=False)
    assert not (tmp_path / "absent.sqlite3").exists()


def test_opening_waits_for_a_writer_holding_the_file_before_wal(tmp_path):
    """SQLite answers the WAL switch with "database is locked" at once, busy timeout or not, when
    another connection holds the write lock of a file still in rollback mode (the CI race)."""
    path = tmp_path / "h.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE unrelated(x)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO unrelated VALUES (1)")
    release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        started = time.monotonic()
        with History(path, busy_timeout_ms=10_000) as h:
            waited = time.monotonic() - started
            assert h.schema_version == len(History.MIGRATIONS)
            assert h._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert waited >= 0.25  # it waited for the holder instead of failing or skipping WAL
    finally:
        release.join()
        holder.close()


def test_opening_gives_up_on_a_lock_that_is_never_released(tmp_path):
    path = tmp_path / "h.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE unrelated(x)")
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        with pytest.raises(HistoryError, match="database is locked"):
            History(path, busy_timeout_ms=300)
        assert time.monotonic() - started < 5
    finally:
        holder.close()


WRITER = textwrap.dedent("""
    import sys, time
    from stress.history import History
    path, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    h = History(path, busy_timeout_ms=20000)
    h.record_run(name, started=time.time(), suites=["local"])
    for i in range(n):  # one transaction per result: the most lock traffic there can be
        h.record_result(name, suite="local", test_id=f"t{i}", passed=i % 7 != 0, duration=0.01 * i)
    h.finish_run(name, exit_code=0)
    print("ok", h.schema_version)
""")


def test_two_processes_write_the_same_file_at_once(tmp_path):
    path = tmp_path / "shared.sqlite3"  # neither process finds it: both race to create the schema
    n = 150
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"w{i}", str(n)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all(o[0].strip() == f"ok {len(History.MIGRATIONS)}" for o in outs)
    with History(path) as h:
        assert sorted(r.run_id for r in h.runs()) == ["w0", "w1"]
        assert all(r.attempts == n and r.ended is not None for r in h.runs())
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT count(*) FROM results").fetchone()[0] == 2 * n
    finally:
        db.close()


# ---- the command line -----------------------------------------------------------------------


def run_cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    rc = history_main(list(args), out=out)
    return rc, out.getvalue()


@pytest.fixture
def filled(tmp_path):
    path = tmp_path / "h.sqlite3"
    with History(path) as h:
        add_run(h, "run-a", T0, {"echo": [(True, 1.0)], "cat": [(True, 0.2)]},
                host="box", model_mode="mock")
        add_run(h, "run-b", T0 + 100, {"echo": [(False, 1.0)], "cat": [(True, 0.9)]})
    return str(path)


def test_cli_list_show_ratio_compare(filled, capsys):
    rc, out = run_cli("--db", filled, "list")
    assert rc == 0 and out.index("run-b") < out.index("run-a") and "mock" in out
    rc, out = run_cli("--db", filled, "show", "run-b")
    assert rc == 0 and "FAIL" in out and "exit_code" in out
    assert "new failures (1): local/echo" in out and "slower: local/cat" in out
    rc, out = run_cli("--db", filled, "ratio")
    assert rc == 0 and "local" in out and "3:1" in out and "no" in out
    rc, out = run_cli("--db", filled, "compare", "run-b")
    assert rc == 1 and "run-b against baseline run-a" in out
    rc, out = run_cli("--db", filled, "compare", "run-a", "--baseline", "run-b")
    assert rc == 0 and "fixed (1): local/echo" in out
    rc, out = run_cli("--db", filled, "compare", "run-a")
    assert rc == 2 and "give --baseline" in out
    rc, _ = run_cli("--db", filled, "show", "nope")
    assert rc == 2 and "no run 'nope'" in capsys.readouterr().err


def test_cli_compare_honours_thresholds_and_counts_lost_tests(tmp_path):
    path = tmp_path / "t.sqlite3"
    with History(path) as h:
        add_run(h, "r1", T0, {"thr": [(True, 1.0)] * 3, "gone": [(True, 1.0)]}, required={"thr": 2})
        add_run(h, "r2", T0 + 100, {"thr": [(True, 1.0), (False, 1.0), (True, 1.0)],
                                    "gone": [(True, 1.0)]}, required={"thr": 2})
        add_run(h, "r3", T0 + 200, {"thr": [(True, 1.0)] * 3, "gone": [(None, None)]},
                required={"thr": 2})
    rc, out = run_cli("--db", str(path), "compare", "r2")
    assert rc == 0, out  # a pass of its 2-of-3 threshold is no regression
    assert "flaky, passed their threshold (1): local/thr [flaky (2/3 passed, needed 2)]" in out
    assert "new failures" not in out and "needed 3" not in out
    rc, out = run_cli("--db", str(path), "compare", "r3")
    assert rc == 1 and "lost or not run (1): local/gone [lost; passed before]" in out, out
    rc, out = run_cli("--db", str(path), "show", "r2")
    assert rc == 0 and "needed" in out


def test_cli_as_a_module_prints_the_trend_and_refuses_a_missing_db(filled, tmp_path):
    r = subprocess.run([sys.executable, "-m", "stress.history", "--db", filled, "trend", "echo"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any("run-a" in ln and "pass" in ln and "1.000" in ln for ln in lines)
    assert any("run-b" in ln and "FAIL" in ln for ln in lines)
    assert "flaky: 1/2 passed (50%); median 1.000 s over 1 passes" in r.stdout
    missing = tmp_path / "missing.sqlite3"
    r = subprocess.run([sys.executable, "-m", "stress.history", "--db", str(missing), "list"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no history database at" in r.stderr and not missing.exists()
