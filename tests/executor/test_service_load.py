"""The service's load-awareness through the real service, where the host has no PSI: admission
paced by the load its own young jobs will bring, and the process count on /health.

The 1-minute load average shows a job's load only a minute after it starts, so a rule that reads
the average alone lets a burst through (a reopened queue, many executes at once). The service
therefore counts each running job as the load it has not shown yet (`load.unshown_load`). Here
the burners are the test's own: bounded CPU busy loops run as jobs, ended by pid (group) through
the service, and checked gone. The maximum is set just above the host's current load, so the
figures do not depend on how busy the machine happens to be.
"""

from __future__ import annotations

import asyncio
import json
import math
import signal

import psutil
import pytest

from cc_executor import protocol
from cc_executor.client import ExecutorClient
from cc_executor.jobs import JobManager
from cc_executor.load import LOAD1_TAU, unshown_load
from cc_executor.process import ProcessRunner
from cc_executor.settings import Settings

from conftest import wait_until

pytestmark = pytest.mark.anyio

BURN = ("import os,time\nprint(os.getpid(), flush=True)\nend = time.monotonic() + {secs}\n"
        "while time.monotonic() < end:\n    pass\n")
PY = "python3"
PACING = {"CC_EXECUTOR_THROTTLE": None, "CC_EXECUTOR_PSI_DIR": ""}
"""The rule these tests check is the one in force without PSI (older kernels, some containers):
the service is started with PSI switched off. The rule with PSI: tests/executor/test_admission.py."""


def test_unshown_load_follows_the_kernel_average():
    assert unshown_load([]) == 0
    assert unshown_load([0.0]) == pytest.approx(1.0)
    assert unshown_load([LOAD1_TAU]) == pytest.approx(math.exp(-1))
    assert unshown_load([0.0, 0.0, 600.0]) == pytest.approx(2.0, abs=1e-4)
    assert unshown_load([-5.0]) == pytest.approx(1.0)  # a clock step never counts above 1


def limit_from_service(svc, env_file, room: float, extra: str = "") -> None:
    """Set the service's maximum to its own latest reading plus `room` (SIGHUP): the test's
    reading of the load could differ from the sample the service decides on."""
    seq0 = svc.health()["load"]["timestamp"]
    assert wait_until(lambda: svc.health()["load"]["timestamp"] > seq0, 10)  # a fresh sample
    limit = svc.health()["load"]["load1"] + room
    env_file.write_text(f"CC_EXECUTOR_THROTTLE=1\nCC_EXECUTOR_MAX_LOAD={limit:.2f}\n{extra}")
    svc.signal(signal.SIGHUP)
    assert wait_until(lambda: svc.health()["throttle"]["max_load"] == float(f"{limit:.2f}"), 10)


async def test_young_burners_hold_the_next_job_until_they_stop(executor_service, tmp_path):
    # Room for one young burner, not for two, above the load the service itself reads.
    env_file = tmp_path / "service.env"
    env_file.write_text("CC_EXECUTOR_THROTTLE=1\nCC_EXECUTOR_MAX_LOAD=1000\n")
    svc = executor_service(allow=[PY, "echo"], env_file=env_file,
                           env=PACING)
    limit_from_service(svc, env_file, 0.8)
    async with await ExecutorClient.connect(svc.url) as c:
        burners = [await c.start(args=[PY, "-c", BURN.format(secs=30)]) for _ in range(2)]
        assert [b.status for b in burners] == ["started", "queued"]
        queued = await c.start(args=["echo", "after the burners"])
        assert queued.status == "queued" and queued.position == 2
        ev = await asyncio.wait_for(queued.__aiter__().__anext__(), 10)
        assert ev.kind == "queued" and "from jobs just started" in ev.params["reason"]
        assert svc.health()["jobs"] == {"running": 1, "queued": 2}

        # The running burner is a real busy loop, and the queue holds while it runs.
        pid = int((await asyncio.wait_for(_first_line(burners[0]), 10)).decode())
        assert psutil.Process(pid).cpu_percent(interval=0.3) > 20
        assert svc.health()["jobs"] == {"running": 1, "queued": 2}

        # Burners stop: the queue moves on, in order, each start paced the same way.
        await burners[0].cancel()
        r0 = await asyncio.wait_for(burners[0].result(), 15)
        assert r0.reason == "cancelled"
        assert wait_until(lambda: not psutil.pid_exists(pid)
                          or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 5)
        assert await asyncio.to_thread(wait_until,
                                       lambda: svc.health()["jobs"]["running"] == 1, 10)
        await burners[1].cancel()
        assert (await asyncio.wait_for(burners[1].result(), 15)).reason == "cancelled"
        r = await asyncio.wait_for(queued.result(), 15)
        assert r.ok and r.queued and r.stdout == b"after the burners\n"


async def _first_line(job) -> bytes:
    out = b""
    async for ev in job:
        if ev.kind == "output":
            out += ev.data
            if b"\n" in out:
                return out.split(b"\n")[0]
    raise AssertionError("the burner ended before printing its pid")


