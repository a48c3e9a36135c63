"""Ending whole process trees, and the live-run registry that finds what a crashed owner left.

Every test names the pids it expects dead and checks them itself (tree.is_alive and psutil), on
top of the autouse leftover fixture.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest

from cc_executor import registry, tree
from cc_executor.process import EndReason, ProcessRunner, RunSpec, start
from cc_executor.registry import Registry
from test_process import BOTH_LOOPS, MiB, PY, Reader, assert_gone

pytestmark = pytest.mark.anyio


async def poll(predicate, timeout: float, what: str):
    """Poll `predicate` until truthy (returned) or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


# Shell: wait (bounded) until the last background job has exec'd `sleep`, i.e. is past setsid.
AWAIT_SLEEP = ('p=$!; for i in $(seq 500); do grep -q "(sleep)" /proc/$p/stat 2>/dev/null '
               '&& break; sleep 0.01; done; echo $p')


def kill_by_pid(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# ---- cancel kills the whole tree -------------------------------------------------------------

NESTED = "sh -c 'sleep 30 & sleep 30 & sleep 30 & sleep 30 & sleep 30 & wait'"


@BOTH_LOOPS
async def test_tree_of_20_processes_all_killed():
    # leader + 3 nested shells with 5 sleepers each + 1 sleeper = 20 processes.
    run = await start(RunSpec(shell=f"{NESTED} & {NESTED} & {NESTED} & sleep 30 & echo ready; wait"))
    r = Reader(run)
    members = await poll(lambda: (d := tree.descendants(run.pid)) and len(d) == 19 and d,
                         10, "19 descendants")
    await r.until(lambda: r.out == b"ready\n", 5, "ready")
    pids = members | {run.pid}
    assert all(tree.stat_fields(p)[2] == run.pgid for p in pids)
    assert run.cancel()
    end = await r.finish(15)
    assert end.reason is EndReason.CANCELLED
    assert end.killed == 20
    assert_gone(pids)


async def test_sigterm_ignored_gets_sigkill_after_grace():
    script = ("import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
              "print('ready', flush=True); time.sleep(30)")
    run = await start(RunSpec(argv=[PY, "-c", script], kill_grace=0.5))
    r = Reader(run)
    await r.until(lambda: r.out == b"ready\n", 10, "ready")
    t0 = time.monotonic()
    run.cancel()
    end = await r.finish(15)
    assert end.reason is EndReason.CANCELLED
    assert end.exit_code == -9 and end.signal == signal.SIGKILL
    assert 0.5 <= time.monotonic() - t0 < 6
    assert_gone([run.pid])


async def test_setsid_grandchild_killed_while_leader_alive():
    # The grandchild leaves the group and the session but is still below the leader.
    run = await start(RunSpec(shell="setsid sleep 30 & echo $!; wait"))
    r = Reader(run)
    await r.until(lambda: r.out.endswith(b"\n"), 5, "grandchild pid")
    grandchild = int(r.out)
    await poll(lambda: tree.stat_fields(grandchild)[2] == grandchild, 5, "setsid done")
    assert tree.stat_fields(grandchild)[2] != run.pgid
    run.cancel()
    end = await r.finish(15)
    assert end.reason is EndReason.CANCELLED and end.killed == 2
    assert_gone([run.pid, grandchild])


async def test_daemon_outside_group_and_parent_chain_found_by_marker_on_cancel():
    # setsid -f forks and its parent exits at once: the daemon is re-parented to init and sits in
    # its own session, with its output on /dev/null (it reports its pid on fd 3, then closes it).
    # Only the marker variable in its environment ties it to this run.
    run = await start(RunSpec(shell="setsid -f sh -c 'echo $$ >&3; exec sleep 30 3>&-' "
                                    "3>&1 </dev/null >/dev/null 2>&1; exec sleep 30"))
    r = Reader(run)
    await r.until(lambda: r.out.endswith(b"\n"), 5, "daemon pid")
    daemon = int(r.out)
    await poll(lambda: tree.stat_fields(daemon)[1] != run.pid and
               tree.stat_fields(daemon)[2] == daemon, 5, "daemon detached")
    assert daemon not in tree.descendants(run.pid)
    assert tree.marked(run.run_id) >= {daemon}
    run.cancel()
    end = await r.finish(15)
    assert end.reason is EndReason.CANCELLED and end.killed == 2
    assert end.duration < run.spec.kill_grace  # by the kill itself, not a later pipe rescue
    assert_gone([run.pid, daemon])


@BOTH_LOOPS
@pytest.mark.parametrize("consumer", ["reading", "held_back"])
async def test_writers_at_full_speed_killed(consumer):
    run = await start(RunSpec(shell="yes & yes >&2 & exec cat /dev/zero", max_buffer=2 * MiB))
    pids = await poll(lambda: (d := tree.descendants(run.pid)) and len(d) == 2 and d, 5, "writers")
    pids.add(run.pid)
    if consumer == "held_back":
        await poll(lambda: run._held_back, 10, "hold back")
        run.cancel()
        r = Reader(run, keep=False)
    else:
        r = Reader(run, keep=False)
        await r.until(lambda: r.size["stdout"] > 16 * MiB and r.size["stderr"] > MiB, 20, "output")
        run.cancel()
    end = await r.finish(20)
    assert end.reason is EndReason.CANCELLED
    assert end.stdout_bytes > 0
    if consumer == "reading":
        assert end.stderr_bytes > 0
    # Held back: stdout alone can fill the buffer before the stderr writer was ever scheduled
    # on a loaded machine, so stderr may legitimately be empty there.
    assert_gone(pids)


# ---- the leader exits by itself --------------------------------------------------------------

@BOTH_LOOPS
async def test_leader_exit_kills_background_child_in_group():
    run = await start(RunSpec(shell="sleep 30 & echo $!; echo done"))
    r = Reader(run)
    end = await r.finish(10)
    child_pid, done = r.out.split()
    assert done == b"done"
    assert end.reason is EndReason.EXITED and end.exit_code == 0
    assert end.killed == 1
    assert end.duration < 2.0  # SIGTERM suffices: no wait for kill_grace (3 s)
    assert_gone([int(child_pid)])


async def test_leader_exit_background_child_ignoring_sigterm():
    run = await start(RunSpec(shell="trap '' TERM; sleep 30 & echo $!", kill_grace=0.3))
    r = Reader(run)
    end = await r.finish(10)
    assert end.reason is EndReason.EXITED and end.exit_code == 0  # the leader's own status
    assert 0.3 <= end.duration < 6
    assert_gone([int(r.out)])


async def test_escaped_grandchild_holding_the_pipe_is_found_by_marker():
    # The leader exits; its setsid'd child is outside the group but keeps stdout open.
    run = await start(RunSpec(shell=f"setsid sleep 30 & {AWAIT_SLEEP}; echo leader-done",
                              kill_grace=0.3))
    r = Reader(run)
    end = await r.finish(10)
    pid, text = r.out.split()
    assert text == b"leader-done"
    assert end.reason is EndReason.EXITED and end.exit_code == 0
    assert end.killed == 1 and not end.leftover_pipe
    assert end.duration >= 0.3  # found after the drain waited kill_grace for EOF
    assert_gone([int(pid)])


@pytest.mark.parametrize("consumer", ["away", "keeping_up"])
@pytest.mark.parametrize("capture_to", ["pipe", "file"])
async def test_escaped_writer_flooding_after_leader_exit_is_ended_with_memory_bounded(capture_to,
                                                                                   consumer):
    # The leader exits at once; its setsid'd child, outside the group, writes as fast as it can,
    # while the consumer is away or keeps up. The run must find it by marker and end it at once
    # (not after kill_grace), keep what it holds in memory bounded all along, and still deliver
    # every byte it read, in order.
    from cc_executor.process import _DRAIN_ALLOWANCE
    max_buffer = 4 * MiB
    await_cat = AWAIT_SLEEP.replace("(sleep)", "(cat)").replace("echo $p", "echo $p >&2")
    run = await start(RunSpec(shell=f"setsid cat /dev/zero & {await_cat}",
                              capture_to=capture_to, max_buffer=max_buffer, kill_grace=5))
    peak = [0]
    away = asyncio.Event()

    async def pace(count: int):
        if count == 1 and consumer == "away":
            t_end = time.monotonic() + 1.5
            while time.monotonic() < t_end:  # away from the events, while the flood goes on
                peak[0] = max(peak[0], run._queued)
                await asyncio.sleep(0.01)
            away.set()

    err = bytearray()
    r = Reader(run, keep=False, pace=pace,
               on_batch=lambda b: err.extend(b.data) if b.stream == "stderr" else None)
    await poll(lambda: err.endswith(b"\n"), 10, "writer pid")
    writer = int(err)
    end = await r.finish(30)
    assert away.is_set() or consumer == "keeping_up"
    assert end.duration < 4  # found by what it wrote, not after kill_grace (5 s)
    assert end.reason is EndReason.EXITED and end.exit_code == 0
    assert end.killed >= 1 and not end.leftover_pipe
    assert r.size["stdout"] > 0
    limit = max_buffer + (2 * _DRAIN_ALLOWANCE if capture_to == "pipe" else 0) + MiB
    assert peak[0] <= limit, (peak[0] / MiB, limit / MiB)
    assert_gone([writer])


async def test_unmarked_pipe_holder_ends_run_with_leftover_pipe():
    # Out of every net: not in the group, not below the leader once it exits, marker removed.
    # The run must still end (after the grace), say so, and leave the process to its owner: us.
    run = await start(RunSpec(
        shell=f"env -u {tree.MARKER_VAR} setsid sleep 30 & {AWAIT_SLEEP}", kill_grace=0.3))
    r = Reader(run)
    try:
        end = await r.finish(10)
        assert end.reason is EndReason.EXITED and end.leftover_pipe is True
        assert end.killed == 0 and end.duration < 5
        holder = int(r.out)
        assert tree.is_alive(holder)
    finally:
        kill_by_pid([int(x) for x in r.out.split()])


# ---- subreaper -------------------------------------------------------------------------------

SUBREAPER_OWNER = r"""
import asyncio, json, sys
from cc_executor import registry, tree
from cc_executor.registry import Registry
from cc_executor.process import RunSpec, start

pidfile = sys.argv[1]
# The leader waits (bounded) until the daemon has been adopted by its own parent, the subreaper,
# then reports the daemon's parent and exits normally.
shell = (f"setsid -f sh -c 'echo $$ > {pidfile}; exec sleep 60' </dev/null >/dev/null 2>&1; "
         f"for i in $(seq 500); do [ -s {pidfile} ] && break; sleep 0.01; done; d=$(cat {pidfile}); "
         f"for i in $(seq 500); do [ $(cut -d' ' -f4 /proc/$d/stat) = $PPID ] && break; "
         f"sleep 0.01; done; echo adopted-by $(cut -d' ' -f4 /proc/$d/stat)")

async def main():
    run = await start(RunSpec(shell=shell, kill_grace=1))
    out, err, end = await run.collect()
    daemon = int(open(pidfile).read())
    print(json.dumps({"out": out.decode(), "reason": end.reason.value, "killed": end.killed,
                      "daemon": daemon, "alive": tree.is_alive(daemon),
                      "subreaper": tree.is_subreaper()}))

assert tree.become_subreaper()
asyncio.run(main())
"""


async def test_subreaper_catches_double_forked_daemon(tmp_path):
    """The daemon left the group, closed our pipes and its parent exited before the leader did.

    Without a subreaper it would go to init and outlive a normal exit; as subreaper, the owner
    adopts it and ends it by its marker before the RunEnd.
    """
    pidfile = tmp_path / "daemon.pid"
    run = await start(RunSpec(argv=[PY, "-c", SUBREAPER_OWNER, str(pidfile)], timeout=30))
    r = Reader(run)
    end = await r.finish(40)
    assert end.exit_code == 0, r.err.decode()
    report = json.loads(r.out)
    try:
        assert report["subreaper"] is True
        assert report["out"] == f"adopted-by {run.pid}\n" and report["reason"] == "exited"
        assert report["killed"] == 1 and report["alive"] is False
        assert_gone([report["daemon"]])
    finally:
        kill_by_pid([report["daemon"]])


# ---- registry --------------------------------------------------------------------------------

async def test_registry_record_lives_exactly_as_long_as_the_run(tmp_path):
    runner = ProcessRunner(tmp_path)
    run = await runner.start(RunSpec(argv=["sleep", "30"], cwd=str(tmp_path)))
    (journal,) = (tmp_path / "runs").iterdir()
    assert journal.name.startswith(f"{os.getpid()}-{tree.stat_fields(os.getpid())[3]}-")
    assert journal.suffix == ".jsonl"
    record = json.loads(journal.read_text())
    assert [r.__dict__ for r in Registry(tmp_path).records()] == [record]
    assert record == {
        "run_id": run.run_id, "pid": run.pid, "pgid": run.pgid,
        "started_at": record["started_at"],
        "argv": ["sleep", "30"], "cwd": str(tmp_path), "owner_pid": os.getpid(),
        "owner_start_ticks": tree.stat_fields(os.getpid())[3], "marker": run.run_id,
    }
    assert abs(record["started_at"] - time.time()) < 60
    # Another runner on the same directory leaves a live owner's run alone.
    assert ProcessRunner(tmp_path).reaped == []
    assert tree.is_alive(run.pid)
    run.cancel()
    await asyncio.wait_for(run.wait(), 10)
    await asyncio.sleep(0)  # the record's end is written on the loop turn after the run's
    assert Registry(tmp_path).records() == []
    await runner.shutdown()
    assert list((tmp_path / "runs").iterdir()) == []  # a clean shutdown leaves no journal


def test_registry_journal_is_compacted_to_its_live_runs(tmp_path, monkeypatch):
    """Each start and end is one appended line; past COMPACT_AT bytes the journal is rewritten
    with the live runs only, and a torn last line (a crash mid-write) is skipped."""
    monkeypatch.setattr(registry, "COMPACT_AT", 4096)
    reg = Registry(tmp_path)
    for i in range(200):
        reg.add(f"run{i}", 100000 + i, ["echo", str(i)], None, f"run{i}")
        if i % 10:
            reg.remove(f"run{i}")
    live = sorted(r.run_id for r in reg.records())
    assert live == sorted(f"run{i}" for i in range(0, 200, 10))
    assert reg.path.stat().st_size < 2 * 4096 + 2 * sum(
        len(line) for line in reg.path.read_bytes().splitlines(keepends=True)[:20])
    with open(reg.path, "ab") as f:
        f.write(b'{"run_id": "torn", "pid"')
    assert sorted(r.run_id for r in Registry(tmp_path).records()) == live


def test_two_runners_of_one_process_keep_journals_of_their_own(tmp_path, monkeypatch):
    """Review: two runners of one process on one directory shared a journal, so one's clean
    shutdown deleted the other's live records. Each has its own now; and a compaction a crash
    left half done (a `.tmp` of a dead owner) is cleaned up with the dead owner's journal."""
    monkeypatch.setattr(registry, "COMPACT_AT", 256)
    a, b = Registry(tmp_path), Registry(tmp_path)
    assert a.path != b.path
    b.add("b-run", 2**22 + 1, ["sleep", "9"], None, "b-run")
    for i in range(10):
        a.add(f"a{i}", 2**22 + 2, ["echo"], None, f"a{i}")
        a.remove(f"a{i}")
    a.close()
    assert not a.path.exists()
    assert [r.run_id for r in Registry(tmp_path).records()] == ["b-run"]
    b.remove("b-run")
    b.close()
    stale = tmp_path / "runs" / f"{2**22 + 7}-1-1.tmp"  # past any pid: a dead owner
    stale.write_text("half a compaction")
    assert Registry(tmp_path).reap_stale() == []
    assert list((tmp_path / "runs").iterdir()) == []


async def test_an_earlier_format_record_of_a_dead_owner_is_still_reaped(tmp_path):
    """A `<run_id>.json` left by a crashed service of the earlier format: its run is ended."""
    orphan = await start(RunSpec(argv=["sleep", "60"]))
    dead = await start(RunSpec(argv=["true"]))
    await dead.wait()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "oldrun.json").write_text(json.dumps({
        "run_id": "oldrun", "pid": orphan.pid, "pgid": orphan.pgid, "started_at": time.time(),
        "argv": ["sleep", "60"], "cwd": None, "owner_pid": dead.pid,
        "owner_start_ticks": 1, "marker": orphan.run_id}))
    try:
        runner = ProcessRunner(tmp_path)
        assert [(x["run_id"], x["pid"], x["signalled"]) for x in runner.reaped] == [
            ("oldrun", orphan.pid, 1)]
        await asyncio.wait_for(orphan.wait(), 10)  # (its status went to the reaper's waitpid)
        assert list((tmp_path / "runs").iterdir()) == []
    finally:
        orphan.cancel()
        await orphan.wait()


