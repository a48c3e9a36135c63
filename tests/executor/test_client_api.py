"""The client's public API, against the real service: typed events, job observers, abort.

What a supervisor (the harness's pool) needs from the client without touching its internals:
every event of a job, word of a lost job, a check before a control goes out, and a way to drop
a peer that stopped answering.
"""

from __future__ import annotations

import pytest

from cc_executor import protocol
from cc_executor.client import ConnectionLost, Event, ExecutorClient, JobHandle, JobObserver
from service_fixture import ServiceFactory

pytestmark = pytest.mark.anyio

TYPED = {"queued": protocol.QueuedParams, "started": protocol.StartedParams,
         "output": protocol.OutputParams, "progress": protocol.ProgressParams,
         "completed": protocol.CompletedParams}


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    factory = ServiceFactory(tmp_path_factory.mktemp("client"))
    server = factory(allow=["echo", "sleep"])
    yield server
    problems = factory.close()
    assert not problems, problems


class Recorder(JobObserver):
    def __init__(self, refuse_control: bool = False, fail_on: str | None = None):
        self.events: list[str] = []
        self.lost: list[ConnectionLost] = []
        self.controls: list[str] = []
        self.refuse_control = refuse_control
        self.fail_on = fail_on

    async def on_event(self, job: JobHandle, event: Event) -> None:
        self.events.append(event.kind)
        if event.kind == self.fail_on:
            raise ConnectionLost(f"observer gave up at {event.kind}")

    async def on_lost(self, job: JobHandle, error: ConnectionLost) -> None:
        self.lost.append(error)

    async def before_control(self, job: JobHandle, kind: str) -> None:
        self.controls.append(kind)
        if self.refuse_control:
            raise ConnectionLost("control refused by the observer")


async def test_events_are_typed_from_the_protocols_models_and_keep_their_params(svc):
    async with await ExecutorClient.connect(svc.url) as client:
        job = await client.start(args=["echo", "hi"])
        seen = [ev async for ev in job]
    assert [ev.kind for ev in seen][0] == "started" and seen[-1].kind == "completed"
    for ev in seen:
        assert isinstance(ev.message, TYPED[ev.kind]), ev
        assert ev.message.wire() == ev.params
    completed = seen[-1].message
    assert (completed.status, completed.reason, completed.exit_code) == ("completed", "exited", 0)
    assert b"".join(ev.data for ev in seen) == b"hi\n"


async def test_an_observer_sees_every_event_before_the_caller(svc):
    rec = Recorder()
    async with await ExecutorClient.connect(svc.url) as client:
        job = await client.start(args=["echo", "hi"], observer=rec)
        caller = []
        async for ev in job:
            assert rec.events[-1] == ev.kind  # the observer saw it first
            caller.append(ev.kind)
    assert rec.events == caller and rec.lost == []


async def test_an_observer_that_raises_ends_the_iteration_and_hears_of_the_loss(svc):
    rec = Recorder(fail_on="started")
    async with await ExecutorClient.connect(svc.url) as client:
        job = await client.start(args=["sleep", "30"], observer=rec)
        with pytest.raises(ConnectionLost, match="observer gave up at started"):
            async for _ in job:
                pass
        assert len(rec.lost) == 1 and job.done
        await client.control("CANCEL", job_id=job.job_id)  # the job itself is still ours to end


async def test_before_control_can_stop_a_control_request(svc):
    rec = Recorder(refuse_control=True)
    async with await ExecutorClient.connect(svc.url) as client:
        job = await client.start(args=["sleep", "30"], observer=rec)
        with pytest.raises(ConnectionLost, match="control refused"):
            await job.cancel()
        assert rec.controls == ["CANCEL"]
        assert [j["state"] for j in await client.jobs()] == ["running"]  # nothing was sent
        rec.refuse_control = False
        await job.cancel()
        assert (await job.result()).reason == "cancelled"


async def test_abort_drops_the_connection_and_ends_every_wait_with_connection_lost(svc):
    rec = Recorder()
    client = await ExecutorClient.connect(svc.url)
    try:
        job = await client.start(args=["sleep", "30"], observer=rec)
        assert client.is_open
        client.abort()
        with pytest.raises(ConnectionLost):
            await job.result()
        assert not client.is_open and len(rec.lost) == 1
        with pytest.raises(ConnectionLost):
            await client.ping()
    finally:
        await client.close()
    # The service ends a dropped connection's jobs (whole trees): the fixture's leftover check
    # proves the sleep is gone.
