"""The pure parts of load runs, without a service: profiles (stress.run.profile), thresholds
(stress.run.thresholds), what a window measures (stress.run.metrics), the capacity policy
(stress.run.capacity), the exit status (stress.exits), the /health reading
(stress.service.sampling.read_health) and the load options' refusals (stress.load_cli, through
`stress.cli.main`, which refuses before anything starts).
"""

from __future__ import annotations

import math
import statistics

import pytest
from conftest import REPO
from hypothesis import example, given, settings
from hypothesis import strategies as st
from stress.cli import main
from stress.exits import EarlyStop, exit_status
from stress.report.results import Attempt, Capacity, ThresholdResult, Totals
from stress.run import capacity as cap
from stress.run.metrics import (
    Observation,
    Sample,
    Window,
    measure,
    observe,
    percentile,
    summary,
)
from stress.run.profile import (
    ArrivalRate,
    ProfileError,
    Stage,
    Stages,
    parse_rate,
    parse_stages,
)
from stress.run.thresholds import ThresholdError, judge, parse_threshold
from stress.run.units import OptionError, fmt_duration, parse_duration
from stress.service.sampling import read_health

SUITE = str(REPO / "configs" / "smoke.json")


# --- durations, stages, rates ------------------------------------------------------------------


@pytest.mark.parametrize("text,seconds", [
    ("500ms", 0.5), ("30s", 30), ("2m", 120), ("1h", 3600), ("1m30s", 90), ("1.5s", 1.5),
    ("0s", 0), (" 10S ", 10)])
def test_durations_take_a_unit(text, seconds):
    assert parse_duration(text, "--x") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["60", "1.5", "", "30x", "s", "1m30", "-1s", "25h"])
def test_a_duration_without_a_unit_or_out_of_range_names_the_token(text):
    with pytest.raises(OptionError) as e:
        parse_duration(text, "--duration")
    assert str(e.value).startswith("--duration: ") and repr(text) in str(e.value)


@given(st.integers(min_value=1, max_value=86_400_000))
def test_fmt_duration_reads_back(ms):
    assert parse_duration(fmt_duration(ms / 1000), "--x") == pytest.approx(ms / 1000)


def test_stages_ramp_linearly_one_step_at_a_time():
    s = parse_stages("8s:8,4s:8,2s:0")
    assert (s.duration, s.peak) == (14, 8)
    assert [s.target(t) for t in (0, 0.99, 1, 4.5, 8, 11.9)] == [0, 0, 1, 4, 8, 8]
    assert [s.target(t) for t in (12, 12.24, 12.25, 13.99, 14, 99)] == [8, 8, 7, 1, 0, 0]
    assert parse_stages("0s:3,1s:3").target(0) == 3  # a 0 s stage jumps at once


stage_lists = st.lists(st.tuples(st.integers(0, 40), st.integers(0, 12)), min_size=1, max_size=6)


@settings(max_examples=150, deadline=None)
@given(stage_lists, st.floats(0, 1))
@example([(1, 1), (0, 0), (1, 0)], 0.0)  # a ramp's step undone by a 0 s jump at the same moment
def test_next_change_is_where_the_target_changes(spec, frac):
    stages = Stages(tuple(Stage(d / 4, n) for d, n in spec))
    if stages.duration == 0:
        return
    t = frac * stages.duration
    nxt = stages.next_change(t)
    if nxt is None:
        assert all(stages.target(t + k * 0.05) == stages.target(t) for k in range(20)
                   if t + k * 0.05 < stages.duration)
        return
    assert nxt > t
    # constant until then, different at it
    for k in range(1, 10):
        x = t + (nxt - t) * k / 10
        if x < nxt - 1e-6:
            assert stages.target(x) == stages.target(t)
    assert stages.target(nxt) != stages.target(t) or nxt == stages.duration


@settings(max_examples=150, deadline=None)
@given(stage_lists, st.floats(0, 1))
def test_a_target_lies_between_the_stage_ends(spec, frac):
    stages = Stages(tuple(Stage(d / 4, n) for d, n in spec))
    if stages.duration == 0:
        return
    t = frac * stages.duration * 0.999
    start, elapsed = 0, 0.0
    for st_ in stages.stages:
        if t < elapsed + st_.duration:
            lo, hi = sorted((start, st_.target))
            assert lo <= stages.target(t) <= hi
            return
        start, elapsed = st_.target, elapsed + st_.duration