async def test_a_reopened_queue_is_released_a_few_at_a_time(executor_service, tmp_path):
    env_file = tmp_path / "service.env"
    env_file.write_text("CC_EXECUTOR_THROTTLE=1\nCC_EXECUTOR_MAX_LOAD=0.01\n")
    svc = executor_service(allow=["sleep"], env_file=env_file, env=PACING)
    n = 8
    async with await ExecutorClient.connect(svc.url) as c:
        jobs = [await c.start(args=["sleep", "30"]) for _ in range(n)]
        assert [j.status for j in jobs] == ["queued"] * n
        # Room for three young jobs above the load the service reads: three start, five wait.
        limit_from_service(svc, env_file, 2.5)
        assert await asyncio.to_thread(
            wait_until, lambda: svc.health()["jobs"]["running"] > 0, 10), svc.stderr()
        # Give the service several samples to (wrongly) release more: it re-checks per sample.
        seq0 = svc.health()["load"]["timestamp"]
        assert await asyncio.to_thread(
            wait_until, lambda: svc.health()["load"]["timestamp"] >= seq0 + 2.5, 10)
        h = svc.health()["jobs"]
        assert h == {"running": 3, "queued": n - 3}, h
        for j in reversed(jobs):  # the queued ones first, so none starts as a slot frees up
            await j.cancel()
        results = await asyncio.wait_for(asyncio.gather(*(j.result() for j in jobs)), 30)
    assert all(r.reason == "cancelled" for r in results)
    assert sum(1 for r in results if r.pid) == 3  # the five still queued never started


async def test_job_load_zero_turns_pacing_off(executor_service, tmp_path):
    env_file = tmp_path / "service.env"
    env_file.write_text("CC_EXECUTOR_THROTTLE=1\nCC_EXECUTOR_MAX_LOAD=1000\nCC_EXECUTOR_JOB_LOAD=0\n")
    svc = executor_service(allow=["sleep"], env_file=env_file, env=PACING)
    limit_from_service(svc, env_file, 0.5, extra="CC_EXECUTOR_JOB_LOAD=0\n")
    async with await ExecutorClient.connect(svc.url) as c:
        jobs = [await c.start(args=["sleep", "30"]) for _ in range(4)]
        assert [j.status for j in jobs] == ["started"] * 4  # the average alone decides
        for j in jobs:
            await j.cancel()
        await asyncio.wait_for(asyncio.gather(*(j.result() for j in jobs)), 30)


async def test_health_counts_the_processes_of_running_jobs(executor_service):
    svc = executor_service(allow=["sh"])

    def live() -> int | None:
        return svc.health()["load"]["live_processes"]

    async with await ExecutorClient.connect(svc.url) as c:
        assert await asyncio.to_thread(wait_until, lambda: live() == 0, 10)
        load = svc.health()["load"]
        assert (load["running_jobs"], load["queued_jobs"]) == (0, 0)
        # A leader, two children, and one that left the group (found by the run's marker).
        job = await c.start(args=["sh", "-c", "sleep 30 & setsid sleep 30 & sleep 30 & wait"])
        assert await asyncio.to_thread(wait_until, lambda: live() == 4, 10), live()
        await job.cancel()
        assert (await asyncio.wait_for(job.result(), 15)).reason == "cancelled"
        assert await asyncio.to_thread(wait_until, lambda: live() == 0, 10), live()


# ---- the one timeout rule, applied by the service -------------------------------------------

async def test_limits_are_stretched_by_the_load_factor_when_the_job_starts(tmp_path):
    # The job layer on its own, with a real runner and a chosen factor: a host loaded enough
    # for a real factor of 2 cannot be made on demand in a test (the 1-minute average moves in
    # minutes). The server's provider of the factor is `timing.load_factor` of its sample.
    settings = Settings(allow=["sleep"], log_dir=tmp_path, run_dir=tmp_path / "runs")
    runner = ProcessRunner(settings.run_dir)
    frames: list[dict] = []

    async def sink(text: str) -> None:
        frames.append(json.loads(text))

    for stretch_on, factor, want in ((True, 2.0, 0.6), (False, 2.0, 0.3), (True, 1.0, 0.3)):
        settings.stretch_timeouts = stretch_on
        jobs = JobManager(settings, runner, timeout_factor=lambda f=factor: f)
        frames.clear()
        job = jobs.submit("owner", protocol.ExecuteParams(args=["sleep", "30"], timeout=0.3,
                                                          stall_timeout=0.2), sink)
        result = jobs.result_of(job).wire()
        await jobs.begin(job)
        assert result["timeout"] == pytest.approx(want)
        assert result["stall_timeout"] == pytest.approx(want * 2 / 3)
        assert result["timeout_factor"] == (factor if stretch_on else 1.0)
        await asyncio.wait_for(job.pump, 10)
        started = next(f["params"] for f in frames if f["method"] == "process.started")
        assert {k: started[k] for k in result if k in started} == {
            k: v for k, v in result.items() if k in started}
        done = next(f["params"] for f in frames if f["method"] == "process.completed")
        # The stall limit (two thirds of the total) fires first: `sleep` prints nothing.
        assert done["reason"] == "stalled"
        assert want * 2 / 3 <= done["duration"] < want * 2 / 3 + 2


async def test_the_service_reports_the_limits_in_force(executor_service):
    svc = executor_service(allow=["echo"])
    async with await ExecutorClient.connect(svc.url) as c:
        job = await c.start(args=["echo", "x"], timeout=40, stall_timeout=10)
        assert job.timeout_factor is not None and 1.0 <= job.timeout_factor <= 3.0
        assert job.timeout == pytest.approx(40 * job.timeout_factor, rel=1e-3)
        assert job.stall_timeout == pytest.approx(10 * job.timeout_factor, rel=1e-3)
        assert (await job.result()).ok
    off = executor_service(allow=["echo"], env={"CC_EXECUTOR_STRETCH_TIMEOUTS": "0"})
    async with await ExecutorClient.connect(off.url) as c:
        job = await c.start(args=["echo", "x"], timeout=40)
        assert (job.timeout, job.stall_timeout, job.timeout_factor) == (40, None, 1.0)
        assert (await job.result()).ok
