"""Resumable jobs (issue 11): `detach_timeout`, `resume_token`, `attach`, on a real server.

Connections are raw WebSockets here (the client library's `resume=True` has its own test), so
every frame the server sends is seen: the stream a job delivers across a dropped transport and
a re-attach must hold every line once, in order, with nothing else of the job in between.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from conftest import wait_until
from service_fixture import ServiceFactory, pid_alive, pid_state, wait_gone
from websockets.asyncio.client import connect

from cc_executor.client import ExecutorClient

pytestmark = pytest.mark.anyio

LINES = 3000
NUMBERED = ("import sys, time\n"
            f"for i in range({LINES}):\n"
            "    sys.stdout.write(f'{i}\\n'); sys.stdout.flush()\n"
            "    if i % 100 == 0: time.sleep(0.01)\n")
TREE = ("import subprocess, sys, time\n"
        "child = subprocess.Popen(['sleep', '60'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n")
ENV = {"CC_EXECUTOR_SPOOL_MEMORY": "64K", "CC_EXECUTOR_SPOOL_LIMIT": "512K",
       "CC_EXECUTOR_MAX_BUFFER": "256K"}  # so 8 MiB cannot all wait in the runner


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    factory = ServiceFactory(tmp_path_factory.mktemp("resume"))
    server = factory(allow=["python3", "sleep"], env=ENV)
    yield server
    problems = factory.close()
    assert not problems, problems


class Raw:
    """A raw connection that keeps every notification it reads, in order."""

    def __init__(self, ws):
        self.ws, self.frames, self._ids = ws, [], 0

    @classmethod
    async def open(cls, svc) -> Raw:
        ws = await connect(svc.url, compression=None, max_size=2**24, ping_interval=None)
        assert json.loads(await ws.recv())["method"] == "connected"
        return cls(ws)

    async def call(self, method: str, params: dict) -> dict:
        self._ids += 1
        rid = self._ids
        await self.ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method,
                                       "params": params}))
        deadline = time.monotonic() + 15
        while True:
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), deadline - time.monotonic()))
            if msg.get("id") == rid:
                return msg
            self.frames.append(msg)

    async def read_until(self, done, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not done(self.frames):
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), deadline - time.monotonic()))
            self.frames.append(msg)

    def of(self, job_id: str, method: str | None = None) -> list[dict]:
        return [f for f in self.frames if f.get("params", {}).get("job_id") == job_id
                and (method is None or f["method"] == method)]

    def abort(self) -> None:
        self.ws.transport.abort()  # the TCP connection drops: no closing handshake


def outputs(frames: list[dict]) -> list[dict]:
    return [f["params"] for f in frames if f["method"] == "process.output"]


def completed(job_id: str):
    return lambda frames: any(f["method"] == "process.completed"
                              and f["params"]["job_id"] == job_id for f in frames)


async def test_a_stream_survives_a_dropped_transport_every_line_once_in_order(svc):
    first = await Raw.open(svc)
    reply = (await first.call("execute", {"args": ["python3", "-c", NUMBERED],
                                          "detach_timeout": 30}))["result"]
    job_id, token = reply["job_id"], reply["resume_token"]
    await first.read_until(lambda fs: len(outputs(fs)) >= 3)
    first.abort()
    held = outputs(first.of(job_id))
    assert await asyncio.to_thread(wait_until, lambda: svc.health()["detached_jobs"] == 1, 10)
    assert "argv" not in json.dumps(svc.health()) and job_id not in json.dumps(svc.health())

    second = await Raw.open(svc)
    for bad in ({"resume_token": "x" * len(token)}, {}, {"resume_token": token[:-1]}):
        refused = await second.call("attach", {"job_id": job_id, "since_seq": -1, **bad})
        unknown = await second.call("attach", {"job_id": "f" * 12, "resume_token": token})
        assert refused["error"]["code"] == unknown["error"]["code"] == -32004
        assert refused["error"]["message"].replace(job_id, "ID") \
            == unknown["error"]["message"].replace("f" * 12, "ID")
    attached = await second.call("attach", {"job_id": job_id, "resume_token": token,
                                            "since_seq": held[-1]["seq"]})
    assert attached["result"]["status"] == "attached", attached
    rows = (await second.call("jobs", {}))["result"]["jobs"]
    assert [r["job_id"] for r in rows] == [job_id] or second.of(job_id, "process.completed")
    await second.read_until(completed(job_id))
    got = held + outputs(second.of(job_id))
    assert [p["seq"] for p in got] == list(range(len(got)))
    assert "".join(p["data"] for p in got) == "".join(f"{i}\n" for i in range(LINES))
    ends = second.of(job_id, "process.completed")
    assert len(ends) == 1 and ends[0]["params"]["reason"] == "exited"
    assert second.of(job_id)[-1] is ends[0]
    await second.ws.close()


async def test_attach_while_the_old_connection_is_open_moves_the_job(svc):
    old = await Raw.open(svc)
    reply = (await old.call("execute", {"args": ["python3", "-c", NUMBERED],
                                        "detach_timeout": 30}))["result"]
    job_id = reply["job_id"]
    new = await Raw.open(svc)
    attached = await new.call("attach", {"job_id": job_id, "resume_token": reply["resume_token"],
                                         "since_seq": -1})
    assert attached["result"]["status"] == "attached"
    await new.read_until(completed(job_id))
    await old.read_until(lambda fs: any(f["method"] == "process.detached" for f in fs))
    mine = old.of(job_id)
    notice = next(i for i, f in enumerate(mine) if f["method"] == "process.detached")
    assert mine[notice]["params"] == {"job_id": job_id, "reason": "attached_elsewhere"}
    assert mine[notice + 1:] == []  # nothing more of it on the old connection
    got = outputs(new.of(job_id))
    assert "".join(p["data"] for p in got) == "".join(f"{i}\n" for i in range(LINES))
    assert len(new.of(job_id, "process.completed")) == 1
    await old.ws.close()
    await new.ws.close()


async def test_a_full_spool_pauses_the_detached_job_and_loses_nothing(svc, tmp_path):
    size = 8 * 1024 * 1024  # far over spool (512K) + runner (256K) + pipe (up to 1M)
    go = tmp_path / "go"
    writer = ("import os, sys, time\ndata = bytes(range(256)) * 4096\n"
              f"for _ in range(3000):\n    if os.path.exists({str(go)!r}): break\n"
              "    time.sleep(0.01)\n"
              # A write(2) that SIGSTOP interrupts returns short: write until all is out.
              f"view = memoryview(data * {size // (256 * 4096)})\n"
              "while view:\n    view = view[os.write(1, view):]\n")
    first = await Raw.open(svc)
    reply = (await first.call("execute", {"args": ["python3", "-c", writer],
                                          "detach_timeout": 30}))["result"]
    first.abort()
    # It writes only once the server knows the connection is gone: all of it is spooled.
    assert await asyncio.to_thread(wait_until, lambda: svc.health()["detached_jobs"] == 1, 10)
    go.write_text("go")
    pid = reply["pid"]
    assert await asyncio.to_thread(wait_until, lambda: pid_state(pid) == "T", 10), \
        (pid_state(pid), svc.health(), svc.event_log()[-3:], \
        "the detached job was never paused")
    second = await Raw.open(svc)
    attached = await second.call("attach", {"job_id": reply["job_id"],
                                            "resume_token": reply["resume_token"],
                                            "since_seq": -1})
    assert attached["result"]["state"] == "paused"
    await second.read_until(completed(reply["job_id"]))
    from cc_executor.protocol import output_bytes
    got = outputs(second.of(reply["job_id"]))
    seqs = [p["seq"] for p in got]
    assert seqs == list(range(len(seqs))), seqs
    assert all(p["offset"] == sum(q["size"] for q in got[:i]) for i, p in enumerate(got))
    data = b"".join(output_bytes(p) for p in got)
    assert len(data) == size, str(second.of(reply["job_id"], "process.completed")[0]["params"])
    assert data == bytes(range(256)) * 4096 * (size // (256 * 4096))
    end = second.of(reply["job_id"], "process.completed")[0]["params"]
    assert (end["reason"], end["stdout_bytes"]) == ("exited", size)
    await second.ws.close()


async def test_a_job_that_ended_while_detached_keeps_its_output_and_completion(svc):
    first = await Raw.open(svc)
    quick = (await first.call("execute", {"args": ["python3", "-c", "print('bye')"],
                                          "detach_timeout": 30}))["result"]
    first.abort()

    def ended() -> bool:
        return any(e["event"] == "completed" and e.get("job_id") == quick["job_id"]
                   for e in svc.event_log())

    assert await asyncio.to_thread(wait_until, ended, 10)
    second = await Raw.open(svc)
    attached = await second.call("attach", {"job_id": quick["job_id"], "since_seq": -1,
                                            "resume_token": quick["resume_token"]})
    assert attached["result"]["state"] == "ended"
    await second.read_until(completed(quick["job_id"]))
    assert [p["data"] for p in outputs(second.of(quick["job_id"]))] == ["bye\n"]
    await second.ws.close()


async def test_the_detach_timeout_ends_the_whole_tree(svc):
    first = await Raw.open(svc)
    reply = (await first.call("execute", {"args": ["python3", "-c", TREE],
                                          "detach_timeout": 1}))["result"]
    await first.read_until(lambda fs: outputs(fs))
    child = int(outputs(first.frames)[0]["data"])
    first.abort()
    assert pid_alive(child)
    assert await asyncio.to_thread(wait_gone, [reply["pid"], child], 15) == []
    second = await Raw.open(svc)
    late = await second.call("attach", {"job_id": reply["job_id"], "since_seq": -1,
                                        "resume_token": reply["resume_token"]})
    assert late["error"]["code"] == -32004
    ends = [e for e in svc.event_log() if e["event"] == "completed"
            and e.get("job_id") == reply["job_id"]]
    assert [e["reason"] for e in ends] == ["cancelled"]
    await second.ws.close()


async def test_a_queued_job_keeps_its_place_and_shutdown_ends_detached_ones(executor_service):
    svc = executor_service(allow=["python3"], env={"CC_EXECUTOR_MAX_JOBS": "1"})
    first = await Raw.open(svc)
    reply = (await first.call("execute", {"args": ["python3", "-c", TREE],
                                          "detach_timeout": 60}))["result"]
    queued = (await first.call("execute", {"args": ["python3", "-c", "print(1)"],
                                           "detach_timeout": 60}))["result"]
    assert queued["status"] == "queued" and queued["resume_token"]
    await first.read_until(lambda fs: outputs(fs))
    child = int(outputs(first.frames)[0]["data"])
    first.abort()
    assert await asyncio.to_thread(wait_until, lambda: svc.health()["detached_jobs"] == 2, 10)
    assert svc.health()["jobs"] == {"running": 1, "queued": 1}
    second = await Raw.open(svc)
    attached = await second.call("attach", {"job_id": queued["job_id"], "since_seq": -1,
                                            "resume_token": queued["resume_token"]})
    assert (attached["result"]["state"], attached["result"]["position"]) == ("queued", 1)
    assert svc.health()["detached_jobs"] == 1
    assert await asyncio.to_thread(svc.stop) == 0
    assert wait_gone([reply["pid"], child], 5) == []
    ends = {e["job_id"]: e["reason"] for e in svc.event_log() if e["event"] == "completed"}
    assert ends == {reply["job_id"]: "shutdown", queued["job_id"]: "shutdown"}
    await second.read_until(completed(queued["job_id"]))  # told before the server closed
    second.abort()


async def test_the_client_with_resume_sees_one_unbroken_stream_across_aborts(svc, tmp_path):
    gates = [tmp_path / "go1", tmp_path / "go2"]
    gated = ("import os, sys, time\n"
             "def wait(p):\n"
             "    for _ in range(3000):\n"
             "        if os.path.exists(p): return\n"
             "        time.sleep(0.01)\n"
             "for part in range(3):\n"
             f"    if part: wait({[str(g) for g in gates]!r}[part - 1])\n"
             "    for i in range(part * 500, part * 500 + 500):\n"
             "        sys.stdout.write(f'{i}\\n'); sys.stdout.flush()\n")
    async with await ExecutorClient.connect(svc.url, resume=True, detach_timeout=30) as client:
        job = await client.start(args=["python3", "-c", gated])
        events = []
        async for ev in job:
            events.append(ev)
            # A network blip while the job is held at each gate (so it cannot have ended).
            if ev.kind == "output" and gates and len(gates) + client.reconnects == 2:
                client.ws.transport.abort()
                gates.pop(0).write_text("go")
        assert client.reconnects == 2
        outs = [e.params for e in events if e.kind == "output"]
        assert [p["seq"] for p in outs] == list(range(len(outs)))
        assert "".join(p["data"] for p in outs) == "".join(f"{i}\n" for i in range(1500))
        assert [e.kind for e in events].count("completed") == 1 and events[-1].kind == "completed"
        assert (await client.ping())["pong"] is True  # the connection is usable again


async def test_a_clean_close_ends_resumable_jobs_as_any_other(svc):
    first = await Raw.open(svc)
    reply = (await first.call("execute", {"args": ["python3", "-c", TREE],
                                          "detach_timeout": 60}))["result"]
    await first.read_until(lambda fs: outputs(fs))
    child = int(outputs(first.frames)[0]["data"])
    await first.ws.close()  # code 1000: the client is done with it
    assert await asyncio.to_thread(wait_gone, [reply["pid"], child], 15) == []
    assert svc.health()["detached_jobs"] == 0
    second = await Raw.open(svc)
    late = await second.call("attach", {"job_id": reply["job_id"], "since_seq": -1,
                                        "resume_token": reply["resume_token"]})
    assert late["error"]["code"] == -32004
    await second.ws.close()


async def test_a_refused_execute_leaves_no_resumable_job_behind(executor_service):
    """Review: an `execute` refused with -32003 (queue full) was still entered in the resume
    book: /health counted it as detached after the drop, and each refusal kept a spool and a
    delivery task until `detach_timeout` after the connection dropped."""
    svc = executor_service(allow=["sleep"], env={"CC_EXECUTOR_MAX_JOBS": "1",
                                                  "CC_EXECUTOR_MAX_QUEUE": "0"})
    first = await Raw.open(svc)
    running = (await first.call("execute", {"args": ["sleep", "30"]}))["result"]
    for _ in range(3):
        refused = await first.call("execute", {"args": ["sleep", "30"], "detach_timeout": 60})
        assert refused["error"]["data"]["reason"] == "queue_full", refused
    first.abort()
    assert await asyncio.to_thread(wait_gone, [running["pid"]], 15) == []
    assert svc.health()["detached_jobs"] == 0


async def test_attach_since_a_seq_not_yet_sent_is_refused_and_moves_nothing(svc):
    """Review: `since_seq` past the job's output was accepted, and the live output up to that
    seq was then skipped (a client saw a completion with none of the bytes it counts)."""
    first = await Raw.open(svc)
    reply = (await first.call("execute", {"args": ["python3", "-c", TREE],
                                          "detach_timeout": 30}))["result"]
    await first.read_until(lambda fs: outputs(fs))
    child = int(outputs(first.frames)[0]["data"])
    second = await Raw.open(svc)
    ask = {"job_id": reply["job_id"], "resume_token": reply["resume_token"]}
    past = await second.call("attach", {**ask, "since_seq": 1})
    assert past["error"]["code"] == -32602 and past["error"]["data"]["next_seq"] == 1, past
    assert "since_seq" in past["error"]["message"]
    assert not first.of(reply["job_id"], "process.detached")  # still the first's job
    moved = await second.call("attach", {**ask, "since_seq": 0})
    assert moved["result"]["next_seq"] == 1
    await second.call("control", {"type": "cancel", "job_id": reply["job_id"]})
    await second.read_until(completed(reply["job_id"]))
    assert await asyncio.to_thread(wait_gone, [reply["pid"], child], 15) == []
    await first.ws.close()
    await second.ws.close()


async def test_a_detach_timeout_over_the_ceiling_is_refused_naming_it(svc):
    """Review: a client could leave a job running ~forever behind a dropped connection
    (detach_timeout up to 1e9 s) on a shared executor; the operator's ceiling bounds it."""
    conn = await Raw.open(svc)
    over = await conn.call("execute", {"args": ["sleep", "30"], "detach_timeout": 3601})
    assert over["error"]["code"] == -32602, over
    assert over["error"]["data"] == {"field": "detach_timeout", "ceiling": "max_detach_timeout"}
    assert "3601" in over["error"]["message"] and "3600" in over["error"]["message"]
    assert svc.health()["jobs"]["running"] == 0  # nothing was started
    at = (await conn.call("execute", {"args": ["python3", "-c", "print(1)"],
                                      "detach_timeout": 3600}))["result"]
    assert at["resume_token"]
    await conn.read_until(completed(at["job_id"]))
    await conn.ws.close()


async def test_shutdown_with_a_detached_job_paused_by_its_full_spool_is_prompt(executor_service):
    """Review: the paused job's pump waited for spool room that nobody would make, so SIGTERM
    waited out the whole end wait (kill_grace + 10 s) and the server dumped 'shutdown is slow'."""
    svc = executor_service(allow=["python3"], env={**ENV, "CC_EXECUTOR_KILL_GRACE": "1"})
    first = await Raw.open(svc)
    flood = "import sys\nwhile True:\n    sys.stdout.buffer.write(b'z' * 65536); sys.stdout.flush()\n"
    reply = (await first.call("execute", {"args": ["python3", "-c", flood],
                                          "detach_timeout": 60}))["result"]
    first.abort()
    assert await asyncio.to_thread(wait_until, lambda: pid_state(reply["pid"]) == "T", 15)
    assert await asyncio.to_thread(svc.stop) == 0
    assert "shutdown is slow" not in svc.stderr()
    ends = [e for e in svc.event_log() if e["event"] == "completed"]
    assert [(e["job_id"], e["reason"]) for e in ends] == [(reply["job_id"], "shutdown")]
    assert not pid_alive(reply["pid"])
