"""Jobs admitted or abandoned while their `execute` reply is still waiting to be written.

A client that reads slowly holds the server's sends back: with a flood of output on the same
connection, the reply to a later `execute` waits behind it. These tests build exactly that
(a job that writes without end, a client that stops reading, a small `max_buffer` so the flood
backs up to the child at once) and then either let the queued job in or drop the connection.
Whether the server's sends are stuck is read from the flooding child: once it sits in
`pipe_write`, the runner stopped reading its pipe, which it does only while the job's pump is
stuck writing to the socket.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from websockets.asyncio.client import connect

from cc_executor.client import ExecutorClient
from service_fixture import pid_alive, wait_gone

from conftest import wait_until

pytestmark = pytest.mark.anyio

FLOOD = ("import sys\n"
         "chunk = b'x' * 65536\n"
         "while True:\n"
         "    sys.stdout.buffer.write(chunk); sys.stdout.flush()\n")
ENV = {"CC_EXECUTOR_MAX_JOBS": "2", "CC_EXECUTOR_MAX_BUFFER": "128K"}


def wait_file(path) -> list[str]:
    """A job that exits once `path` exists (bounded: 30 s)."""
    return ["python3", "-c", "import os, sys, time\n"
            f"for _ in range(3000):\n    if os.path.exists({str(path)!r}): sys.exit(0)\n"
            "    time.sleep(0.01)\nsys.exit(1)\n"]


def blocked_in_write(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return "pipe_write" in f.read()
    except OSError:
        return False


def stays_blocked(pid: int) -> bool:
    """Blocked in write() on ten polls in a row, 20 ms apart: a server still reading would
    drain the pipe (up to 1 MiB a read, whenever it is readable) long before that."""
    for _ in range(10):
        if not blocked_in_write(pid):
            return False
        time.sleep(0.02)
    return True


async def start_flood(svc):
    """A raw connection that starts FLOOD, reads its reply, then stops reading. Returns the
    socket and the flooding child's pid once the server's sends to it are stuck."""
    ws = await connect(svc.url, compression=None, max_queue=1, max_size=2**24,
                       ping_interval=None)
    assert json.loads(await ws.recv())["method"] == "connected"
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "execute",
                              "params": {"args": ["python3", "-c", FLOOD]}}))
    reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert reply["result"]["status"] == "started", reply
    pid = reply["result"]["pid"]
    assert await asyncio.to_thread(wait_until, lambda: stays_blocked(pid), 15), \
        "the flood never backed up to the child"
    return ws, reply["result"]["job_id"], pid


async def test_a_job_admitted_while_its_queued_reply_waits_starts_once(executor_service,
                                                                        tmp_path):
    svc = executor_service(allow=["python3", "echo", "sleep"], env=ENV)
    release = tmp_path / "release"
    async with await ExecutorClient.connect(svc.url) as other:
        holder = await other.start(args=wait_file(release))
        ws, flood_id, flood_pid = await start_flood(svc)
        assert svc.health()["jobs"] == {"running": 2, "queued": 0}
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "execute",
                                  "params": {"args": ["echo", "late"]}}))
        assert await asyncio.to_thread(
            wait_until, lambda: svc.health()["jobs"]["queued"] == 1, 10)
        # The holder ends: the queued job is admitted while its `queued` reply still waits.
        release.write_text("go")
        assert (await asyncio.wait_for(holder.result(), 15)).ok
        assert await asyncio.to_thread(
            wait_until, lambda: svc.health()["jobs"] == {"running": 2, "queued": 0}, 10)

        # Now read everything; cancel the flood once the reply is in.
        msgs: list[dict] = []
        job_id = None
        deadline = time.monotonic() + 30
        done: set[str] = set()
        while not (job_id and {job_id, flood_id} <= done):
            msg = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
            if msg.get("method") == "process.output" and msg["params"]["job_id"] == flood_id:
                continue
            msgs.append(msg)
            if msg.get("id") == 2:
                assert msg["result"]["status"] == "queued", msg
                job_id = msg["result"]["job_id"]
                await ws.send(json.dumps({"jsonrpc": "2.0", "id": 3, "method": "control",
                                          "params": {"type": "CANCEL", "job_id": flood_id}}))
            if msg.get("method") == "process.completed":
                done.add(msg["params"]["job_id"])
        await ws.close()
    mine = [m for m in msgs if m.get("params", {}).get("job_id") == job_id]
    methods = [m["method"] for m in mine]
    assert methods.count("process.started") == 1, methods
    assert methods[-1] == "process.completed" and methods.count("process.completed") == 1
    end = mine[-1]["params"]
    assert (end["reason"], end["exit_code"]) == ("exited", 0), end
    assert "".join(m["params"]["data"] for m in mine if m["method"] == "process.output") \
        == "late\n"
    # Every slot came back, none twice: max_jobs holds again.
    assert await asyncio.to_thread(
        wait_until, lambda: svc.health()["jobs"] == {"running": 0, "queued": 0}, 10), \
        svc.health()
    async with await ExecutorClient.connect(svc.url) as c:
        jobs = [await c.start(args=["sleep", "30"]) for _ in range(3)]
        assert [j.status for j in jobs] == ["started", "started", "queued"]
        assert svc.health()["jobs"] == {"running": 2, "queued": 1}
        for j in jobs:
            await j.cancel()
        for j in jobs:
            assert (await asyncio.wait_for(j.result(), 10)).reason == "cancelled"
    assert wait_gone([flood_pid] + [j.pid for j in jobs if j.pid], 5) == []


async def test_disconnect_while_an_execute_reply_waits_frees_the_slot(executor_service):
    svc = executor_service(allow=["python3", "sleep"], env=ENV)
    ws, flood_id, flood_pid = await start_flood(svc)
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "execute",
                              "params": {"args": ["sleep", "30"]}}))
    # Spawned at once (one slot was free), but its reply cannot be written.
    assert await asyncio.to_thread(
        wait_until, lambda: svc.health()["jobs"]["running"] == 2, 10)

    def sleeper():
        return [e for e in svc.event_log() if e["event"] == "started"
                and e.get("job_id") != flood_id]

    started = await asyncio.to_thread(wait_until, sleeper, 10)
    assert started, svc.event_log()
    sleep_pid, sleep_job = started[0]["pid"], started[0]["job_id"]
    assert pid_alive(sleep_pid)
    ws.transport.abort()  # the TCP connection drops, no closing handshake
    await ws.close()
    assert await asyncio.to_thread(wait_gone, [flood_pid, sleep_pid], 15) == []
    assert await asyncio.to_thread(
        wait_until, lambda: svc.health()["jobs"] == {"running": 0, "queued": 0}, 10), \
        svc.health()

    def completions():
        return [e for e in svc.event_log() if e["event"] == "completed"
                and e.get("job_id") in (flood_id, sleep_job)]

    done = await asyncio.to_thread(wait_until, lambda: len(completions()) == 2, 10)
    assert done, completions()
    assert {e["reason"] for e in completions()} == {"cancelled"}
    # The slots are really free: two jobs start at once (max_jobs 2).
    async with await ExecutorClient.connect(svc.url) as c:
        jobs = [await c.start(args=["sleep", "30"]) for _ in range(2)]
        assert [j.status for j in jobs] == ["started", "started"]
        for j in jobs:
            await j.cancel()
            assert (await asyncio.wait_for(j.result(), 10)).reason == "cancelled"
    assert wait_gone([j.pid for j in jobs], 5) == []
