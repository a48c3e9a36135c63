"""Load-aware admission through the real service: queueing, its reasons, cancel, timeout, SIGHUP.

A max load of 0.01 is exceeded by any real host, so jobs queue without having to load the machine
(a 1-minute average would take a minute to rise and as long to fall). To let queued jobs in, the
test rewrites the `--env-file` and sends SIGHUP, which applies the new limits to the running
service, exactly as an operator would.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest
from websockets.asyncio.client import connect

from cc_executor import protocol
from cc_executor.client import ExecutorClient, ExecutorError

from conftest import wait_until

pytestmark = pytest.mark.anyio

OVERLOADED = {"CC_EXECUTOR_THROTTLE": "1", "CC_EXECUTOR_MAX_LOAD": "0.01"}


async def next_event(job, timeout: float = 10.0):
    it = job.__aiter__()
    return await asyncio.wait_for(it.__anext__(), timeout)


async def test_overloaded_host_queues_and_cancel_never_starts(executor_service):
    svc = executor_service(allow=["echo"], env=OVERLOADED)
    async with await ExecutorClient.connect(svc.url) as c:
        first = await c.start(args=["echo", "one"])
        second = await c.start(args=["echo", "two"])
        assert (first.status, first.position, second.position) == ("queued", 1, 2)
        assert first.job_id and first.pid is None
        for job in (first, second):
            ev = await next_event(job)
            assert ev.kind == "queued" and ev.params["job_id"] == job.job_id
            assert "load" in ev.params["reason"] and "> max 0.01" in ev.params["reason"]
        h = svc.health()
        assert h["jobs"] == {"running": 0, "queued": 2} and h["throttle"]["max_load"] == 0.01
        rows = await c.jobs()
        assert [(j["state"], j["position"]) for j in rows] == [("queued", 1), ("queued", 2)]
        protocol.JobsResult.model_validate({"jobs": rows})

        with pytest.raises(ExecutorError) as e:
            await c.control("PAUSE", first.job_id)
        assert e.value.code == protocol.JOB_NOT_RUNNING and "queued" in e.value.message
        assert await c.control("CANCEL", first.job_id) == {"status": "cancelled",
                                                          "job_id": first.job_id}
        r1 = await asyncio.wait_for(first.result(), 10)
        assert (r1.status, r1.reason, r1.exit_code, r1.pid) == ("cancelled", "cancelled", -1, None)
        assert await c.control("CANCEL") == {"status": "cancelled", "job_id": second.job_id}
        r2 = await asyncio.wait_for(second.result(), 10)
        assert r2.reason == "cancelled" and r2.stdout == b""
        assert await c.jobs() == []
    log = svc.event_log()
    for r in (r1, r2):
        kinds = [e["event"] for e in log if e.get("job_id") == r.job_id]
        assert kinds == ["queued", "completed"]  # never started
        assert [e["reason"] for e in log if e.get("job_id") == r.job_id][-1] == "cancelled"


async def test_throttle_off_starts_at_once(executor_service):
    svc = executor_service(allow=["echo"], env={**OVERLOADED, "CC_EXECUTOR_THROTTLE": "0"})
    async with await ExecutorClient.connect(svc.url) as c:
        job = await c.start(args=["echo", "now"])
        assert job.status == "started" and job.pid
        assert (await job.result()).stdout == b"now\n"


async def test_memory_floor_queues_with_a_memory_reason(executor_service):
    svc = executor_service(allow=["echo"], env={"CC_EXECUTOR_THROTTLE": "1",
                                                "CC_EXECUTOR_MAX_LOAD": "1000",
                                                "CC_EXECUTOR_MIN_FREE_MEM": "1000T",
                                                "CC_EXECUTOR_PROGRESS_INTERVAL": "0.3"})
    async with await ExecutorClient.connect(svc.url) as c:
        job = await c.start(args=["echo", "x"])
        assert job.status == "queued"
        ev = await next_event(job)
        assert ev.kind == "queued"
        assert "free memory" in ev.params["reason"] and "< floor" in ev.params["reason"]
        assert "load" not in ev.params["reason"]
        # A queued job is silent too: keepalives come while it waits.
        ev = await next_event(job)
        assert ev.kind == "progress" and ev.params["state"] == "queued", ev
        protocol.ProgressParams.model_validate(ev.params)
        await job.cancel()
        assert (await job.result()).reason == "cancelled"


async def test_queue_timeout_ends_the_job_with_a_clear_message(executor_service):
    svc = executor_service(allow=["echo"], env={**OVERLOADED, "CC_EXECUTOR_QUEUE_TIMEOUT": "0.5"})
    async with connect(svc.url) as ws:
        assert json.loads(await ws.recv())["method"] == "connected"
        t0 = time.monotonic()
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "execute",
                                  "params": {"command": "echo late"}}))
        reply = json.loads(await ws.recv())
        assert reply["id"] == 1 and reply["result"]["status"] == "queued"
        job_id = reply["result"]["job_id"]
        queued = json.loads(await ws.recv())
        assert queued["method"] == "process.queued" and queued["params"]["job_id"] == job_id
        done = json.loads(await asyncio.wait_for(ws.recv(), 10))
        waited = time.monotonic() - t0
    assert done["method"] == "process.completed"
    p = done["params"]
    assert (p["job_id"], p["status"], p["reason"], p["exit_code"]) == (
        job_id, "queue_timeout", "queue_timeout", -1)
    assert "0.5 s" in p["error"] and "queue" in p["error"] and "load" in p["error"]
    protocol.CompletedParams.model_validate(p)  # the documented shape, nothing else
    assert 0.5 <= waited < 5
    # The event log is written beside the notification, not before it: poll, bounded.
    events = wait_until(lambda: [e["event"] for e in svc.event_log()
                                 if e.get("job_id") == job_id][1:], 5.0)
    assert ["queued", *events] == ["queued", "completed"]


async def test_sighup_reload_admits_the_queue_in_fifo_order(executor_service, tmp_path):
    env_file = tmp_path / "service.env"
    env_file.write_text("CC_EXECUTOR_THROTTLE=1\nCC_EXECUTOR_MAX_LOAD=0.01\n"
                        "CC_EXECUTOR_MAX_JOBS=1\n")
    # The environment would win over the file: keep throttle out of it.
    svc = executor_service(allow=["echo"], env_file=env_file,
                           env={"CC_EXECUTOR_THROTTLE": None})
    n = 10
    async with await ExecutorClient.connect(svc.url) as c:
        jobs = [await c.start(args=["echo", f"job {i}"]) for i in range(n)]
        assert [j.status for j in jobs] == ["queued"] * n
        assert [j.position for j in jobs] == list(range(1, n + 1))
        order: list[tuple[str, str]] = []
        results = asyncio.ensure_future(asyncio.gather(*(
            j.result(on_event=lambda ev: order.append((ev.kind, ev.params["job_id"])))
            for j in jobs)))

        # A bad file changes nothing and says why.
        env_file.write_text("CC_EXECUTOR_THROTTLE=1\nCC_EXECUTOR_MAX_LOAD=banana\n")
        svc.signal(signal.SIGHUP)
        assert await asyncio.to_thread(
            wait_until, lambda: "settings not reloaded" in svc.stderr(), 10), svc.stderr()
        assert "banana" in svc.stderr() and svc.alive()
        assert svc.health()["jobs"]["queued"] == n

        env_file.write_text("CC_EXECUTOR_THROTTLE=1\nCC_EXECUTOR_MAX_LOAD=1000\n"
                            "CC_EXECUTOR_MAX_JOBS=1\n")
        svc.signal(signal.SIGHUP)
        done = await asyncio.wait_for(results, 30)
    assert [r.stdout for r in done] == [f"job {i}\n".encode() for i in range(n)]
    assert all(r.ok and r.queued for r in done)
    ids = [j.job_id for j in jobs]
    assert [j for kind, j in order if kind == "started"] == ids
    assert [j for kind, j in order if kind == "completed"] == ids
    assert len([1 for kind, _ in order if kind == "completed"]) == n
    assert "SIGHUP: max_load 0.01 -> 1000" in svc.stderr()
    (reload,) = [e for e in svc.event_log() if e["event"] == "reload"]
    assert reload["changed"] == {"max_load": {"from": "0.01", "to": "1000"}}
    assert reload["queued_jobs"] == n
    assert svc.health()["throttle"]["max_load"] == 1000
