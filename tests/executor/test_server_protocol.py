"""The real service over a real socket: every method, every error code, malformed frames, seed 004.

One server (a subprocess started exactly as a user would) serves this whole module; each test
opens its own connections. Both clients are exercised: ours (`cc_executor.client`) and a raw
`websockets` client sending the exact messages the older clients send.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from datetime import datetime

import pytest
import websockets
from websockets.asyncio.client import connect

from cc_executor import protocol
from cc_executor.client import ExecutorClient, ExecutorError
from service_fixture import PY, ServiceFactory, pid_state, wait_gone

from conftest import wait_until

pytestmark = pytest.mark.anyio

MAX_FRAME = 64 * 1024
PER_CONNECTION = 3


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    factory = ServiceFactory(tmp_path_factory.mktemp("protocol"))
    server = factory(
        allow=["python3", "echo", "sleep", "no-such-exe-cc-test"],
        env={"CC_EXECUTOR_MAX_FRAME": str(MAX_FRAME), "CC_T_SERVER": "inherited",
             "CC_EXECUTOR_MAX_JOBS_PER_CONNECTION": str(PER_CONNECTION)})
    yield server
    problems = factory.close()
    assert not problems, problems


class Raw:
    """A bare WebSocket client: send frames, read JSON messages, nothing clever."""

    def __init__(self, ws):
        self.ws = ws
        self.notes: list[dict] = []

    async def send(self, frame) -> None:
        await self.ws.send(frame if isinstance(frame, (str, bytes)) else json.dumps(frame))

    async def recv(self, timeout: float = 10.0) -> dict:
        """The next message; every notification must match its documented shape."""
        msg = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        assert msg.get("jsonrpc") == "2.0", msg
        if "method" in msg:
            assert "id" not in msg and "error" not in msg, msg
            protocol.NOTIFICATION_PARAMS[msg["method"]].model_validate(msg["params"])
        return msg

    async def reply(self, timeout: float = 10.0) -> dict:
        """The next response (result or error); notifications on the way are kept in notes."""
        deadline = time.monotonic() + timeout
        while True:
            msg = await self.recv(max(0.01, deadline - time.monotonic()))
            if "result" in msg or "error" in msg:
                return msg
            self.notes.append(msg)

    async def call(self, method: str, params=None, id=1) -> dict:
        msg = {"jsonrpc": "2.0", "id": id, "method": method}
        if params is not None:
            msg["params"] = params
        await self.send(msg)
        return await self.reply()

    async def until_completed(self, job_id: str, timeout: float = 15.0) -> list[dict]:
        """Every notification of `job_id` up to and including its process.completed."""
        got = [m for m in self.notes if m.get("params", {}).get("job_id") == job_id]
        self.notes = [m for m in self.notes if m not in got]
        deadline = time.monotonic() + timeout
        while not any(m["method"] == "process.completed" for m in got):
            msg = await self.recv(max(0.01, deadline - time.monotonic()))
            if msg.get("params", {}).get("job_id") == job_id:
                got.append(msg)
            else:
                self.notes.append(msg)
        return got


async def raw_connect(url: str, **kw) -> tuple[object, Raw]:
    ws = await connect(url, open_timeout=10, compression=None, **kw)
    raw = Raw(ws)
    hello = await raw.recv()
    assert hello["method"] == "connected", hello
    return ws, raw


def stdout_of(notes: list[dict]) -> str:
    return "".join(m["params"]["data"] for m in notes
                   if m["method"] == "process.output" and m["params"]["type"] == "stdout")


# ---- seed 004, unchanged ---------------------------------------------------------------------

async def seed_004_execute_test(ws_url: str, test: dict, recv_timeout: float = 5.0,
                                stall_after: float = 10.0) -> tuple[bool, int, str]:
    """Seed 004's `execute_test`, reproduced: same request, same reading of the replies.
    `recv_timeout` and `stall_after` are the seed's 5 s and 10 s, scalable for short tests."""
    marker = f"LOCAL_{test['id']}_{datetime.now().strftime('%Y%m%d_%H%M%S')}"
    request = test["natural_language_request"]
    command = test["command_template"].replace("${REQUEST}", request).replace("${MARKER}", marker)
    execute_request = {"jsonrpc": "2.0", "method": "execute", "params": {"command": command},
                       "id": 1}
    output_lines: list[str] = []
    patterns_found: list[str] = []
    start_time = time.time()
    async with websockets.connect(ws_url, ping_timeout=None) as websocket:
        await websocket.send(json.dumps(execute_request))
        timeout = test["verification"]["timeout"]
        last_activity = time.time()
        while time.time() - start_time < timeout:
            try:
                response = await asyncio.wait_for(websocket.recv(), timeout=recv_timeout)
                data = json.loads(response)
                last_activity = time.time()
                if "error" in data:
                    return False, -1, data["error"]["message"]
                if "params" in data and "data" in data["params"]:
                    output = data["params"]["data"]
                    output_lines.append(output)
                    for pattern in test["verification"]["expected_patterns"]:
                        if pattern.lower() in output.lower() and pattern not in patterns_found:
                            patterns_found.append(pattern)
                elif data.get("method") == "process.completed":
                    exit_code = data["params"].get("exit_code", -1)
                    if test["id"].startswith("failure_"):
                        success = exit_code != 0
                    else:
                        success = exit_code == 0 and len(patterns_found) > 0
                    return success, exit_code, "\n".join(output_lines)
            except asyncio.TimeoutError:
                if time.time() - last_activity > stall_after:
                    return False, -1, "stall"
                continue
    return False, -1, "timeout"