@pytest.mark.parametrize("text,needle", [
    ("30s", "bad stage '30s'"), ("30x:8", "'30x'"), ("30s:8,,1s:1", "bad stage ''"),
    ("30s:x", "'x'"), ("30s:0,10s:0", "never has a test in flight"), ("0s:4", "lasts 0 s"),
    ("30s:5000", "'5000'")])
def test_malformed_stages_name_the_token(text, needle):
    with pytest.raises(ProfileError, match="^--stages: ") as e:
        parse_stages(text)
    assert needle in str(e.value)


@pytest.mark.parametrize("text,per_second", [
    ("2/s", 2), ("120/m", 2), ("3600/h", 1), ("3/10s", 0.3), ("1/500ms", 2), ("1/minute", 1 / 60)])
def test_rates(text, per_second):
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["2", "2/x", "/s", "a/s", "0/s", "5000/s", "2/0s"])
def test_malformed_rates_name_the_token(text):
    with pytest.raises(ProfileError, match="^--arrival-rate: ") as e:
        parse_rate(text)
    assert repr(text) in str(e.value)


@given(st.floats(0.1, 50), st.floats(0.1, 120))
def test_arrival_starts_are_due_at_i_over_rate_before_the_end(rate, duration):
    a = ArrivalRate(rate, duration, 10)
    n = a.total_starts
    assert n == max(1, math.ceil(duration * rate - 1e-9))
    assert a.start_time(n - 1) < duration + 1e-6
    assert a.due(0) == 1 and a.due(duration * 2) == n
    assert a.due(a.start_time(n - 1) + 1e-9) == n


# --- thresholds --------------------------------------------------------------------------------


@pytest.mark.parametrize("text,metric,op,limit,kind", [
    ("p95_duration<30s", "p95_duration", "<", 30, "seconds"),
    ("p99.9_wall <= 1m", "p99.9_wall", "<=", 60, "seconds"),
    ("avg_first_output<500ms", "avg_first_output", "<", 0.5, "seconds"),
    ("error_rate<1%", "error_rate", "<", 0.01, "ratio"),
    ("error_rate<0.05", "error_rate", "<", 0.05, "ratio"),
    ("host_load<8", "host_load", "<", 8, "load"),
    ("peak_rss<2GiB", "peak_rss", "<", 2 << 30, "bytes"),
    ("dropped_starts==0", "dropped_starts", "==", 0, "count"),
    ("cpu_pressure<50%", "cpu_pressure", "<", 0.5, "ratio"),
])
def test_threshold_expressions(text, metric, op, limit, kind):
    th = parse_threshold(text)
    assert (th.metric, th.op, th.kind) == (metric, op, kind)
    assert th.limit == pytest.approx(limit) and not th.abort


def test_abort_suffix_relative_and_per_core_limits():
    th = parse_threshold("p95_duration<30s:abort=10s")
    assert th.abort and th.abort_delay == 10 and th.limit == 30
    assert parse_threshold("error_rate<1%:abort").abort
    rel = parse_threshold("p95_duration<2x")
    assert rel.relative and judge(rel, 0.5, baseline=0.2).passed is False
    assert judge(rel, 0.3, baseline=0.2).passed is True
    assert judge(rel, 9.0, first=True).passed  # the first step is its own baseline
    per_core = parse_threshold("host_load<=2/core")
    assert judge(per_core, 7.9, cores=4).passed and not judge(per_core, 8.1, cores=4).passed


@pytest.mark.parametrize("text,needle", [
    ("p95_latency<30s", "unknown metric 'p95_latency'"), ("p95_duration<30", "bad value '30'"),
    ("error_rate<5", "bad value '5'"), ("p95_duration<30s:abrot", "unknown suffix ':abrot'"),
    ("p95_duration", "has no comparison"), ("p0_duration<1s", "bad percentile 'p0'"),
    ("peak_rss<lots", "bad value 'lots'"), ("host_load<high", "bad value 'high'"),
    ("p95_duration<1s:abort=soon", "bad delay 'soon'")])
def test_malformed_thresholds_name_the_token(text, needle):
    with pytest.raises(ThresholdError, match="^--threshold: ") as e:
        parse_threshold(text)
    assert needle in str(e.value)


