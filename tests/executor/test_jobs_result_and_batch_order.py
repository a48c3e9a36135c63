"""What the review of the wire refactor found untested: the `jobs` rows' shape, the order of a
batch's reply against its queued jobs' notifications, and a client that meets a notification its
models refuse."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from websockets.asyncio.client import connect

from cc_executor import protocol
from cc_executor.client import ExecutorClient
from service_fixture import ServiceFactory

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    """One job at a time, so a second one queues."""
    factory = ServiceFactory(tmp_path_factory.mktemp("order"))
    server = factory(allow=["echo", "sleep"], env={"CC_EXECUTOR_MAX_JOBS": "1"})
    yield server
    problems = factory.close()
    assert not problems, problems


async def test_a_running_row_has_no_position_and_a_queued_row_has_one(svc):
    async with await ExecutorClient.connect(svc.url) as client:
        running = await client.start(args=["sleep", "30"])
        queued = await client.start(args=["echo", "later"])
        assert queued.queued
        rows = {row["job_id"]: row for row in await client.jobs()}
        assert "position" not in rows[running.job_id]
        assert rows[running.job_id]["state"] == "running"
        assert rows[queued.job_id]["position"] == 1 and rows[queued.job_id]["state"] == "queued"
        await queued.cancel()
        await running.cancel()
        assert (await queued.result()).reason == "cancelled"
        assert (await running.result()).reason == "cancelled"


async def test_a_batch_reply_precedes_the_completion_of_a_queued_job_it_cancelled(svc):
    async with await ExecutorClient.connect(svc.url) as other:
        holder = await other.start(args=["sleep", "30"])  # takes the only slot
        ws = await connect(svc.url, open_timeout=10, compression=None)
        async with ws:
            assert json.loads(await ws.recv())["method"] == "connected"
            await ws.send(json.dumps([
                {"jsonrpc": "2.0", "id": 1, "method": "execute", "params": {"args": ["echo"]}},
                {"jsonrpc": "2.0", "id": 2, "method": "control", "params": {"type": "CANCEL"}},
            ]))
            first = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert isinstance(first, list), first  # before the job's process.completed
            execute, control = sorted(first, key=lambda r: r["id"])
            assert execute["result"]["status"] == "queued"
            assert control["result"] == {"status": "cancelled",
                                         "job_id": execute["result"]["job_id"]}
            deadline = time.monotonic() + 10
            while True:
                msg = json.loads(await asyncio.wait_for(
                    ws.recv(), max(0.01, deadline - time.monotonic())))
                if msg.get("method") == protocol.PROCESS_COMPLETED:
                    break
            assert msg["params"]["job_id"] == execute["result"]["job_id"]
            assert msg["params"]["reason"] == "cancelled"
        await holder.cancel()
        assert (await holder.result()).reason == "cancelled"


async def test_a_notification_the_models_refuse_still_reaches_its_job_untyped(svc):
    async with await ExecutorClient.connect(svc.url) as client:
        job = await client.start(args=["sleep", "30"])
        # A newer server's value this client's models do not know (a progress state "paused").
        client._route(protocol.PROCESS_PROGRESS, {"job_id": job.job_id, "state": "paused",
                                                  "elapsed": 1.0, "silent_for": 1.0})
        await job.cancel()
        events = [ev async for ev in job]
        odd = [ev for ev in events if ev.kind == "progress"]
        assert len(odd) == 1 and odd[0].message is None and odd[0].params["state"] == "paused"
        assert events[-1].kind == "completed" and events[-1].message.reason == "cancelled"
        assert client.is_open