async def test_seed_004_client_passes_unchanged(svc):
    ok = {"id": "simple_echo", "natural_language_request": "What is 2+2?",
          "command_template": 'echo "[marker:${MARKER}] ${REQUEST}" 4',
          "verification": {"timeout": 20, "expected_patterns": ["2+2", "4"]}}
    for url in (svc.url, svc.url.replace("127.0.0.1", "localhost")):
        success, code, out = await seed_004_execute_test(url, ok)
        assert success, out
        assert code == 0
        assert out.startswith("[marker:LOCAL_simple_echo_") and out.endswith(" What is 2+2? 4\n")
    failing = {"id": "failure_exit", "natural_language_request": "x",
               "command_template": "python3 -c 'import sys; sys.exit(3)' ${REQUEST}",
               "verification": {"timeout": 20, "expected_patterns": []}}
    success, code, _ = await seed_004_execute_test(svc.url, failing)
    assert success and code == 3


async def test_seed_004_sees_an_error_for_a_refused_command(svc):
    test = {"id": "refused", "natural_language_request": "x",
            "command_template": "rm -rf ${REQUEST}",
            "verification": {"timeout": 20, "expected_patterns": ["x"]}}
    success, code, message = await seed_004_execute_test(svc.url, test)
    assert not success and code == -1
    assert "command not allowed: rm" in message


async def test_seed_004_client_waits_through_a_long_silent_job(executor_service):
    # The seed's numbers scaled by 1/5: it reads with a 5 s timeout and gives up after 10 s
    # without a frame; the server's default keepalive comes after 5 s of silence. Here 1 s,
    # 2 s and 1 s, and the job is silent for 2.4 s (a 12 s silence at full scale).
    svc = executor_service("--progress-interval", "1", allow=["python3"])
    silent = {"id": "silent_job", "natural_language_request": "What is 2+2?",
              "command_template":
                  "python3 -c 'import time; time.sleep(2.4); print(\"${REQUEST} 4\")'",
              "verification": {"timeout": 20, "expected_patterns": ["4"]}}
    success, code, out = await seed_004_execute_test(svc.url, silent, recv_timeout=1.0,
                                                     stall_after=2.0)
    assert (success, code, out) == (True, 0, "What is 2+2? 4\n")

    async with await ExecutorClient.connect(svc.url) as c:
        events = []
        r = await c.execute(args=["python3", "-c", "import time; time.sleep(2.4); print('hi')"],
                            on_event=events.append)
        assert (r.reason, r.stdout, r.batches) == ("exited", b"hi\n", 1)  # not output
        progress = [e.params for e in events if e.kind == "progress"]
        assert len(progress) >= 2, [e.kind for e in events]
        for p in progress:
            protocol.ProgressParams.model_validate(p)
            assert p["job_id"] == r.job_id and p["state"] == "running" and "data" not in p
            assert p["silent_for"] >= 0.9 and p["elapsed"] >= p["silent_for"]
        assert progress[-1]["silent_for"] > progress[0]["silent_for"]  # the job's silence
        kinds = [e.kind for e in events]
        assert kinds[0] == "started" and kinds[-1] == "completed"
        # Keepalives are not output: a stall timeout still fires.
        events.clear()
        r = await c.execute(args=["python3", "-c", "import time; time.sleep(30)"],
                            stall_timeout=2.5, on_event=events.append)
        assert r.reason == "stalled" and r.duration < 8
        assert [e.kind for e in events].count("progress") >= 2
    assert wait_gone([r.pid], 5) == []


