"""Admission by measured pressure: the pure rule (PSI windows, measured job CPU, slow start) and the
real service under its default settings (sleepers run together, CPU burners are held back, no PSI
falls back to the pacing rule and says so)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest
from service_fixture import PY, ServiceFactory, clean_env

from cc_executor.admission import (
    RULE_FALLBACK,
    RULE_PRESSURE,
    Admission,
    Limits,
    RunningJob,
)
from cc_executor.client import ExecutorClient
from cc_executor.load import LoadReading
from cc_executor.pressure import Pressure, Totals, parse, read_totals, window
from cc_executor.usage import GroupUsage, UsageRates, group_usage

pytestmark = pytest.mark.anyio

LIMITS = Limits(max_load=8.0, min_free_mem=0, cpu_pressure=0.25, memory_pressure=0.1,
                io_pressure=0.5, slow_start=4, job_load=1.0)
CALM = Pressure(0.01, 0.0, 0.0, 0.5)
BUSY = Pressure(0.60, 0.0, 0.0, 0.5)
BURN = ("import time\nend = time.process_time() + {s}\n"
        "while time.process_time() < end:\n    pass\n")


def reading(load1: float = 0.0) -> LoadReading:
    return LoadReading(load1, load1, load1, 2, 1, 8 << 30, 16 << 30, 0, 0, 0.0)


# ---- the pure parts ------------------------------------------------------------------------------

def test_psi_totals_give_the_exact_share_of_a_window():
    text = "some avg10=1.62 avg60=2.32 avg300=4.83 total=277237536\nfull avg10=0 total=0\n"
    assert parse(text) == 277237536
    with pytest.raises(ValueError):
        parse("full avg10=0.00 total=5\n")
    before, after = Totals(1_000_000, 0, 0, 10.0), Totals(1_250_000, 50_000, 0, 10.5)
    p = window(before, after)
    assert (p.cpu, p.memory, p.io, p.seconds) == (0.5, 0.1, 0.0, 0.5)
    assert window(after, before) is None  # time going backwards is no window
    assert read_totals("/nonexistent-psi", 0.0) is None


def test_a_cpu_contended_by_the_jobs_holds_them_and_says_which_signal():
    a = Admission(LIMITS.slow_start)
    burners = [RunningJob(age=1.0, cpu_rate=0.9) for _ in range(2)]
    a.on_sample(BUSY, True, LIMITS, burners)
    d = a.decide(reading(), burners, LIMITS)
    assert (d.may_start, d.signal, d.value, d.limit) == (False, "cpu_pressure", 0.6, 0.25)
    assert "cpu pressure 0.60 > limit 0.25" in d.reason


def test_a_cpu_busy_with_something_else_does_not_hold_light_jobs():
    """The service streaming output for many light jobs (or another tenant) keeps the CPU
    busy: holding light jobs back would only serialise them."""
    a = Admission(LIMITS.slow_start)
    light = [RunningJob(age=1.0, cpu_rate=0.01) for _ in range(20)]
    a.on_sample(BUSY, True, LIMITS, light)
    assert a.decide(reading(), light, LIMITS).may_start


def test_slow_start_holds_young_jobs_and_grows_while_calm():
    a = Admission(LIMITS.slow_start)
    a.on_sample(CALM, True, LIMITS)
    young: list[RunningJob] = []
    for _ in range(4):
        assert a.decide(reading(), young, LIMITS).may_start
        a.started()
        young.append(RunningJob(age=0.1, cpu_rate=None))
    held = a.decide(reading(), young, LIMITS)
    assert (held.may_start, held.signal, held.value, held.limit) == (False, "slow_start", 4, 4)
    measured = [RunningJob(age=0.6, cpu_rate=0.0) for _ in young]
    a.on_sample(CALM, True, LIMITS, measured)
    assert a.window == 16  # filled on a calm host, every job light: quadrupled
    assert a.decide(reading(), measured, LIMITS).may_start  # measured jobs are not young
    a.on_sample(CALM, True, LIMITS, measured)
    assert a.window == 8  # asked, but under half of it used: halved (down to the start)
    a.decide(reading(), measured, LIMITS)
    a.on_sample(CALM, True, LIMITS, measured)
    assert a.window == 4
    a.window = 8
    a.on_sample(CALM, True, LIMITS, measured)
    assert a.window == 4  # idle (nothing asked to start): back to the start


def test_a_window_grown_by_light_jobs_shrinks_before_a_burst_of_burners():
    """Light jobs trickling in keep asking but use little of a grown window: it shrinks back,
    so burners arriving next start `slow_start` at a time, not the grown window."""
    a = Admission(LIMITS.slow_start)
    a.window = 64
    light = [RunningJob(age=1.0, cpu_rate=0.0, demand=0.01) for _ in range(10)]
    for _ in range(5):  # five samples, each with one light job starting
        assert a.decide(reading(), light, LIMITS).may_start
        a.started()
        a.on_sample(CALM, True, LIMITS, light)
    assert a.window == LIMITS.slow_start
    burners: list[RunningJob] = []
    while a.decide(reading(), light + burners, LIMITS).may_start:
        a.started()
        burners.append(RunningJob(age=0.0, cpu_rate=None))
        assert len(burners) <= 64
    assert len(burners) == LIMITS.slow_start


def test_a_held_queue_on_a_calm_host_grows_the_window():
    """Busy jobs fill the window on a host with cores to spare: held demand on a calm sample
    doubles it, so more start (a 64-core host is not held to 8 busy jobs)."""
    a = Admission(LIMITS.slow_start)
    a.on_sample(CALM, True, LIMITS)
    busy = [RunningJob(age=5.0, cpu_rate=1.0) for _ in range(4)]
    assert a.decide(reading(), busy, LIMITS).signal == "slow_start"
    a.on_sample(CALM, True, LIMITS, busy)
    assert a.window == 8 and a.decide(reading(), busy, LIMITS).may_start


def test_one_short_job_after_another_is_never_held_by_slow_start():
    a = Admission(1)
    a.on_sample(CALM, True, LIMITS)
    for _ in range(50):  # each ends before the next: never more than one young job
        assert a.decide(reading(), [], LIMITS).may_start
        a.started()


def test_measured_cpu_counts_a_waiting_job_as_nothing_and_a_burner_as_a_core():
    a = Admission(LIMITS.slow_start)
    a.on_sample(CALM, True, LIMITS)
    sleepers = [RunningJob(age=1.0, cpu_rate=0.0) for _ in range(60)]
    assert a.decide(reading(1.0), sleepers, LIMITS).may_start
    burners = [RunningJob(age=1.0, cpu_rate=1.0) for _ in range(8)]
    d = a.decide(reading(1.0), burners, LIMITS)
    assert (d.may_start, d.signal) == (False, "load")


def test_without_psi_the_pacing_rule_holds_and_the_rule_is_named():
    a = Admission(LIMITS.slow_start)
    a.on_sample(None, False, LIMITS)
    assert a.rule == RULE_FALLBACK and a.describe()["rule"] == RULE_FALLBACK
    young = [RunningJob(age=0.0, cpu_rate=None) for _ in range(8)]
    d = a.decide(reading(0.5), young, LIMITS)
    assert (d.may_start, d.signal) == (False, "load")  # each young job a unit of load


# ---- the real service, default settings -----------------------------------------------------------

async def peak_of(url: str, argv: list[str], n: int, limit: float) -> tuple[int, dict[str, int]]:
    """Send `n` executes at once; the most running together (`peak`) and the signals that held
    some (`held`; its "before first end" entry: how many started before any job ended)."""
    running = peak = 0
    held: dict[str, int] = {}
    ended = False

    def seen(ev) -> None:
        nonlocal running, peak, ended
        if ev.kind == "started":
            running += 1
            peak = max(peak, running)
            if not ended:
                held["before first end"] = held.get("before first end", 0) + 1
        elif ev.kind == "completed":
            running -= 1
            ended = True
        elif ev.kind == "queued":
            held[ev.params.get("signal", "-")] = held.get(ev.params.get("signal", "-"), 0) + 1

    async with await ExecutorClient.connect(url) as client:
        results = await asyncio.wait_for(asyncio.gather(
            *(client.execute(args=argv, on_event=seen) for _ in range(n))), limit)
    assert all(r.ok for r in results), [r.reason for r in results if not r.ok]
    return peak, held


@pytest.fixture
def admitting(tmp_path):
    """A service with admission on (the fixture's default turns it off) and nothing else set."""
    factory = ServiceFactory(tmp_path)

    def start(**env: str):
        return factory(allow=["sleep", PY], env={"CC_EXECUTOR_THROTTLE": "1", **env})

    yield start
    problems = factory.close()
    assert not problems, problems


NEEDS_PSI = pytest.mark.skipif(not os.path.exists("/proc/pressure/cpu"),
                               reason="this host has no PSI: the fallback rule is tested below")


@NEEDS_PSI
async def test_sleepers_run_together_under_the_default_rule(admitting):
    svc = admitting()
    health = svc.health()
    assert health["admission"]["rule"] == RULE_PRESSURE
    peak, _ = await peak_of(svc.url, ["sleep", "3"], 24, 60)
    # (`peak` counts from the client's events: a few may end before the last start arrives)
    assert peak >= 16, peak  # the rule before PSI started 8 and paced the rest
    assert set(svc.health()["job_usage"]) == {"cpu", "rss"}


@NEEDS_PSI
async def test_a_burst_of_cpu_burners_is_held_back(admitting):
    svc = admitting(CC_EXECUTOR_SLOW_START="3")
    _, held = await peak_of(svc.url, [PY, "-c", BURN.format(s=1.0)], 6, 90)
    # Three burners contend for two cores: nothing more starts while they all run.
    assert held.pop("before first end") == 3, held
    assert held and set(held) <= {"cpu_pressure", "slow_start", "load"}, held


async def test_without_psi_the_service_falls_back_and_says_so(admitting, tmp_path):
    svc = admitting(CC_EXECUTOR_PSI_DIR=str(tmp_path / "no-psi"))
    assert svc.health()["admission"]["rule"] == RULE_FALLBACK
    out = subprocess.run([sys.executable, "-m", "cc_executor.load"], capture_output=True,
                         text=True, timeout=30, cwd=tmp_path,
                         env=clean_env({"CC_EXECUTOR_PSI_DIR": str(tmp_path / "no-psi")}))
    assert "PSI unavailable" in out.stdout, out


def test_busy_jobs_count_against_the_window_once_measured():
    """Two burners left on a calm host, window 4: two more may start, not four."""
    a = Admission(LIMITS.slow_start)
    burners = [RunningJob(age=5.0, cpu_rate=0.95) for _ in range(2)]
    a.on_sample(CALM, True, LIMITS, burners)
    jobs = list(burners)
    for _ in range(2):
        assert a.decide(reading(), jobs, LIMITS).may_start
        a.started()
        jobs.append(RunningJob(age=0.0, cpu_rate=None))
    d = a.decide(reading(), jobs, LIMITS)
    assert (d.may_start, d.signal, d.value, d.limit) == (False, "slow_start", 4, 4)


def test_demand_tells_a_starved_burner_from_a_waiter():
    """On a contended CPU a burner gets a quarter core (its CPU rate reads light) but is runnable
    all the time: its demand reads heavy, so it still counts against the window; a job that
    waits on the network has neither, and is not held."""
    a = Admission(LIMITS.slow_start)
    a.on_sample(CALM, True, LIMITS)
    starved = [RunningJob(age=0.1, cpu_rate=0.25, demand=1.0) for _ in range(4)]
    d = a.decide(reading(), starved, LIMITS)
    assert (d.may_start, d.signal) == (False, "slow_start")
    waiting = [RunningJob(age=0.1, cpu_rate=None, demand=0.02) for _ in range(40)]
    assert a.decide(reading(), waiting, LIMITS).may_start  # measured by demand: not young


def test_cpu_contention_counts_by_what_the_jobs_consume_not_what_they_wait_for():
    """Eight burners on two cores each get a quarter core but together consume both: the CPU
    pressure is theirs and holds the next job. Light jobs on a host another tenant keeps busy
    wait on the run queue at every wake-up (their demand grows) but consume next to nothing:
    the pressure is not theirs, and holding them would only serialise them."""
    limits = Limits(**{**LIMITS.__dict__, "cores": 2, "slow_start": 64})
    a = Admission(limits.slow_start)
    burners = [RunningJob(age=1.0, cpu_rate=0.25, demand=1.0) for _ in range(8)]
    a.on_sample(BUSY, True, limits, burners)
    assert a.decide(reading(), burners, limits).signal == "cpu_pressure"
    waiting = [RunningJob(age=1.0, cpu_rate=0.01, demand=0.4) for _ in range(30)]
    a.on_sample(BUSY, True, limits, waiting)
    assert a.decide(reading(), waiting, limits).may_start


def test_usage_rates_measure_demand_early_and_cpu_late():
    """Demand (schedstat, nanoseconds) is measured from 50 ms of age, the CPU rate (clock ticks)
    from 200 ms; later passes give the rate between passes."""
    rates = UsageRates()
    rates.update({7: GroupUsage(0.0, 1 << 20, 0.045)}, now=100.0, ages={7: 0.06})
    assert rates.demand(7) == pytest.approx(0.75) and rates.rate(7) is None
    rates.update({7: GroupUsage(0.1, 1 << 20, 0.055)}, now=100.1, ages={7: 0.16})
    assert rates.demand(7) == pytest.approx(0.1) and rates.rate(7) == pytest.approx(1.0)
    rates.update({7: GroupUsage(0.1, 1 << 20, None)}, now=100.2, ages={7: 0.26})
    assert rates.demand(7) is None  # no schedstat: admission judges by the CPU rate
    # schedstat's run time (ns) gives a CPU rate as early as demand, before ticks can
    early = UsageRates()
    early.update({8: GroupUsage(0.0, 1 << 20, 0.06, 0.03)}, now=100.0, ages={8: 0.06})
    assert early.rate(8) == pytest.approx(0.5) and early.demand(8) == pytest.approx(1.0)


def test_group_usage_reads_a_real_burner_as_demanding_a_core():
    proc = subprocess.Popen([PY, "-c", BURN.format(s=0.5)], start_new_session=True)
    try:
        first = group_usage([proc.pid])[proc.pid]
        if first.runnable_seconds is None:
            pytest.skip("this kernel has no /proc/PID/schedstat")
        t0 = time.monotonic()
        deadline = t0 + 5.0
        while time.monotonic() < deadline and proc.poll() is None:
            now = group_usage([proc.pid]).get(proc.pid)
            if now is not None and now.runnable_seconds - first.runnable_seconds > 0.1:
                break
            time.sleep(0.02)
        # It was runnable (ran or waited for a CPU) for most of the time it lived.
        grown = now.runnable_seconds - first.runnable_seconds
        assert grown >= 0.5 * (time.monotonic() - t0) * 0.5, (grown, time.monotonic() - t0)
    finally:
        proc.kill()
        proc.wait()
