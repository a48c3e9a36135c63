"""Control acts at once whatever the connection's output backlog (issue 11).

Two jobs flood output on one connection whose client has stopped reading, so every send to it
waits. PAUSE, RESUME and CANCEL of each job must still act right away: the reply may wait, the
signal may not. Latency is read from the server's own record of the action (the event log's
`at`, the moment the signal went to the group) against the moment the client sent the frame
(same host, same clock), so a slow CI host cannot make it flake by delaying our reads.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from conftest import wait_until
from service_fixture import pid_state, wait_gone
from test_server_races import FLOOD, stays_blocked
from websockets.asyncio.client import connect

pytestmark = pytest.mark.anyio

ENV = {"CC_EXECUTOR_MAX_BUFFER": "128K"}
LIMIT = 1.0  # seconds from the client's send to the server's action


async def start_floods(svc, n: int):
    ws = await connect(svc.url, compression=None, max_queue=1, max_size=2**24,
                       ping_interval=None)
    assert json.loads(await ws.recv())["method"] == "connected"
    for i in range(n):
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": i, "method": "execute",
                                  "params": {"args": ["python3", "-c", FLOOD]}}))
    jobs: dict[int, tuple[str, int]] = {}
    deadline = time.monotonic() + 15
    while len(jobs) < n:  # read until both replies are in; output frames may come between
        msg = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
        if "id" in msg:
            assert msg["result"]["status"] == "started", msg
            jobs[msg["id"]] = (msg["result"]["job_id"], msg["result"]["pid"])
    ids = [jobs[i] for i in range(n)]
    for _, pid in ids:  # now stop reading: every send of the server backs up
        assert await asyncio.to_thread(wait_until, lambda p=pid: stays_blocked(p), 15), \
            "the flood never backed up to the child"
    return ws, ids


def acted(svc, kind: str, job_id: str) -> float | None:
    for e in svc.event_log():
        if e["event"] == kind and e.get("job_id") == job_id:
            return e["at"]
    return None


async def control(ws, svc, rid: int, kind: str, job_id: str) -> float:
    """Send one control; return the seconds until the server acted (by its own timestamp)."""
    sent = time.time()
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "method": "control",
                              "params": {"type": kind, "job_id": job_id}}))
    at = await asyncio.to_thread(wait_until, lambda: acted(svc, kind.lower(), job_id), 10)
    assert at is not None, f"{kind} of {job_id} never acted (the frame was not even read)"
    return at - sent


async def test_pause_resume_cancel_act_at_once_behind_a_backlog(executor_service):
    svc = executor_service(allow=["python3"], env=ENV)
    ws, [(a, pid_a), (b, pid_b)] = await start_floods(svc, 2)
    try:
        took = {"PAUSE b": await control(ws, svc, 10, "PAUSE", b)}
        assert await asyncio.to_thread(wait_until, lambda: pid_state(pid_b) == "T", 5)
        took["RESUME b"] = await control(ws, svc, 11, "RESUME", b)
        took["CANCEL a"] = await control(ws, svc, 12, "CANCEL", a)
        took["CANCEL b"] = await control(ws, svc, 13, "CANCEL", b)
        assert all(t < LIMIT for t in took.values()), took
        # Both trees are gone while the client still reads nothing.
        assert await asyncio.to_thread(wait_gone, [pid_a, pid_b], 10) == []
    finally:
        ws.transport.abort()
        await ws.close()
    assert await asyncio.to_thread(
        wait_until, lambda: svc.health()["jobs"] == {"running": 0, "queued": 0}, 10)