# ---- every method, through our client ----------------------------------------------------------

async def test_execute_with_every_param(svc, tmp_path):
    (tmp_path / "here.txt").write_text("x")
    async with await ExecutorClient.connect(svc.url) as c:
        r = await c.execute(args=["echo", "a  b", "c"])
        assert (r.status, r.reason, r.exit_code, r.stdout) == (
            "completed", "exited", 0, b"a  b c\n")
        r = await c.execute("python3 -c 'import os; print(sorted(os.listdir()))'",
                            cwd=str(tmp_path))
        assert r.stdout_text.strip() == "['here.txt']"
        probe = "import os; print([os.environ.get(k) for k in ('CC_T_A', 'CC_T_SERVER')])"
        r = await c.execute(args=["python3", "-c", probe])
        assert r.stdout_text == "[None, 'inherited']\n"  # the server's environment is inherited
        r = await c.execute(args=["python3", "-c", probe],
                            env={"CC_T_A": "value a", "CC_T_SERVER": None})
        assert r.stdout_text == "['value a', None]\n"  # set one, removed one
        r = await c.execute(args=["python3", "-c", "import sys; print(sys.stdin.read().upper())"],
                            input="hello\nworld")
        assert r.stdout_text == "HELLO\nWORLD\n"
        r = await c.execute(args=["python3", "-c",
                                  "import sys; sys.stderr.write('oops'); sys.exit(4)"])
        assert (r.status, r.exit_code, r.stderr, r.stdout) == ("failed", 4, b"oops", b"")

        t0 = time.monotonic()
        r = await c.execute(args=["sleep", "30"], timeout=0.5)
        assert (r.status, r.reason) == ("timeout", "timeout")
        assert r.exit_code != 0 and time.monotonic() - t0 < 10
        assert wait_gone([r.pid], 5) == []

        r = await c.execute(args=["python3", "-c", "print('early', flush=True); import time; "
                                  "time.sleep(30)"], stall_timeout=0.5)
        assert (r.status, r.reason, r.stdout) == ("stalled", "stalled", b"early\n")
        assert wait_gone([r.pid], 5) == []


async def test_process_notifications_in_order(svc):
    async with await ExecutorClient.connect(svc.url) as c:
        job = await c.start(args=["echo", "hi"])
        assert job.status == "started" and job.pid > 0 and job.pgid == job.pid
        kinds = [ev.kind async for ev in job]
    assert kinds[0] == "started" and kinds[-1] == "completed"
    assert kinds.count("completed") == 1 and set(kinds[1:-1]) == {"output"}


TICKER = ("import sys, time\n"
          "for i in range(10000):\n"
          "    print(i, flush=True); time.sleep(0.01)\n")


