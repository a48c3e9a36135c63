"""The stack's floor: our protocol's least, on our stack, with none of our job machinery.

A baseline server for `bench_service.py` figure 1, run like websocketd in the same run. It is
the same stack as the service (FastAPI app, a plain Starlette WebSocket route, uvicorn with
httptools and its websockets sans-I/O protocol, uvloop) and sends the same five messages for a
job (`connected`, the execute reply, `process.started`, `process.output`, `process.completed`),
spawning with `subprocess.Popen` in a new session as the service does. What it leaves out is
everything that makes the service trustworthy: validation, the allow-list, admission, the job's
cgroup, the registry, the event log, metrics, timeouts, back-pressure, detachment.

So `echo hi` through it against websocketd is what this stack and this protocol cost by
themselves (an upgrade answered by Python, a request before the spawn, five frames), and the
service against it is what our machinery adds. Not for anything but measuring: one job at a
time per connection, no checks.

Usage: `python benchmarks/stack_floor.py` prints `ws://127.0.0.1:<port>/ws`, serves until
SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess

import uvicorn
import uvloop
from fastapi import FastAPI
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

_DEVNULL = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)


def _note(method: str, params: dict) -> str:
    return json.dumps({"jsonrpc": "2.0", "method": method, "params": params})


async def _run(ws: WebSocket, req: dict) -> None:
    loop = asyncio.get_running_loop()
    proc = subprocess.Popen(req["params"]["args"], stdin=_DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True, bufsize=0)
    job = {"job_id": "j", "pid": proc.pid, "pgid": proc.pid}
    await ws.send_text(json.dumps({"jsonrpc": "2.0", "id": req["id"], "result": job}))
    await ws.send_text(_note("process.started", job))
    chunks: list[bytes] = []
    stdout = proc.stdout.fileno()
    open_fds = {stdout, proc.stderr.fileno()}
    read_all = loop.create_future()

    def readable(fd: int) -> None:
        data = os.read(fd, 1 << 16)
        if data:
            if fd == stdout:
                chunks.append(data)
            return
        loop.remove_reader(fd)
        open_fds.discard(fd)
        if not open_fds:
            read_all.set_result(None)

    for fd in list(open_fds):
        os.set_blocking(fd, False)
        loop.add_reader(fd, readable, fd)
    await read_all
    out = b"".join(chunks)
    await ws.send_text(_note("process.output", {"job_id": "j", "type": "stdout", "seq": 0,
                                                 "offset": 0, "data": out.decode()}))
    pidfd = os.pidfd_open(proc.pid)
    exited = loop.create_future()
    loop.add_reader(pidfd, exited.set_result, None)
    await exited
    loop.remove_reader(pidfd)
    os.close(pidfd)
    code = proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    await ws.send_text(_note("process.completed", {
        "job_id": "j", "status": "success" if code == 0 else "failed", "reason": "exited",
        "exit_code": code, "stdout_bytes": len(out), "stderr_bytes": 0}))


async def endpoint(ws: WebSocket) -> None:
    await ws.accept()
    await ws.send_text(_note("connected", {"session_id": "floor", "version": "0"}))
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        await _run(ws, json.loads(message["text"]))


async def main() -> None:
    app = FastAPI()
    app.router.routes.append(WebSocketRoute("/ws", endpoint))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off",
                                           ws_per_message_deflate=False))
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    print(f"ws://127.0.0.1:{sock.getsockname()[1]}/ws", flush=True)
    await task


if __name__ == "__main__":
    uvloop.run(main())
