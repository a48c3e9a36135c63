"""Endings and long life: disconnects, SIGTERM, silent jobs, many jobs, health, logs.

Each scenario starts its own real server when it needs special settings or will stop it;
the others share one. Every process tree a test builds is checked gone by pid afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest
from websockets.asyncio.client import connect

from cc_executor import __version__, protocol
from cc_executor.client import ExecutorClient
from service_fixture import ServiceFactory, pid_alive, wait_gone

from conftest import wait_until

pytestmark = pytest.mark.anyio

# Prints its own pid, a plain child, a child that left the group with setsid(), and an orphan
# (its parent exited) in a session of its own; then waits. All must die with the job.
TREE = r"""
import os, subprocess, sys, time
py = sys.executable
plain = subprocess.Popen([py, "-c", "import time; time.sleep(60)"])
escaped = subprocess.Popen([py, "-c", "import os, time; os.setsid(); time.sleep(60)"])
mid = subprocess.Popen([py, "-c",
    "import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', "
    "'import os, time; os.setsid(); time.sleep(60)']); print(p.pid, flush=True)"],
    stdout=subprocess.PIPE)
orphan = int(mid.stdout.readline())
mid.wait()
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    try:
        if os.getpgid(escaped.pid) != os.getpgid(0) and os.getpgid(orphan) != os.getpgid(0):
            break
    except ProcessLookupError:
        pass
    time.sleep(0.005)