async def test_control_pause_resume_cancel(svc):
    async with await ExecutorClient.connect(svc.url) as c:
        job = await c.start(args=["python3", "-c", TICKER])
        events = []
        collect = asyncio.ensure_future(job.result(on_event=events.append))
        assert await c.control("PAUSE", job.job_id) == {"status": "paused", "job_id": job.job_id}
        assert await asyncio.to_thread(wait_until, lambda: pid_state(job.pid) == "T", 5)
        assert [j["state"] for j in await c.jobs()] == ["paused"]
        with pytest.raises(ExecutorError) as e:
            await c.control("PAUSE", job.job_id)
        assert e.value.code == protocol.JOB_NOT_RUNNING and "paused" in e.value.message
        n = len(events)
        assert await c.control("resume", job.job_id) == {"status": "resumed", "job_id": job.job_id}
        assert await asyncio.to_thread(wait_until, lambda: len(events) > n + 2, 5)
        assert pid_state(job.pid) in ("S", "R")
        with pytest.raises(ExecutorError) as e:
            await c.control("RESUME", job.job_id)
        assert e.value.code == protocol.JOB_NOT_RUNNING and "running" in e.value.message
        assert await c.control("CANCEL", job.job_id) == {"status": "cancelled",
                                                        "job_id": job.job_id}
        r = await asyncio.wait_for(collect, 10)
        assert (r.status, r.reason) == ("cancelled", "cancelled")
        numbers = [int(x) for x in r.stdout_text.split()]
        assert numbers == list(range(len(numbers)))  # nothing lost across pause/resume
        assert await c.jobs() == []
    assert wait_gone([job.pid], 5) == []


async def test_control_without_job_id(svc):
    async with await ExecutorClient.connect(svc.url) as c:
        with pytest.raises(ExecutorError) as e:
            await c.control("CANCEL")
        assert e.value.code == protocol.NO_SUCH_JOB
        one = await c.start(args=["sleep", "30"])
        assert (await c.control("PAUSE"))["job_id"] == one.job_id
        assert (await c.control("RESUME"))["job_id"] == one.job_id
        two = await c.start(args=["sleep", "30"])
        with pytest.raises(ExecutorError) as e:
            await c.control("CANCEL")
        assert e.value.code == protocol.INVALID_PARAMS and e.value.data["field"] == "job_id"
        assert sorted(e.value.data["jobs"]) == sorted([one.job_id, two.job_id])
        await two.cancel()
        assert (await two.result()).reason == "cancelled"
        assert (await c.control("CANCEL")) == {"status": "cancelled", "job_id": one.job_id}
        assert (await one.result()).reason == "cancelled"
    assert wait_gone([one.pid, two.pid], 5) == []


async def test_jobs_and_ping(svc):
    async with await ExecutorClient.connect(svc.url) as c:
        assert c.session["capabilities"]["methods"] == ["execute", "control", "jobs", "ping", "attach"]
        assert c.session["capabilities"]["max_frame"] == MAX_FRAME
        pong = await c.ping()
        assert pong["pong"] is True and abs(pong["time"] - time.time()) < 60
        assert await c.jobs() == []
        job = await c.start(args=["sleep", "30"])
        rows = await c.jobs()
        protocol.JobsResult.model_validate({"jobs": rows})
        (row,) = rows
        assert row["job_id"] == job.job_id and row["state"] == "running"
        assert row["pid"] == job.pid and row["argv"][1:] == ["30"]
        async with await ExecutorClient.connect(svc.url) as other:
            assert await other.jobs() == []  # jobs are per connection
            with pytest.raises(ExecutorError) as e:
                await other.control("CANCEL", job.job_id)
            assert e.value.code == protocol.NO_SUCH_JOB
        await job.cancel()
        await job.result()
    assert wait_gone([job.pid], 5) == []


# ---- every error code, with the request id ---------------------------------------------------

