"""Per-job containment against real servers: one with the host's best mechanism (a cgroup per
job where a writable v2 tree exists), one forced onto the fallback (process group, marker,
subreaper sweep), so both paths run on a host that has cgroups.

Processes here clear their environment on purpose, which hides them from the session's
leftover check (it looks for a marker variable): every test records the pids it learns and
checks them gone itself, and ends any survivor by pid so none can outlive the test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import urllib.request

import pytest
from conftest import wait_until
from service_fixture import (
    PY,
    ServiceFactory,
    clean_env,
    pid_alive,
    pid_state,
    wait_gone,
)

from cc_executor.client import ExecutorClient, ExecutorError

pytestmark = pytest.mark.anyio

ALLOW = ["python3", "sh", "sleep"]


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    """{"cgroup": server with containment auto, "fallback": server forced to fallback}."""
    factory = ServiceFactory(tmp_path_factory.mktemp("containment"))
    out = {"cgroup": factory(allow=ALLOW, env={"CC_EXECUTOR_KILL_GRACE": "1"}),
           "fallback": factory(allow=ALLOW, env={"CC_EXECUTOR_CONTAINMENT": "fallback",
                                                 "CC_EXECUTOR_KILL_GRACE": "1",
                                                 "CC_EXECUTOR_MAX_OUTPUT_MB": "2"})}
    yield out
    health = out["cgroup"].health()["containment"]
    problems = factory.close()
    assert not problems, problems
    # A stopped service leaves none of its cgroups behind.
    dirs = [d for d in [health["cgroup_v2"], *health["cgroup_v1"].values()] if d]
    assert not [d for d in dirs if os.path.exists(d)]


def service(services, mode: str):
    svc = services[mode]
    health = svc.health()["containment"]
    if mode == "cgroup" and health["mechanism"] != "cgroup_v2":
        pytest.skip(f"no writable cgroup v2 tree here: containment is {health['mechanism']}")
    assert health["mechanism"] == ("cgroup_v2" if mode == "cgroup" else "fallback")
    return svc


def zombie_children(pid: int) -> list[int]:
    """Children of `pid` that are zombies (every thread's children)."""
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids = [int(x) for x in f.read().split()]
        except OSError:
            continue
        out += [k for k in kids if pid_state(k) == "Z"]
    return out


def end_by_pid(pids) -> None:
    for p in pids:
        if pid_alive(p):
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass


async def gone_or_fail(pids, what: str, timeout: float = 10.0) -> None:
    try:
        left = await asyncio.to_thread(wait_gone, pids, timeout)
    finally:
        survivors = [p for p in pids if pid_alive(p)]
        end_by_pid(survivors)
    assert left == [], f"{what}: still alive {left}"


async def no_zombies(svc) -> None:
    """No zombie child of the service, within a bounded wait (the reaper runs on SIGCHLD)."""
    left = await asyncio.to_thread(wait_until, lambda: not zombie_children(svc.pid), 5.0) \
        or zombie_children(svc.pid)
    assert left is True or left == [], f"zombie children of the service: {left}"


def stdout_pids(events) -> list[int] | None:
    out = b"".join(e.data for e in events if e.kind == "output" and e.stream == "stdout")
    return [int(x) for x in out.split()] if out.endswith(b"\n") else None


# A daemon the classic way: fork, setsid, fork again; the middle process exits, so the service
# (a subreaper) adopts the grandchild. CLEAR=1 also empties its environment first (no marker).
DAEMON = r"""
import os, sys, time
life, clear = float(sys.argv[1]), sys.argv[2] == "1"
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.close(r)
        os.write(w, b"%d\n" % os.getpid())
        os.close(w)
        if clear:
            os.execve(sys.executable, [sys.executable, "-c",
                      "import time; time.sleep(%r)" % life], {})
        time.sleep(life)
        os._exit(0)
    os._exit(0)
os.close(w)
pid = int(os.read(r, 64))
os.wait()
print(pid, flush=True)
time.sleep(float(sys.argv[3]))
"""


@pytest.mark.parametrize("mode", ["cgroup", "fallback"])
async def test_an_adopted_daemon_that_exits_is_reaped(services, mode):
    svc = service(services, mode)
    async with await ExecutorClient.connect(svc.url) as c:
        # The daemon lives 1.3 s (past the reaper's first tick: under uvloop a pidfd watches
        # it by then); the job runs on for 20 s (cancelled below): the daemon's end happens
        # while the job runs, and only the service can wait for it.
        job = await c.start(args=["python3", "-c", DAEMON, "1.3", "0", "20"])
        events: list = []
        collector = asyncio.ensure_future(job.result(on_event=events.append))
        pids = await asyncio.to_thread(wait_until, lambda: stdout_pids(events), 15)
        assert pids, "the job never reported its daemon"
        daemon = pids[0]
        try:
            # Reaped: the pid disappears entirely (a zombie would stay in /proc).
            gone = await asyncio.to_thread(
                wait_until, lambda: not os.path.exists(f"/proc/{daemon}"), 5.0)
            assert gone, f"daemon {daemon} is {pid_state(daemon)!r}, not reaped"
            assert not collector.done()
        finally:
            await job.cancel()
            result = await asyncio.wait_for(collector, 15)
            end_by_pid([daemon])
        assert result.reason == "cancelled"
    await no_zombies(svc)


@pytest.mark.parametrize("mode", ["cgroup", "fallback"])
@pytest.mark.parametrize("clear", ["marked", "env_cleared"])
async def test_an_adopted_daemon_that_lives_is_ended_with_its_job(services, mode, clear):
    """The daemon (setsid, double fork; with `env_cleared` also no environment, so no marker)
    outlives the job's leader, which exits 0 at once. Cgroup: the job's cgroup is killed at
    the job's end. Fallback: the sweep after the job's end finds it (by marker, or by its start
    time when only this job can have made it)."""
    svc = service(services, mode)
    async with await ExecutorClient.connect(svc.url) as c:
        events: list = []
        flag = "1" if clear == "env_cleared" else "0"
        result = await c.execute(args=["python3", "-c", DAEMON, "60", flag, "0"],
                                 on_event=events.append, timeout=30)
        daemon = stdout_pids(events)[0]
        assert (result.reason, result.exit_code) == ("exited", 0)
        # Cgroup: gone when the job ended (the completion follows the cgroup's emptiness).
        # Fallback: the sweep runs right after the end; a bounded wait covers its kill grace.
        await gone_or_fail([daemon], "adopted daemon", 1.0 if mode == "cgroup" else 10.0)
    await no_zombies(svc)


async def test_a_fork_bomb_bounded_by_processes_ends_cleanly(services):
    svc = service(services, "cgroup")
    enforcers = svc.health()["containment"]["limits"]
    if "processes" not in enforcers:
        pytest.skip("no pids controller is writable here: processes cannot be enforced")
    # Forks on whatever happens (a failed fork is retried), so only the service can end it; and
    # bounded by itself: 200 children at most, 2,000 attempts, each child alive 30 s at most.
    bomb = ("import os, time\nkids = 0\nfor _ in range(2000):\n    if kids >= 200:\n"
            "        break\n    try:\n        if os.fork() == 0:\n            time.sleep(30)\n"
            "            os._exit(0)\n        kids += 1\n    except OSError:\n"
            "        time.sleep(0.01)\nprint('bomb done', kids)")
    async with await ExecutorClient.connect(svc.url) as c:
        t0 = time.monotonic()
        job = await c.start(args=["python3", "-c", bomb], limits={"processes": 16}, timeout=30)
        assert job.limits_enforced["processes"] == {"value": 16, "by": enforcers["processes"]}
        collector = asyncio.ensure_future(job.result())
        # The host and the service stay responsive meanwhile.
        with urllib.request.urlopen(svc.http + "/health", timeout=10) as r:
            assert r.status == 200
        assert (await asyncio.wait_for(c.ping(), 10))["time"] > 0
        result = await asyncio.wait_for(collector, 20)
        assert result.reason == "process_limit" and result.status == "process_limit"
        assert b"bomb done" not in result.stdout  # the service ended it, not its own bound
        assert time.monotonic() - t0 < 15
        assert (await c.execute(args=["sleep", "0"])).ok  # and serves on
    await no_zombies(svc)


async def test_a_job_allocating_far_past_memory_mb_ends_with_memory_limit(services):
    svc = service(services, "cgroup")
    if "memory_mb" not in svc.health()["containment"]["limits"]:
        pytest.skip("no memory controller is writable here: memory_mb cannot be enforced")
    # 16 MiB touched chunks up to 1 GiB at most (bounded even if nothing stopped it).
    hog = "x = []\nfor _ in range(64):\n    x.append(b'x' * (16 << 20))\nprint('survived')"
    async with await ExecutorClient.connect(svc.url) as c:
        result = await c.execute(args=["python3", "-c", hog], limits={"memory_mb": 64},
                                 timeout=30)
        assert result.reason == "memory_limit", result
        assert b"survived" not in result.stdout
        assert (await c.execute(args=["sleep", "0"])).ok
    await no_zombies(svc)


@pytest.mark.parametrize("mode", ["cgroup", "fallback"])
async def test_output_past_output_mb_is_cut_exactly_and_ends_the_job(services, mode):
    svc = service(services, mode)
    # Numbered lines, 3 MiB of them, on stdout; the limit is 1 MiB.
    writer = ("import sys\nw = sys.stdout.buffer\n"
              "for i in range(60000):\n    w.write(b'%07d' % i + b'.' * 48 + b'\\n')\nw.flush()")
    expected = b"".join(b"%07d" % i + b"." * 48 + b"\n" for i in range(60000))[:1 << 20]
    async with await ExecutorClient.connect(svc.url) as c:
        job = await c.start(args=["python3", "-c", writer], limits={"output_mb": 1}, timeout=30)
        assert job.limits_enforced["output_mb"] == {"value": 1.0, "by": "runner"}
        result = await job.result()
        assert result.reason == "output_limit"
        assert result.stdout == expected  # every byte before the cut, in order, none after
        assert result.completed["stdout_bytes"] == 1 << 20
    await no_zombies(svc)


async def test_cpu_seconds_ends_a_spinning_job_with_cpu_limit(services):
    svc = service(services, "fallback")  # the rlimit, which both paths have
    async with await ExecutorClient.connect(svc.url) as c:
        result = await c.execute(args=["python3", "-c", "while True: pass"],
                                 limits={"cpu_seconds": 1}, timeout=30)
        assert result.reason == "cpu_limit"


async def test_limits_over_a_ceiling_or_unenforceable_are_refused_naming_them(services):
    svc = service(services, "fallback")  # max_output_mb=2; no cgroups at all
    async with await ExecutorClient.connect(svc.url) as c:
        with pytest.raises(ExecutorError) as over:
            await c.start(args=["sleep", "0"], limits={"output_mb": 5})
        assert over.value.code == -32602
        assert over.value.data == {"field": "limits.output_mb", "ceiling": "max_output_mb"}
        assert "max_output_mb" in over.value.message and "limits.output_mb" in over.value.message
        for name in ("memory_mb", "processes"):
            with pytest.raises(ExecutorError) as cannot:
                await c.start(args=["sleep", "0"], limits={name: 100})
            assert cannot.value.code == -32602
            assert cannot.value.data == {"field": f"limits.{name}"}
            assert "cannot enforce" in cannot.value.message
        for bad, field in (({"processes": "8"}, "limits.processes"),
                           ({"open_files": 0}, "limits.open_files"),
                           ({"swap_mb": 1}, "limits.swap_mb")):
            with pytest.raises(ExecutorError) as malformed:
                await c.start(args=["sleep", "0"], limits=bad)
            assert malformed.value.code == -32602 and field in malformed.value.message
        # A ceiling is also the limit of a job that asks for none.
        job = await c.start(args=["sleep", "0"])
        assert job.limits_enforced == {"output_mb": {"value": 2.0, "by": "runner"}}
        assert (await job.result()).ok


async def test_health_and_log_name_the_mechanism_and_cgroups_are_removed(services):
    svc = services["cgroup"]
    health = svc.health()["containment"]
    assert health["subreaper"] is True
    assert health["mechanism"] in ("cgroup_v2", "fallback")
    logged = [e for e in svc.event_log() if e["event"] == "containment"]
    assert logged and logged[0]["mechanism"] == health["mechanism"]
    for d in [health["cgroup_v2"], *health["cgroup_v1"].values()]:
        if d:  # every job's own cgroup was removed when its job ended; slots are kept empty
            assert os.path.isdir(d)
            assert await asyncio.to_thread(
                wait_until, lambda d=d: not [e for e in os.listdir(d) if e.startswith("job-")],
                5.0)
            slots = [e.path for e in os.scandir(d) if e.name.startswith("slot-")]
            assert all(not open(os.path.join(s, "cgroup.procs")).read() for s in slots)
    assert services["fallback"].health()["containment"]["mechanism"] == "fallback"


def test_a_ceiling_the_host_cannot_enforce_refuses_to_start(tmp_path):
    proc = subprocess.run(
        [PY, "-m", "cc_executor", "--port", "0", "--containment", "fallback",
         "--max-processes", "10", "--run-dir", str(tmp_path / "run"),
         "--log-dir", str(tmp_path / "logs"), "--env-file", str(tmp_path / "absent.env")],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "refusing to start" in proc.stderr and "max_processes" in proc.stderr
    assert "Traceback" not in proc.stderr


async def test_a_daemon_no_job_can_be_told_from_waits_for_them_all_or_the_shutdown(
        executor_service):
    """Fallback: an env-cleared daemon born while two jobs ran could come from either. When
    its own job ends the other still runs, so it is kept; once both have ended it is ended.
    A second one, still unattributable when the service stops, is ended by the shutdown."""
    svc = executor_service(allow=ALLOW, env={"CC_EXECUTOR_CONTAINMENT": "fallback",
                                             "CC_EXECUTOR_KILL_GRACE": "1"})
    daemons: list[int] = []
    try:
        async with await ExecutorClient.connect(svc.url) as c:
            other = await c.start(args=["sleep", "30"])
            events: list = []
            await c.execute(args=["python3", "-c", DAEMON, "60", "1", "0"],
                            on_event=events.append, timeout=30)
            daemons.append(stdout_pids(events)[0])
            # Its job ended; `other` may have made it too: alive for now (the sweep runs as the
            # job ends; 0.5 s would see a wrong kill, SIGTERM ends a sleeping python at once).
            assert not await asyncio.to_thread(
                wait_until, lambda: not pid_alive(daemons[0]), 0.5)
            await other.cancel()
            assert (await asyncio.wait_for(other.result(), 15)).reason == "cancelled"
            await gone_or_fail([daemons[0]], "daemon after every candidate job ended")

            keeper = await c.start(args=["sleep", "30"])
            events = []
            await c.execute(args=["python3", "-c", DAEMON, "60", "1", "0"],
                            on_event=events.append, timeout=30)
            daemons.append(stdout_pids(events)[0])
            assert pid_alive(daemons[1]) and keeper.status == "started"
            assert await asyncio.to_thread(svc.stop) == 0
        await gone_or_fail([daemons[1]], "daemon at the service's shutdown", 5.0)
    finally:
        end_by_pid(daemons)


async def test_cpu_seconds_counts_the_whole_job_where_its_cgroup_measures_it(services):
    """Three children each spin 0.45 s of CPU: none reaches `cpu_seconds` 1 alone (the
    rlimit), the job together does (its v2 cgroup's cpu.stat)."""
    svc = service(services, "cgroup")
    spin = ("import os, time\nfor _ in range(3):\n    if os.fork() == 0:\n"
            "        t = time.process_time()\n        while time.process_time() - t < 0.45:\n"
            "            pass\n        os._exit(0)\nfor _ in range(3):\n    os.wait()\n"
            "print('all spun')")
    async with await ExecutorClient.connect(svc.url) as c:
        job = await c.start(args=["python3", "-c", spin], limits={"cpu_seconds": 1}, timeout=30)
        assert job.limits_enforced["cpu_seconds"]["by"] == "rlimit_cpu+cgroup_v2_cpu_stat"
        result = await job.result()
        assert result.reason == "cpu_limit" and b"all spun" not in result.stdout


@pytest.mark.parametrize("mode", ["cgroup", "fallback"])
async def test_open_files_and_cpu_seconds_are_the_jobs_rlimits(services, mode):
    svc = service(services, mode)
    show = "import resource as r\nprint(r.getrlimit(r.RLIMIT_NOFILE), r.getrlimit(r.RLIMIT_CPU))"
    async with await ExecutorClient.connect(svc.url) as c:
        result = await c.execute(args=["python3", "-c", show],
                                 limits={"open_files": 20, "cpu_seconds": 7}, timeout=30)
        assert result.ok and result.stdout == b"(20, 20) (7, 8)\n"


def cgroup_v2_of(pid: int | str) -> str:
    """The v2 path ("0::...") of a process, from /proc."""
    with open(f"/proc/{pid}/cgroup") as f:
        return next(line.split("::", 1)[1].strip() for line in f if line.startswith("0::"))


def test_a_job_without_limits_is_born_in_its_cgroup_with_no_wrapper():
    """The bare path, on the spawn itself: for a job with no limit, `spawn` steps into the job's
    v2 cgroup and back out, so the command is exec'd as given (no `/bin/sh` wrapper in its
    argv), it is a member from its first instruction, and the spawner is back home after."""
    from cc_executor.containment import Containment
    from cc_executor.containment.limits import Limits
    from cc_executor.process.spawn import spawn
    from cc_executor.process.spec import RunSpec, build_env

    containment = Containment("auto")
    if containment.v2 is None:
        pytest.skip("no writable cgroup v2 tree here")
    home = cgroup_v2_of("self")
    box = containment.box("bare-test", Limits())
    limited = containment.box("wrapped-test", Limits(open_files=64))
    procs = []
    try:
        assert box is not None and box.bare and not limited.bare
        argv = ["/bin/sh", "-c", "cat /proc/self/cgroup"]
        spec = RunSpec(argv=argv)
        proc, _ = spawn(spec, argv, build_env(spec, "bare-test"), box)
        procs.append(proc)
        out = proc.stdout.read().decode()
        assert proc.args == argv  # exec'd as given
        slot = os.path.basename(box.v2)  # a job without limits gets a reusable slot
        assert slot.startswith("slot-") and f"0::{home.rstrip('/')}/" in out, out
        assert out.strip().endswith(f"/{slot}"), out
        assert cgroup_v2_of("self") == home
        wrapped, _ = spawn(spec, argv, build_env(spec, "wrapped-test"), limited)
        procs.append(wrapped)
        assert wrapped.args[:2] == ["/bin/sh", "-c"] and wrapped.args[-3:] == argv
        assert "/job-wrapped-test" in wrapped.stdout.read().decode()
    finally:
        for p in procs:
            p.wait(10)
            for f in (p.stdout, p.stderr):
                f.close()
        for b in (box, limited):
            if b is not None:
                b.remove()
        containment.close()


def test_an_empty_slot_serves_the_next_job_and_one_with_a_survivor_is_never_reused():
    """Jobs without limits share cgroups one at a time: an empty slot goes back (`recycle`) and
    the next such job gets the same one; a slot something still runs in is refused, so it is
    removed (its survivor killed) and never handed out; a job with limits has its own."""
    from cc_executor.containment import Containment
    from cc_executor.containment.limits import Limits

    containment = Containment("auto")
    if containment.v2 is None:
        pytest.skip("no writable cgroup v2 tree here")
    survivor = None
    try:
        first = containment.box("one", Limits())
        assert first.recycle() and containment.slots.idle == 1
        second = containment.box("two", Limits())
        assert second.v2 == first.v2 and containment.slots.idle == 0
        limited = containment.box("three", Limits(processes=50))
        assert limited.slots is None and limited.v2.endswith("/job-three")
        assert not limited.recycle()
        assert limited.remove()
        second.enter()
        try:
            survivor = subprocess.Popen(["sleep", "30"], start_new_session=True)
        finally:
            assert second.leave()
        assert not second.recycle() and containment.slots.idle == 0
        assert second.remove() and not os.path.exists(second.v2)
        assert survivor.wait(10) == -9  # the removal killed what was left in it
        third = containment.box("four", Limits())
        assert third.v2 != second.v2  # a slot number is never reused
        assert third.recycle()
    finally:
        if survivor is not None and survivor.poll() is None:
            survivor.kill()
            survivor.wait(10)
        containment.close()
    assert not os.path.exists(containment.v2)


def test_a_slot_its_job_changed_is_never_handed_out_again():
    """A slot is kept only as it was made: one its job left frozen (the service steps into a
    slot to spawn, and would freeze itself), one with a cgroup below it, or one frozen while it
    waited, is never handed to the next job."""
    from cc_executor.containment import Containment, cgfs
    from cc_executor.containment.limits import Limits

    containment = Containment("auto")
    if containment.slots is None:
        pytest.skip("no slots here (no writable cgroup v2 tree, or controllers delegated)")
    try:
        frozen = containment.box("frozen", Limits())
        cgfs.write(os.path.join(frozen.v2, "cgroup.freeze"), "1")
        assert not frozen.recycle()
        cgfs.write(os.path.join(frozen.v2, "cgroup.freeze"), "0")
        assert frozen.remove()
        nested = containment.box("nested", Limits())
        os.mkdir(os.path.join(nested.v2, "below"))
        assert not nested.recycle() and nested.remove()
        kept = containment.box("kept", Limits())
        assert kept.recycle() and containment.slots.idle == 1
        cgfs.write(os.path.join(kept.v2, "cgroup.freeze"), "1")  # frozen while it waited
        later = containment.box("later", Limits())
        assert later.v2 not in (kept.v2, frozen.v2, nested.v2)
        cgfs.write(os.path.join(kept.v2, "cgroup.freeze"), "0")
        assert later.recycle()
    finally:
        containment.close()
    assert not os.path.exists(containment.v2)


FREEZE_MYSELF = ('echo 1 > "$1/$(basename "$(sed -n "s/^0:://p" /proc/self/cgroup)")'
                 '/cgroup.freeze"; sleep 30')


async def test_a_job_that_froze_its_cgroup_leaves_the_next_job_and_the_service_unharmed(
        services):
    """Review: a job froze its own cgroup (a slot) and was ended by its timeout; the next job
    without limits got the same slot, and the service, stepping into it to spawn, froze. Now
    the frozen slot is never handed out again: the next job runs, the service answers."""
    svc = service(services, "cgroup")
    mine = svc.health()["containment"]["cgroup_v2"]
    async with await ExecutorClient.connect(svc.url) as c:
        frozen = await c.execute(args=["sh", "-c", FREEZE_MYSELF, "sh", mine], timeout=1)
        assert frozen.reason == "timeout"
        for _ in range(3):
            done = await asyncio.wait_for(c.execute(args=["sh", "-c", "echo hi"]), 10)
            assert done.ok and done.stdout == b"hi\n"
    assert svc.health()["status"] == "ok"


async def test_a_crashed_fallback_services_adopted_daemon_is_ended_by_the_next(
        executor_service, tmp_path):
    """Review: fallback, an env-cleared daemon adopted by the service (kept: a running job may
    have made it), then the service is SIGKILLed: the daemon went to init, and no net of the
    next service (registry records name leaders, by marker) found it. The service now keeps a
    list of what it adopted in its run dir; the next one ends what a dead owner listed."""
    dirs = ["--run-dir", str(tmp_path / "run"), "--log-dir", str(tmp_path / "logs")]
    env = {"CC_EXECUTOR_CONTAINMENT": "fallback", "CC_EXECUTOR_KILL_GRACE": "1"}
    first = executor_service(*dirs, allow=ALLOW, env=env, default_dirs=False)
    daemons: list[int] = []
    try:
        async with await ExecutorClient.connect(first.url) as c:
            keeper = await c.start(args=["sleep", "30"])  # so the daemon is kept, unattributed
            events: list = []
            await c.execute(args=["python3", "-c", DAEMON, "60", "1", "0"],
                            on_event=events.append, timeout=30)
            daemons.append(stdout_pids(events)[0])
            listed = tmp_path / "run" / "adopted" / f"{first.pid}-{pid_ticks(first.pid)}.json"
            assert await asyncio.to_thread(
                wait_until, lambda: listed.exists() and str(daemons[0]) in listed.read_text(), 5)
            first.proc.kill()
            first.proc.wait(10)
        assert pid_alive(daemons[0]) and pid_alive(keeper.pid)
        second = executor_service(*dirs, allow=ALLOW, env=env, default_dirs=False)
        await gone_or_fail([daemons[0], keeper.pid], "what the crashed service left", 10.0)
        assert not listed.exists()
        assert "stale adopted processes ended 1" in second.stderr()
    finally:
        end_by_pid(daemons)


def pid_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])


def test_a_job_cgroup_the_spawner_is_still_in_is_never_killed_or_removed():
    """The guard behind the bare path: were the service ever left inside a job's cgroup (a
    failed `leave`), neither the job's kill nor its removal may take the service with it. Here
    the test process steps in on purpose and its way home is broken; both calls spare it."""
    from cc_executor.containment import Containment
    from cc_executor.containment.limits import Limits

    containment = Containment("auto")
    if containment.v2 is None:
        pytest.skip("no writable cgroup v2 tree here")
    home = containment.home
    box = containment.box("guard-test", Limits())
    slot = os.path.basename(box.v2)
    try:
        box.enter()
        home_fd, box.slots.home_fd = box.slots.home_fd, -1
        box.home = os.path.join(box.v2, "no-such-cgroup")  # `leave` cannot succeed
        box.kill()
        assert box.remove() is False  # refused, and we are alive to see it
        assert not box.recycle()  # nor handed to another job
        assert cgroup_v2_of("self").endswith(f"/{slot}")  # still inside, and alive
    finally:
        box.home, box.slots.home_fd = home, home_fd
        assert box.leave()
        box.remove()
        containment.close()
    assert not cgroup_v2_of("self").endswith(f"/{slot}")