@pytest.mark.parametrize("op,observed,limit,holds", [
    ("<", 1, 2, True), ("<", 2, 2, False), ("<=", 2, 2, True), (">", 3, 2, True),
    (">=", 1, 2, False), ("==", 0, 0, True), ("!=", 0, 0, False)])
def test_comparisons(op, observed, limit, holds):
    assert judge(parse_threshold(f"errors{op}{limit}"), observed).passed is holds


def test_no_data_crosses_a_threshold_unless_it_is_optional():
    r = judge(parse_threshold("p95_first_output<5s"), None)
    assert not r.passed and r.note == "no data" and r.observed is None
    assert judge(parse_threshold("cpu_pressure<50%", required=False), None).passed


# --- what a window measures --------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 1000, allow_nan=False), min_size=2, max_size=40),
       st.integers(1, 99))
def test_percentiles_interpolate_like_numpy(values, q):
    expected = statistics.quantiles(values, n=100, method="inclusive")[q - 1]
    assert percentile(values, q / 100) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def _attempt(status: str, started: float, wall: float, *, first: float | None = None,
             queued: bool = False) -> Attempt:
    return Attempt(attempt=1, status=status, reason=status, message="", end_reason="exited",
                   started_at=started, duration=wall, wall=wall, first_output=first,
                   queued=queued, queue_wait=0.1 if queued else None)


def test_a_window_measures_attempts_and_samples():
    t0 = 1000.0
    attempts = [_attempt("passed", t0 + i, 1.0 + i, first=0.1) for i in range(9)]
    attempts += [_attempt("failed", t0 + 9, 2.0), _attempt("skipped", t0 + 10, 0.0)]
    obs = [o for o in (observe(a, t0) for a in attempts) if o is not None]
    assert len(obs) == 10  # a skipped (cut short) attempt is not an observation
    samples = [Sample(at=0, load1=1.5, cores=2, mem_available=900, rss=10, service_queue=0,
                      cpu_pressure=0.2, oom_kills=3),
               Sample(at=1, load1=3.5, cores=2, mem_available=700, rss=30, service_queue=2,
                      cpu_pressure=40.0, oom_kills=4)]
    w = Window(obs, samples, started=11, dropped=1, oom_base=3)
    m = {t: measure(w, parse_threshold(t + "<1")) for t in (
        "error_rate", "pass_rate", "errors", "host_load", "service_queue", "oom_kills",
        "dropped_rate", "cpu_pressure", "attempts")}
    assert m["error_rate"] == pytest.approx(0.1) and m["pass_rate"] == pytest.approx(0.9)
    assert (m["errors"], m["host_load"], m["service_queue"], m["oom_kills"]) == (1, 3.5, 2, 1)
    assert m["dropped_rate"] == pytest.approx(1 / 12) and m["attempts"] == 10
    assert m["cpu_pressure"] == pytest.approx(0.4)  # a service writing percent is read as such
    assert measure(w, parse_threshold("max_duration<1s")) == 9.0
    assert measure(w, parse_threshold("p50_first_output<1s")) == pytest.approx(0.1)
    f = summary(w)
    assert (f["attempts"], f["errors"], f["peak_rss"], f["free_mem"]) == (10, 1, 30, 700)
    assert summary(Window())["p95_duration"] is None and summary(Window())["host_load"] is None


# --- the capacity policy -----------------------------------------------------------------------


def _window(errors: int, duration: float, *, queued: int = 0, load: float = 1.0,
            wait: float = 0.0) -> Window:
    obs = [Observation(i, i + duration + wait, "failed" if i < errors else "passed", duration,
                       duration + (wait if i < queued else 0), None, wait if i < queued else 0,
                       i < queued) for i in range(20)]
    return Window(obs, [Sample(at=0, load1=load, cores=2, oom_kills=0)], started=20)


def _search(windows: list[Window], max_load: float | None = 8.0, max_steps: int = 5) -> Capacity:
    criteria = cap.default_criteria(max_load)
    search = cap.StepSearch(2, 10.0, max_steps)
    steps, baseline = [], {}
    for k, w in enumerate(windows):
        baseline = baseline if k else cap.baseline_of(w, criteria)
        steps.append(cap.judge_step(k, search.concurrency(k), w, criteria, baseline,
                                    started=10.0 * k, ended=10.0 * k + 10))
        if not steps[-1].held:
            break
    return cap.conclude(steps, search, criteria)