print(os.getpid(), plain.pid, escaped.pid, orphan, flush=True)
time.sleep(60)
"""


async def start_tree(client: ExecutorClient):
    """Start TREE; return (job, pids, event list being filled, collector task)."""
    job = await client.start(args=["python3", "-c", TREE])
    events: list = []
    collector = asyncio.ensure_future(job.result(on_event=events.append))

    def pids():
        out = b"".join(e.data for e in events if e.kind == "output" and e.stream == "stdout")
        return [int(x) for x in out.split()] if out.endswith(b"\n") else None

    assert await asyncio.to_thread(wait_until, pids, 15), "the tree never reported its pids"
    found = pids()
    assert len(found) == 4 and found[0] == job.pid and all(pid_alive(p) for p in found)
    assert os.getpgid(found[2]) != job.pgid and os.getpgid(found[3]) != job.pgid
    return job, found, events, collector


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    factory = ServiceFactory(tmp_path_factory.mktemp("lifecycle"))
    server = factory(allow=["python3", "echo", "sleep"],
                     env={"CC_EXECUTOR_PING_INTERVAL": "1", "CC_EXECUTOR_PING_TIMEOUT": "5"})
    yield server
    problems = factory.close()
    assert not problems, problems


@pytest.mark.parametrize("how", ["close", "abort"])
async def test_disconnect_mid_job_kills_the_whole_tree(svc, how):
    client = await ExecutorClient.connect(svc.url)
    job, pids, _events, collector = await start_tree(client)
    if how == "close":
        await client.close()
    else:  # the TCP connection just drops, no closing handshake
        client.abort()
        await client.close()
    collector.cancel()
    assert await asyncio.to_thread(wait_gone, pids, 15) == []

    def completions():
        return [e for e in svc.event_log()
                if e.get("job_id") == job.job_id and e["event"] == "completed"]

    done = await asyncio.to_thread(wait_until, completions, 10)
    assert len(done) == 1 and done[0]["reason"] == "cancelled" and done[0]["pid"] == job.pid
    # The server is unaffected.
    async with await ExecutorClient.connect(svc.url) as c:
        assert (await c.execute(args=["echo", "ok"])).stdout == b"ok\n"


async def test_sigterm_mid_job_reports_shutdown_and_exits_0(executor_service):
    server = executor_service(allow=["python3"])
    client = await ExecutorClient.connect(server.url)
    job, pids, _events, collector = await start_tree(client)
    t0 = time.monotonic()
    server.signal(signal.SIGTERM)
    result = await asyncio.wait_for(collector, 15)
    assert (result.status, result.reason) == ("shutdown", "shutdown")
    assert result.completed["job_id"] == job.job_id
    rc = await asyncio.to_thread(server.proc.wait, 15)
    assert rc == 0
    assert time.monotonic() - t0 < 8
    assert await asyncio.to_thread(wait_gone, pids, 5) == []
    await client.close()
    assert server.run_dir.joinpath("runs").exists()
    assert list(server.run_dir.joinpath("runs").glob("*.json")) == []  # no stale records


async def test_sigterm_with_no_jobs_exits_0_promptly(executor_service):
    server = executor_service()
    async with await ExecutorClient.connect(server.url) as c:
        await c.ping()
        t0 = time.monotonic()
        server.signal(signal.SIGTERM)
        assert await asyncio.to_thread(server.proc.wait, 10) == 0
        assert time.monotonic() - t0 < 5


def test_service_serves_with_stderr_closed_and_survives_sigusr1(tmp_path):
    """The stack-dump diagnostics (SIGUSR1, the shutdown watchdog) want stderr; without one the
    service must still serve, take SIGUSR1 harmlessly and stop cleanly on SIGTERM."""
    import subprocess
    import sys
    import urllib.request

    proc = subprocess.Popen(
        ["sh", "-c", 'exec "$0" -m cc_executor --port 0 --run-dir "$1" --log-dir "$2" 2>&-',
         sys.executable, str(tmp_path / "run"), str(tmp_path / "logs")],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        url = proc.stdout.readline().decode().strip()
        assert url.startswith("ws://127.0.0.1:"), url
        proc.send_signal(signal.SIGUSR1)
        # A round trip after the signal: a service it killed could not answer.
        health = url.replace("ws://", "http://").replace("/ws", "/health")
        with urllib.request.urlopen(health, timeout=10) as r:
            assert json.loads(r.read())["status"] == "ok"
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        proc.stdout.close()


def test_await_chain_follows_awaits_to_the_innermost_coroutine():
    """What the shutdown watchdog prints for a stuck task: the whole chain, not its top frame."""
    from cc_executor.__main__ import await_chain

    async def inner():
        await asyncio.Event().wait()

    async def middle():
        await inner()

    async def main():
        task = asyncio.ensure_future(middle())
        await asyncio.sleep(0)
        try:
            return await_chain(task)
        finally:
            task.cancel()

    chain = asyncio.run(main())
    assert [line.rsplit(" in ", 1)[1] for line in chain[:3]] == ["middle", "inner", "wait"], chain


async def test_silent_job_longer_than_the_ping_interval_completes(svc):
    # The server pings every 1 s; this client never pings and the job says nothing for 2 s.
    async with await ExecutorClient.connect(svc.url, ping_interval=None) as c:
        r = await c.execute(args=["python3", "-c", "import time; time.sleep(2); print('woke')"])
        assert (r.reason, r.exit_code, r.stdout) == ("exited", 0, b"woke\n")
    # The seed's own settings (ping_timeout=None), on the older path.
    async with connect(svc.ws("/ws/mcp"), ping_timeout=None) as ws:
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "execute",
                                  "params": {"command": "sleep 1.5"}}))
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if msg.get("method") == "process.completed":
                break
        assert msg["params"]["exit_code"] == 0 and msg["params"]["reason"] == "exited"


async def test_fifty_concurrent_jobs_on_one_connection(svc):
    n, lines = 50, 2000
    script = ("import sys\n"
              "i = int(sys.argv[1])\n"
              "sys.stdout.write(''.join(f'{i}:{k}\\n' for k in range(%d)))\n"
              "sys.stderr.write(f'err{i}')\n" % lines)
    async with connect(svc.url, compression=None, max_size=2**26) as ws:
        hello = json.loads(await ws.recv())
        assert hello["method"] == "connected"
        for i in range(n):
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": i, "method": "execute",
                                      "params": {"args": ["python3", "-c", script, str(i)]}}))
        replies: dict[int, dict] = {}
        notes: list[dict] = []
        completed = 0
        deadline = time.monotonic() + 60
        while completed < n or len(replies) < n:
            msg = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
            if "id" in msg:
                replies[msg["id"]] = msg
            else:
                notes.append(msg)
                completed += msg["method"] == "process.completed"
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": "last", "method": "ping"}))
        while True:  # anything arriving before the pong would be an extra notification
            msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if msg.get("id") == "last":
                break
            notes.append(msg)
    job_of = {}
    for i in range(n):
        assert replies[i]["result"]["status"] == "started", replies[i]
        protocol.ExecuteStarted.model_validate(replies[i]["result"])
        job_of[replies[i]["result"]["job_id"]] = i
    assert len(job_of) == n
    by_job: dict[str, list[dict]] = {j: [] for j in job_of}
    for m in notes:
        protocol.NOTIFICATION_PARAMS[m["method"]].model_validate(m["params"])
        by_job[m["params"]["job_id"]].append(m)
    for job_id, i in job_of.items():
        msgs = by_job[job_id]
        methods = [m["method"] for m in msgs]
        assert methods[0] == "process.started" and methods.count("process.started") == 1
        assert methods[-1] == "process.completed" and methods.count("process.completed") == 1
        out = [m["params"] for m in msgs if m["method"] == "process.output"]
        stdout = "".join(p["data"] for p in out if p["type"] == "stdout")
        stderr = "".join(p["data"] for p in out if p["type"] == "stderr")
        assert stdout == "".join(f"{i}:{k}\n" for k in range(lines)), f"job {i} output differs"
        assert stderr == f"err{i}"
        assert [p["seq"] for p in out] == sorted(p["seq"] for p in out)
        end = msgs[-1]["params"]
        assert (end["exit_code"], end["reason"], end["status"]) == (0, "exited", "completed")
        assert end["stdout_bytes"] == len(stdout)


async def test_health_reports_the_service(svc):
    h = svc.health()
    assert h["status"] == "ok" and h["version"] == __version__
    assert h["uptime"] > 0 and h["jobs"] == {"running": 0, "queued": 0}
    assert h["connections"] == 0
    assert {"load1", "cores", "mem_available"} <= set(h["load"])
    assert h["throttle"]["enabled"] is False
    async with await ExecutorClient.connect(svc.url) as c:
        job = await c.start(args=["sleep", "30"])
        h = svc.health()
        assert h["jobs"] == {"running": 1, "queued": 0} and h["connections"] == 1
        await job.cancel()
        await job.result()
    assert await asyncio.to_thread(wait_until, lambda: svc.health()["connections"] == 0, 5)
    assert wait_gone([job.pid], 5) == []


async def test_ws_mcp_alias_serves_the_same_protocol(svc):
    async with await ExecutorClient.connect(svc.ws("/ws/mcp")) as c:
        assert c.session["version"] == __version__
        r = await c.execute("echo via mcp path")
        assert r.stdout == b"via mcp path\n" and r.ok


async def test_event_log_has_job_events_and_no_secrets(executor_service):
    token, secret = "tok-9f8e7d6c5b4a", "env-value-31415926"
    server = executor_service("--token", token, allow=["python3", "sleep"])
    async with await ExecutorClient.connect(server.url, token=token) as c:
        ok = await c.execute(args=["python3", "-c", "import os; print(len(os.environ['CC_S']))"],
                             env={"CC_S": secret})
        assert ok.stdout == f"{len(secret)}\n".encode()
        slow = await c.start(args=["sleep", "30"], env={"CC_S2": secret})
        await slow.cancel()
        cancelled = await slow.result()
    events = await asyncio.to_thread(
        wait_until, lambda: [e for e in server.event_log() if e["event"] == "completed"]
        if len([e for e in server.event_log() if e["event"] == "completed"]) >= 2 else None, 5)
    assert events
    log = server.event_log()
    for result in (ok, cancelled):
        mine = [e for e in log if e.get("job_id") == result.job_id]
        kinds = [e["event"] for e in mine]
        assert kinds[0] == "started" and kinds[-1] == "completed" and kinds.count("completed") == 1
        assert mine[0]["pid"] == result.pid and mine[-1]["pid"] == result.pid
        assert mine[0]["pgid"] == result.pgid and mine[-1]["pgid"] == result.pgid
        assert mine[-1]["reason"] == result.reason
        assert all(isinstance(e["ts"], float) for e in mine)
    assert "cancel" in [e["event"] for e in log if e.get("job_id") == cancelled.job_id]
    server.stop()
    text = (server.log_dir / "cc_executor.jsonl").read_text()
    for line in text.splitlines():
        json.loads(line)  # every line is one JSON object
    assert token not in text and secret not in text
    assert token not in server.stderr() and secret not in server.stderr()


def test_env_example_is_generated_from_the_settings():
    from cc_executor.__main__ import build_settings, parse_args
    from cc_executor.settings import env_example
    from service_fixture import REPO

    assert (REPO / ".env.example").read_text() == env_example()
    assert "CC_EXECUTOR_PROGRESS_INTERVAL=5.0" in env_example()
    ns = parse_args(["--env-file", "/nonexistent/.env", "--progress-interval", "0"])
    assert build_settings(ns).progress_interval == 0


def test_the_event_log_rotates_by_size_looking_every_64_records(tmp_path):
    """The event file's size is looked at every 64 records, not before each: it rotates, and a
    file passes its size by at most those records (here 300 records of ~100 bytes, 2 KB max)."""
    import logging

    from cc_executor.event_log import _EventFile, _JsonLines

    handler = _EventFile(tmp_path / "events.jsonl", maxBytes=2048, backupCount=50)
    handler.setFormatter(_JsonLines())
    try:
        for i in range(300):
            handler.handle(logging.makeLogRecord(
                {"msg": "e", "job_event": {"event": "started", "job_id": f"{i:060d}"}}))
    finally:
        handler.close()
    files = sorted(tmp_path.iterdir())
    lines = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert len(lines) == 300 and len(files) >= 4  # nothing lost, and it did rotate
    one = len((files[0].read_text().splitlines() or [""])[0]) + 1
    assert all(f.stat().st_size <= 2048 + 64 * one for f in files)