ERROR_CASES = [
    # (frame, code, id, text in message)
    ("{not json", protocol.PARSE_ERROR, None, "parse error"),
    ("[]", protocol.INVALID_REQUEST, None, "empty batch"),
    ({"jsonrpc": "2.0", "id": 7, "method": "launch"}, protocol.METHOD_NOT_FOUND, 7, "launch"),
    ({"jsonrpc": "2.0", "id": "s1", "method": "execute", "params": {}},
     protocol.INVALID_PARAMS, "s1", "params.command"),
    ({"jsonrpc": "2.0", "id": 8, "method": "execute", "params": {"args": ["echo"], "timeout": -1}},
     protocol.INVALID_PARAMS, 8, "params.timeout"),
    ({"jsonrpc": "2.0", "id": 9, "method": "execute", "params": {"command": "rm -rf /tmp/x"}},
     protocol.COMMAND_NOT_ALLOWED, 9, "command not allowed: rm"),
    ({"jsonrpc": "2.0", "id": 10, "method": "control", "params": {"type": "CANCEL",
                                                                  "job_id": "nope"}},
     protocol.NO_SUCH_JOB, 10, "no such job: nope"),
    ({"jsonrpc": "2.0", "id": 11, "method": "execute", "params": {"args": ["no-such-exe-cc-test"]}},
     protocol.SPAWN_FAILED, 11, "not found"),
    ({"jsonrpc": "2.0", "id": 12, "method": "execute",
      "params": {"args": ["echo"], "cwd": "/no/such/dir/cc"}},
     protocol.SPAWN_FAILED, 12, "/no/such/dir/cc"),
    ("x" * (MAX_FRAME + 1), protocol.FRAME_TOO_LARGE, None, str(MAX_FRAME)),
    (b'{"jsonrpc":"2.0","id":13,"method":"ping"}', protocol.BINARY_FRAME, None, "binary"),
]


@pytest.mark.parametrize("frame,code,rid,text", ERROR_CASES,
                         ids=[f"{c[1]}-{i}" for i, c in enumerate(ERROR_CASES)])
async def test_error_codes_carry_the_request_id(svc, frame, code, rid, text):
    ws, raw = await raw_connect(svc.url)
    async with ws:
        await raw.send(frame)
        msg = await raw.reply()
        assert msg["jsonrpc"] == "2.0" and "id" in msg and msg["id"] == rid
        assert msg["error"]["code"] == code, msg
        assert text in msg["error"]["message"], msg
        if code == protocol.INVALID_PARAMS:
            assert msg["error"]["data"]["field"] in msg["error"]["message"]
        assert (await raw.call("ping", id=99))["result"]["pong"] is True


@pytest.mark.parametrize("name", ["LD_PRELOAD", "LD_AUDIT", "LD_LIBRARY_PATH", "BASH_ENV",
                                  "NODE_OPTIONS", "PYTHONSTARTUP", "PYTHONPATH", "PERL5OPT",
                                  "BASH_FUNC_echo%%"])
async def test_env_cannot_inject_code_into_an_allowed_program(svc, tmp_path, name):
    made = tmp_path / "injected"
    ws, raw = await raw_connect(svc.url)
    async with ws:
        msg = await raw.call("execute", {"args": ["python3", "-c", "print('ran')"],
                                         "env": {"CC_T_OK": "1", name: f"{made}"}}, id="e")
        assert msg["id"] == "e" and msg["error"]["code"] == protocol.INVALID_PARAMS, msg
        assert msg["error"]["data"]["field"] == "env"
        assert msg["error"]["message"].startswith(f"params.env.{name}: may not be set")
        # A bad param whatever the program: refused as such before the allow-list is asked.
        msg = await raw.call("execute", {"args": ["rm", "-rf", str(made)], "env": {name: "x"}},
                             id="n")
        assert msg["error"]["code"] == protocol.INVALID_PARAMS, msg
        msg = await raw.call("execute", {"command": "no-such-program-cc x", "env": {name: "x"}},
                             id="c")
        assert msg["error"]["code"] == protocol.INVALID_PARAMS, msg
        # Removing one is harmless, and allowed.
        msg = await raw.call("execute", {"args": ["echo", "ok"], "env": {name: None}}, id="r")
        assert stdout_of(await raw.until_completed(msg["result"]["job_id"])) == "ok\n"
    assert not made.exists()