def test_capacity_stops_at_the_first_step_that_crosses_and_names_why():
    c = _search([_window(0, 1.0), _window(0, 1.5), _window(0, 2.5), _window(0, 1.0)])
    assert (c.max_sustainable_concurrency, c.limited_by) == (4, "latency")
    assert len(c.steps) == 3 and [s["held"] for s in c.steps] == [True, True, False]
    assert c.steps[-1]["crossed"] == ["p95_duration<2x", "p95_wall<2x"]
    assert "at 6 in flight" in c.reason and not c.crossed
    assert _search([_window(0, 1), _window(1, 1)]).limited_by == "errors"
    assert _search([_window(0, 1), _window(0, 1, load=9)]).limited_by == "cpu"
    # a queue that makes clients wait is the service's admission; a brief one holds
    assert _search([_window(0, 1), _window(0, 1, queued=5, wait=3)]).limited_by == "admission"
    assert _search([_window(0, 1), _window(0, 1, queued=1, wait=0.05)],
                   max_steps=2).limited_by == "max_steps"


def test_capacity_without_a_limit_found_and_when_no_step_holds():
    c = _search([_window(0, 1.0)] * 3, max_steps=3)
    assert (c.max_sustainable_concurrency, c.limited_by) == (6, "max_steps") and not c.crossed
    none = _search([_window(5, 1.0)])
    assert none.max_sustainable_concurrency is None and none.crossed
    assert "host_load<8" not in [t for t in _search([_window(0, 1)], max_load=None).criteria]


def test_a_step_where_nothing_ran_does_not_hold():
    c = _search([_window(0, 1.0), Window(samples=[Sample(at=0, load1=1.0)])])
    assert (c.max_sustainable_concurrency, c.limited_by) == (2, "stopped")
    assert c.reason == "step 2 ran no test" and not c.crossed


def test_latency_with_a_queue_is_the_services_admission():
    criteria = (parse_threshold("p95_duration<2x"),)
    first, second = _window(0, 1.0), _window(0, 3.0, queued=2)
    step = cap.judge_step(1, 4, second, criteria, cap.baseline_of(first, criteria),
                          started=0, ended=1)
    assert not step.held and cap.limit_of(step) == "admission"


# --- the exit status ---------------------------------------------------------------------------


def _result(passed: bool) -> ThresholdResult:
    return ThresholdResult("x<1", "x", "<", "count", 1, 0 if passed else 2, passed)


def test_exit_status_precedence():
    ok, failed = Totals(tests=1, passed=1, attempts=1, attempts_passed=1), \
        Totals(tests=1, failed=1, attempts=1, attempts_failed=1)
    crossed = [_result(True), _result(False)]
    assert exit_status(None, None, ok) == 0
    assert exit_status(None, None, failed) == 1
    assert exit_status(None, None, failed, thresholds=crossed) == 99
    assert exit_status(None, None, ok, thresholds=[_result(True)]) == 0
    assert exit_status(None, EarlyStop.PREFLIGHT, ok, thresholds=crossed) == 3
    assert exit_status("SIGINT", None, ok, thresholds=crossed) == 130
    found = Capacity(4, "errors", "", [], 2, 1.0, 5)
    assert exit_status(None, None, failed, capacity=found) == 0  # failing is what it looked for
    assert exit_status(None, None, failed, capacity=Capacity(None, "errors", "", [], 2, 1.0, 5)) == 99
    assert exit_status(None, None, Totals(), capacity=Capacity(None, "interrupted", "", [], 2, 1.0, 5)) == 1


def test_junit_lists_the_capacity_answer_and_fails_it_when_no_step_held():
    """CI reads junit.xml, not the exit status alone: a search where no step held (exit 99)
    is a failed testcase in the first testsuite, "thresholds"; a search that found its limit
    a passed one carrying the answer."""
    import xml.etree.ElementTree as ET

    from stress.report.junit import render_junit
    from stress.report.results import RunResult

    def first_suite(capacity: Capacity) -> ET.Element:
        run = RunResult(run_id="r", tool="stress.local", argv=[], started_at=0.0,
                        capacity=capacity)
        return ET.fromstring(render_junit(run)).findall("testsuite")[0]

    none = first_suite(Capacity(None, "errors", "error rate 50% at 2", ["error_rate<1%"], 2,
                                1.0, 5))
    assert (none.get("name"), none.get("tests"), none.get("failures")) == ("thresholds", "1", "1")
    assert "no step held (limited by errors)" in none.find("testcase/failure").get("message")
    found = first_suite(Capacity(4, "errors", "", ["error_rate<1%"], 2, 1.0, 5))
    assert found.get("failures") == "0" and found.find("testcase/failure") is None