CRASHING_OWNER = r"""
import asyncio, sys
from cc_executor.process import ProcessRunner, RunSpec

async def main():
    runner = ProcessRunner(sys.argv[1])
    run = await runner.start(RunSpec(argv=["sleep", "60"]))
    print(run.pid, run.run_id, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


@pytest.mark.parametrize("where", ["in_event_loop", "in_plain_thread"])
async def test_stale_record_of_crashed_owner_is_reaped(tmp_path, where):
    owner = await start(RunSpec(argv=[PY, "-c", CRASHING_OWNER, str(tmp_path)]))
    r = Reader(owner)
    await r.until(lambda: r.out.endswith(b"\n"), 15, "the owner's run")
    orphan_s, run_id = r.out.split()
    orphan = int(orphan_s)
    os.kill(owner.pid, signal.SIGKILL)  # the owner crashes without ending its run
    end = await r.finish(10)
    assert end.reason is EndReason.SIGNALLED
    assert tree.is_alive(orphan)
    assert [r.run_id for r in Registry(tmp_path).records()] == [run_id.decode()]
    try:
        if where == "in_event_loop":
            runner = ProcessRunner(tmp_path)
        else:
            runner = await asyncio.to_thread(ProcessRunner, tmp_path)
        assert [(x["run_id"], x["pid"], x["survivors"]) for x in runner.reaped] == [
            (run_id.decode(), orphan, 0)]
        assert_gone([orphan])
        assert list((tmp_path / "runs").iterdir()) == []
    finally:
        kill_by_pid([orphan])