async def test_too_many_jobs_and_job_not_running(svc):
    ws, raw = await raw_connect(svc.url)
    async with ws:
        ids = []
        for i in range(PER_CONNECTION):
            msg = await raw.call("execute", {"args": ["sleep", "30"]}, id=i)
            ids.append(msg["result"]["job_id"])
        msg = await raw.call("execute", {"args": ["echo", "no"]}, id="over")
        assert msg["id"] == "over" and msg["error"]["code"] == protocol.TOO_MANY_JOBS
        assert f"limit {PER_CONNECTION}" in msg["error"]["message"]
        msg = await raw.call("control", {"type": "RESUME", "job_id": ids[0]}, id=21)
        assert msg["id"] == 21 and msg["error"]["code"] == protocol.JOB_NOT_RUNNING
        pids = []
        for i, job_id in enumerate(ids):
            msg = await raw.call("control", {"type": "CANCEL", "job_id": job_id}, id=30 + i)
            assert msg["result"]["status"] == "cancelled"
        for job_id in ids:
            notes = await raw.until_completed(job_id)
            pids += [m["params"]["pid"] for m in notes if m["method"] == "process.started"]
            assert [m["params"]["reason"] for m in notes
                    if m["method"] == "process.completed"] == ["cancelled"]
        # The limit counts live jobs only: the slot is free again.
        msg = await raw.call("execute", {"args": ["echo", "again"]}, id=40)
        assert msg["result"]["status"] == "started"
        assert stdout_of(await raw.until_completed(msg["result"]["job_id"])) == "again\n"
    assert wait_gone(pids, 5) == []


async def test_oversized_beyond_the_transport_limit_closes_only_that_connection(svc):
    ws, raw = await raw_connect(svc.url)
    await raw.send("y" * (MAX_FRAME * 4 + 10))
    with pytest.raises(websockets.ConnectionClosed) as e:
        await raw.recv()
    assert e.value.rcvd is not None and e.value.rcvd.code == 1009
    async with await ExecutorClient.connect(svc.url) as c:
        assert (await c.execute(args=["echo", "fine"])).stdout == b"fine\n"


async def test_invalid_utf8_in_a_text_frame_closes_only_that_connection(svc):
    # RFC 6455 8.1: an endpoint MUST fail the connection on invalid UTF-8 in a text frame;
    # the WebSocket layer closes with 1007 before any JSON-RPC handling (docs/protocol.md).
    ws, raw = await raw_connect(svc.url)
    await ws.send(b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"\xff"}}', text=True)
    with pytest.raises(websockets.ConnectionClosed) as e:
        await raw.recv()
    assert e.value.rcvd is not None and e.value.rcvd.code == 1007
    async with await ExecutorClient.connect(svc.url) as c:
        assert (await c.ping())["pong"] is True


# ---- twenty-odd kinds of malformed frame on one connection ---------------------------------

MALFORMED = [
    ("", protocol.PARSE_ERROR, None),
    ("{", protocol.PARSE_ERROR, None),
    ("nul\x00l", protocol.PARSE_ERROR, None),
    ('{"jsonrpc":"2.0","id":1,"method":"ping","params":NaN}', protocol.PARSE_ERROR, None),
    ("[" * 30_000 + "]" * 30_000, protocol.PARSE_ERROR, None),
    ("[]", protocol.INVALID_REQUEST, None),
    ("42", protocol.INVALID_REQUEST, None),
    ('"execute"', protocol.INVALID_REQUEST, None),
    ("null", protocol.INVALID_REQUEST, None),
    ({"id": 101, "method": "ping"}, protocol.INVALID_REQUEST, 101),
    ({"jsonrpc": "1.0", "id": 102, "method": "ping"}, protocol.INVALID_REQUEST, 102),
    ({"jsonrpc": "2.0", "id": 103}, protocol.INVALID_REQUEST, 103),
    ({"jsonrpc": "2.0", "id": 104, "method": 5}, protocol.INVALID_REQUEST, 104),
    ({"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"}, protocol.INVALID_REQUEST, None),
    ({"jsonrpc": "2.0", "id": 106, "method": "ping", "extra": 1}, protocol.INVALID_REQUEST, 106),
    ({"jsonrpc": "2.0", "id": 107, "method": "ping", "params": "x"}, protocol.INVALID_REQUEST, 107),
    ({"jsonrpc": "2.0", "id": 108, "method": "nope"}, protocol.METHOD_NOT_FOUND, 108),
    ({"jsonrpc": "2.0", "id": 109, "method": "execute", "params": ["echo"]},
     protocol.INVALID_PARAMS, 109),
    ({"jsonrpc": "2.0", "id": 110, "method": "execute",
      "params": {"command": "echo", "args": ["echo"]}}, protocol.INVALID_PARAMS, 110),
    ({"jsonrpc": "2.0", "id": 111, "method": "execute", "params": {"args": "echo"}},
     protocol.INVALID_PARAMS, 111),
    ({"jsonrpc": "2.0", "id": 112, "method": "execute", "params": {"args": ["echo", 5]}},
     protocol.INVALID_PARAMS, 112),
    ({"jsonrpc": "2.0", "id": 113, "method": "execute", "params": {"command": "  "}},
     protocol.INVALID_PARAMS, 113),
    ('{"jsonrpc":"2.0","id":114,"method":"execute","params":{"command":"echo \\ud800"}}',
     protocol.INVALID_PARAMS, 114),
    ({"jsonrpc": "2.0", "id": 115, "method": "execute",
      "params": {"args": ["echo"], "env": {"A": 1}}}, protocol.INVALID_PARAMS, 115),
    ({"jsonrpc": "2.0", "id": 116, "method": "execute", "params": {"command": "echo 'open"}},
     protocol.INVALID_PARAMS, 116),
    ({"jsonrpc": "2.0", "id": 117, "method": "control", "params": {"type": "STOP"}},
     protocol.INVALID_PARAMS, 117),
    ({"jsonrpc": "2.0", "id": 118, "method": "ping", "params": {"x": 1}},
     protocol.INVALID_PARAMS, 118),
    ("z" * (MAX_FRAME + 100), protocol.FRAME_TOO_LARGE, None),
    (b"\x00\x01binary", protocol.BINARY_FRAME, None),
    (b"", protocol.BINARY_FRAME, None),
]


