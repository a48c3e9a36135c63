"""JSON-RPC 2.0 conformance: the specification's examples (section 7), run against the real service.

The specification's own methods (`subtract`, `sum`, `notify_hello`, `get_data`) are not ours, so
each example keeps its shape and swaps in a method of ours that answers the same way: `ping`
for a call that succeeds, an unknown name for -32601. Positional params, which the specification
allows and this service refuses on purpose (-32602, docs/protocol.md), are left out.
Then what the specification leaves to the server: the batch cap, and the order of a batch's
array reply and the notifications of the jobs it started.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from websockets.asyncio.client import connect

from cc_executor import protocol
from service_fixture import ServiceFactory

pytestmark = pytest.mark.anyio

MAX_BATCH = 8


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    factory = ServiceFactory(tmp_path_factory.mktemp("jsonrpc"))
    server = factory(allow=["echo", "python3"], env={"CC_EXECUTOR_MAX_BATCH": str(MAX_BATCH)})
    yield server
    problems = factory.close()
    assert not problems, problems


class Peer:
    """A bare WebSocket peer: frames out, parsed JSON in."""

    def __init__(self, ws):
        self.ws = ws

    async def send(self, text: str) -> None:
        await self.ws.send(text)

    async def recv(self, timeout: float = 10.0):
        return json.loads(await asyncio.wait_for(self.ws.recv(), timeout))

    async def exchange(self, text: str):
        await self.send(text)
        return await self.recv()


async def peer(url: str):
    ws = await connect(url, open_timeout=10, compression=None)
    p = Peer(ws)
    hello = await p.recv()
    assert hello["method"] == "connected"
    return ws, p


def by_id(responses: list[dict]) -> dict:
    return {r["id"]: r for r in responses}


# ---- section 7, single requests ----------------------------------------------------------------

async def test_call_of_a_method_that_does_not_exist(svc):
    ws, p = await peer(svc.url)
    async with ws:
        r = await p.exchange('{"jsonrpc": "2.0", "method": "foobar", "id": "1"}')
        assert r["id"] == "1" and r["error"]["code"] == -32601


async def test_call_with_invalid_json(svc):
    ws, p = await peer(svc.url)
    async with ws:
        r = await p.exchange('{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]')
        assert r == {"jsonrpc": "2.0", "id": None, "error": r["error"]}
        assert r["error"]["code"] == -32700


async def test_call_with_an_invalid_request_object(svc):
    ws, p = await peer(svc.url)
    async with ws:
        r = await p.exchange('{"jsonrpc": "2.0", "method": 1, "params": "bar"}')
        assert r["id"] is None and r["error"]["code"] == -32600


# ---- section 7, batches ----------------------------------------------------------------------

async def test_batch_with_invalid_json_is_one_parse_error(svc):
    ws, p = await peer(svc.url)
    async with ws:
        r = await p.exchange('[{"jsonrpc": "2.0", "method": "ping", "id": "1"},'
                             '{"jsonrpc": "2.0", "method"]')
        assert isinstance(r, dict) and r["id"] is None and r["error"]["code"] == -32700


async def test_an_empty_array_is_one_invalid_request(svc):
    ws, p = await peer(svc.url)
    async with ws:
        r = await p.exchange("[]")
        assert isinstance(r, dict) and r["id"] is None and r["error"]["code"] == -32600


@pytest.mark.parametrize("frame", ["[1]", "[1,2,3]"])
async def test_an_array_of_non_requests_gets_one_invalid_request_each(svc, frame):
    ws, p = await peer(svc.url)
    async with ws:
        r = await p.exchange(frame)
        assert isinstance(r, list) and len(r) == len(json.loads(frame))
        assert all(e["id"] is None and e["error"]["code"] == -32600 for e in r)


async def test_a_mixed_batch_answers_each_call_and_no_notification(svc):
    ws, p = await peer(svc.url)
    async with ws:
        r = await p.exchange(json.dumps([
            {"jsonrpc": "2.0", "method": "ping", "id": "1"},
            {"jsonrpc": "2.0", "method": "ping"},  # notification: no response
            {"jsonrpc": "2.0", "method": "jobs", "id": "2"},
            {"foo": "boo"},
            {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
            {"jsonrpc": "2.0", "method": "ping", "id": "9"},
        ]))
        assert isinstance(r, list) and len(r) == 5
        got = by_id([x for x in r if x["id"] is not None])
        assert got["1"]["result"]["pong"] is True and got["9"]["result"]["pong"] is True
        assert got["2"]["result"] == {"jobs": []}
        assert got["5"]["error"]["code"] == -32601
        invalid = [x for x in r if x["id"] is None]
        assert len(invalid) == 1 and invalid[0]["error"]["code"] == -32600
        # Nothing else was sent: the next frame answers the next request.
        assert (await p.exchange('{"jsonrpc":"2.0","id":"next","method":"ping"}'))["id"] == "next"


async def test_a_batch_of_notifications_gets_nothing_back(svc):
    ws, p = await peer(svc.url)
    async with ws:
        await p.send(json.dumps([{"jsonrpc": "2.0", "method": "ping"},
                                 {"jsonrpc": "2.0", "method": "jobs"}]))
        r = await p.exchange('{"jsonrpc":"2.0","id":"after","method":"ping"}')
        assert r["id"] == "after" and r["result"]["pong"] is True


# ---- what the specification leaves to us -----------------------------------------------------

async def test_a_batch_over_the_cap_is_one_error_naming_the_cap(svc):
    ws, p = await peer(svc.url)
    async with ws:
        calls = [{"jsonrpc": "2.0", "method": "ping", "id": i} for i in range(MAX_BATCH + 1)]
        r = await p.exchange(json.dumps(calls))
        assert isinstance(r, dict) and r["error"]["code"] == -32600
        assert r["error"]["data"] == {"reason": "batch_too_long", "max_batch": MAX_BATCH}
        r = await p.exchange(json.dumps(calls[:MAX_BATCH]))
        assert isinstance(r, list) and len(r) == MAX_BATCH


async def test_the_array_reply_comes_before_any_notification_of_the_jobs_it_started(svc):
    ws, p = await peer(svc.url)
    async with ws:
        await p.send(json.dumps([
            {"jsonrpc": "2.0", "id": "a", "method": "execute", "params": {"args": ["echo", "A"]}},
            {"jsonrpc": "2.0", "id": "b", "method": "execute", "params": {"args": ["echo", "B"]}},
            {"jsonrpc": "2.0", "id": "p", "method": "ping"},
        ]))
        first = await p.recv()
        assert isinstance(first, list), first
        got = by_id(first)
        assert got["a"]["result"]["status"] == "started"
        assert got["b"]["result"]["status"] == "started"
        jobs = {got["a"]["result"]["job_id"]: "A\n", got["b"]["result"]["job_id"]: "B\n"}
        out = {job: "" for job in jobs}
        done: set[str] = set()
        deadline = time.monotonic() + 15
        while done != set(jobs) and time.monotonic() < deadline:
            msg = await p.recv(max(0.01, deadline - time.monotonic()))
            protocol.NOTIFICATION_PARAMS[msg["method"]].model_validate(msg["params"])
            job = msg["params"]["job_id"]
            if msg["method"] == protocol.PROCESS_OUTPUT:
                out[job] += msg["params"]["data"]
            elif msg["method"] == protocol.PROCESS_COMPLETED:
                assert msg["params"]["exit_code"] == 0
                done.add(job)
        assert out == jobs


async def test_an_execute_notification_in_a_batch_runs_and_is_not_answered(svc, tmp_path):
    target = tmp_path / "made-by-a-batched-notification"
    ws, p = await peer(svc.url)
    async with ws:
        await p.send(json.dumps([
            {"jsonrpc": "2.0", "method": "execute",
             "params": {"args": ["python3", "-c", f"open({str(target)!r}, 'w').write('x')"]}},
        ]))
        seen = []
        deadline = time.monotonic() + 15
        while not any(m.get("method") == protocol.PROCESS_COMPLETED for m in seen):
            seen.append(await p.recv(max(0.01, deadline - time.monotonic())))
        assert all("method" in m for m in seen), seen  # notifications of the job, no response
        assert seen[-1]["params"]["exit_code"] == 0
        assert target.read_text() == "x"