# --- /health, read defensively -----------------------------------------------------------------


@pytest.mark.parametrize("body,expected", [
    (None, {"service_queue": None, "load1": None, "cpu_pressure": None}),
    ({"jobs": {"queued": 3, "running": 2}, "load": {"load1": 1.5, "cores": 2,
                                                     "cpu_pressure": 0.25}},
     {"service_queue": 3, "running": 2, "load1": 1.5, "cores": 2, "cpu_pressure": 0.25}),
    ({"load": {"pressure": {"cpu": 0.1, "memory": {"some": {"avg10": 2.5}}, "io": "x"}}},
     {"cpu_pressure": 0.1, "memory_pressure": 0.025, "io_pressure": None}),
    ({"jobs": "busy", "load": [], "throttle": {"max_load": 8}},
     {"service_queue": None, "load1": None, "max_load": 8.0}),
    ({"load": {"io_pressure": {"avg10": 0.3}, "load1": True}},
     {"io_pressure": 0.003, "load1": None}),
])
def test_health_is_read_defensively(body, expected):
    got = read_health(body)
    for k, v in expected.items():
        assert got[k] == v, k


# --- the options, refused before anything starts ------------------------------------------------


@pytest.mark.parametrize("args,needle", [
    (["--stages", "30x:8"], "'30x'"),
    (["--stages", "30s:8,,1s:2"], "bad stage ''"),
    (["--arrival-rate", "2", "--duration", "10s"], "bad rate '2'"),
    (["--arrival-rate", "2/s"], "needs --duration"),
    (["--arrival-rate", "2/s", "--duration", "60"], "'60' has no unit"),
    (["--threshold", "p95_latency<1s"], "unknown metric 'p95_latency'"),
    (["--threshold", "p95_duration<30"], "bad value '30'"),
    (["--threshold", "p95_duration<2x"], "relative limit"),
    (["--stages", "1s:2", "--repeat", "3"], "--repeat contradicts --stages"),
    (["--stages", "1s:2", "--concurrency", "3"], "--concurrency 3 contradicts --stages"),
    (["--arrival-rate", "1/s", "--duration", "1s", "--concurrency", "2"],
     "--concurrency does not apply to --arrival-rate"),
    (["--find-capacity", "--concurrency", "2"], "--concurrency contradicts --find-capacity"),
    (["--find-capacity", "--repeat", "2"], "--repeat contradicts --find-capacity"),
    (["--find-capacity", "--fail-fast"], "--fail-fast contradicts --find-capacity"),
    (["--stages", "1s:1", "--find-capacity"], "two load profiles"),
    (["--stages", "1s:1", "--cluster", "local:2"], "cannot be combined with --cluster"),
    (["--step", "2"], "--step is only used with --find-capacity"),
    (["--max-in-flight", "2"], "--max-in-flight is only used with --arrival-rate"),
    (["--find-capacity", "--step-duration", "0s"], "--step-duration: '0s'"),
    (["--find-capacity", "--max-steps", "101"], "--max-steps: 101"),
    (["--max-starts", "5"], "--max-starts is only used with"),
])
def test_bad_load_options_exit_2_with_one_line(capsys, args, needle):
    assert main([SUITE, "--no-history", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("stress.local: error: ")
    assert needle in err, err


def test_a_profile_that_cannot_fit_an_instances_test_is_refused(capsys, tmp_path):
    suite = tmp_path / "inst.json"
    suite.write_text('{"name": "i", "tests": [{"id": "four", "command": "true", '
                     '"instances": {"count": 4, "criterion": "fastest"}}]}')
    assert main([str(suite), "--no-history", "--stages", "1s:3"]) == 2
    assert "runs 4 instances at once" in capsys.readouterr().err
    assert main([str(suite), "--no-history", "--stages", "1s:4", "--list"]) == 0