async def test_malformed_frames_on_one_connection_leave_it_working(svc):
    assert len(MALFORMED) >= 20
    ws, raw = await raw_connect(svc.url)
    async with ws:
        for frame, code, rid in MALFORMED:
            await raw.send(frame)
            msg = await raw.reply()
            shown = repr(frame)[:80]
            assert msg.get("error", {}).get("code") == code, (shown, msg)
            assert "id" in msg and msg["id"] == rid, (shown, msg)
            assert msg["error"]["message"], shown
        # Well-formed notifications (no id) with errors are not answered; the ping is next.
        await raw.send({"jsonrpc": "2.0", "method": "nope"})
        await raw.send({"jsonrpc": "2.0", "method": "execute", "params": {}})
        assert (await raw.call("ping", id="after"))["id"] == "after"
        msg = await raw.call("execute", {"command": "echo still alive"}, id="echo")
        assert msg["result"]["status"] == "started"
        notes = await raw.until_completed(msg["result"]["job_id"])
        assert stdout_of(notes) == "still alive\n"
        assert notes[-1]["params"]["exit_code"] == 0
    assert svc.alive()
    assert svc.health()["status"] == "ok"


async def test_an_execute_notification_runs_but_is_not_answered(svc, tmp_path):
    target = tmp_path / "made-by-notification"
    ws, raw = await raw_connect(svc.url)
    async with ws:
        await raw.send({"jsonrpc": "2.0", "method": "execute",
                        "params": {"args": ["python3", "-c",
                                            f"open({str(target)!r}, 'w').write('x')"]}})
        msg = await raw.call("ping", id="p")
        assert msg["id"] == "p"
        # Its notifications still flow (they name the job); it ends normally.
        done = await asyncio.wait_for(_first_completed(raw), 10)
        assert done["params"]["exit_code"] == 0
    assert target.read_text() == "x"


async def _first_completed(raw: Raw) -> dict:
    for m in raw.notes:
        if m.get("method") == "process.completed":
            return m
    while True:
        m = await raw.recv()
        if m.get("method") == "process.completed":
            return m


def test_client_cli_streams_output_and_returns_the_exit_code(svc):
    base = [PY, "-m", "cc_executor.client", "--url", svc.url, "--"]
    p = subprocess.run([*base, "python3", "-c",
                        "import sys; print('out'); sys.stderr.write('err'); sys.exit(5)"],
                       capture_output=True, text=True, timeout=30)
    assert (p.returncode, p.stdout, p.stderr) == (5, "out\n", "err")
    p = subprocess.run([*base, "rm", "-rf", "/nonexistent-cc"], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 2 and "command not allowed: rm" in p.stderr
