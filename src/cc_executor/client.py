"""The Python client of the executor service, for agents and the stress harness.

    async with await ExecutorClient.connect("ws://127.0.0.1:8004/ws", token=...) as client:
        result = await client.execute(args=["claude", "-p", "What is 2+2?"], timeout=120)
        print(result.exit_code, result.stdout_text)

        job = await client.start(command="claude -p 'What is 3+3?'")
        async for event in job:            # streaming: output events, then the completion
            if event.kind == "output":
                print(event.stream, event.data)
            # also "queued", "started", and "progress" (a keepalive while the job is silent)
        result = await job.result()

Several jobs may run at once on one connection: one reader task routes every notification to its
job by `job_id`, and every response to its request by `id`. `python -m cc_executor.client -- CMD`
streams one command's output to the terminal and exits with its exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect

from . import aio, protocol

DEFAULT_URL = "ws://127.0.0.1:8004/ws"


class ExecutorError(Exception):
    """The service answered a request with a JSON-RPC error.

    Branch on `code` and `reason` (`error.data.reason`, one of `protocol.ErrorReason`), never on
    `message`: the message is for people and may be reworded."""

    def __init__(self, code: int, message: str, data: Any = None):
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message
        self.data = data

    @property
    def reason(self) -> str | None:
        """`data.reason` when the service gave one (see `protocol.ErrorReason`)."""
        return self.data.get("reason") if isinstance(self.data, dict) else None


class ConnectionLost(ExecutorError):
    def __init__(self, detail: str):
        super().__init__(-1, f"connection lost: {detail}")


@dataclass(frozen=True)
class Event:
    """A notification about one job: queued, started, output, progress or completed.

    `progress` is the server's keepalive while the job writes nothing (`process.progress`:
    `elapsed`, `silent_for`); it carries no output, and `JobHandle.result` only passes it to
    `on_event`."""

    kind: str
    params: dict
    received: float = field(default_factory=time.monotonic)

    @property
    def stream(self) -> str | None:
        return self.params.get("type") if self.kind == "output" else None

    @property
    def data(self) -> bytes:
        return protocol.output_bytes(self.params) if self.kind == "output" else b""


@dataclass
class JobResult:
    job_id: str
    status: str
    reason: str
    exit_code: int
    signal: int | None
    duration: float
    stdout: bytes
    stderr: bytes
    pid: int | None = None
    pgid: int | None = None
    batches: int = 0
    queued: bool = False
    message: str | None = None
    completed: dict = field(default_factory=dict)
    first_output_at: float | None = None
    wall: float = 0.0

    @property
    def ok(self) -> bool:
        return self.reason == "exited" and self.exit_code == 0

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", errors="replace")


_KINDS = {"process.queued": "queued", "process.started": "started",
          "process.output": "output", "process.progress": "progress",
          "process.completed": "completed"}


class JobHandle:
    """A job the service accepted. Iterate for events (ends after `completed`), or `result()`."""

    def __init__(self, client: "ExecutorClient", reply: dict, queue: asyncio.Queue):
        self.client = client
        self.job_id: str = reply["job_id"]
        self.status: str = reply["status"]
        self.pid: int | None = reply.get("pid")
        self.pgid: int | None = reply.get("pgid")
        self.position: int | None = reply.get("position")
        self.queued = reply["status"] == "queued"
        # The limits in force and the load stretch the service applied when the job started
        # (None while it is queued: they come with `process.started`).
        self.timeout: float | None = reply.get("timeout")
        self.stall_timeout: float | None = reply.get("stall_timeout")
        self.timeout_factor: float | None = reply.get("timeout_factor")
        self._queue = queue
        self._done = False
        self._t0 = time.monotonic()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        while not self._done:
            ev = await self._queue.get()
            if isinstance(ev, BaseException):
                self._done = True
                raise ev
            if ev.kind == "started":
                self.pid, self.pgid = ev.params.get("pid"), ev.params.get("pgid")
                self.timeout, self.stall_timeout, self.timeout_factor = (
                    ev.params.get("timeout"), ev.params.get("stall_timeout"),
                    ev.params.get("timeout_factor"))
            if ev.kind == "completed":
                self._done = True
                self.client._jobs.pop(self.job_id, None)
            yield ev

    async def result(self, on_event: Callable[[Event], Any] | None = None) -> JobResult:
        """Collect everything into a JobResult. `on_event` sees each event as it arrives."""
        out: list[bytes] = []
        err: list[bytes] = []
        batches = 0
        first = None
        completed: dict = {}
        async for ev in self:
            if on_event is not None:
                on_event(ev)
            if ev.kind == "output":
                batches += 1
                if first is None:
                    first = ev.received
                (out if ev.stream == "stdout" else err).append(ev.data)
            elif ev.kind == "completed":
                completed = ev.params
        return JobResult(
            job_id=self.job_id, status=completed.get("status", "unknown"),
            reason=completed.get("reason", "unknown"), exit_code=completed.get("exit_code", -1),
            signal=completed.get("signal"), duration=completed.get("duration", 0.0),
            stdout=b"".join(out), stderr=b"".join(err), pid=self.pid, pgid=self.pgid, batches=batches,
            queued=self.queued, message=completed.get("error"), completed=completed,
            first_output_at=None if first is None else first - self._t0,
            wall=time.monotonic() - self._t0)

    async def control(self, kind: str) -> dict:
        return await self.client.control(kind, job_id=self.job_id)

    async def cancel(self) -> dict:
        return await self.control("CANCEL")


class ExecutorClient:
    def __init__(self, ws: ClientConnection):
        self.ws = ws
        self.session: dict = {}
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._jobs: dict[str, asyncio.Queue] = {}
        self._connected = asyncio.Event()
        self._closed: BaseException | None = None
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, url: str = DEFAULT_URL, token: str | None = None, *,
                      open_timeout: float = 10.0, ping_interval: float | None = 20.0,
                      ping_timeout: float | None = 120.0, max_size: int | None = 2**28,
                      headers: dict[str, str] | None = None) -> "ExecutorClient":
        hdrs = dict(headers or {})
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        ws = await connect(url, additional_headers=hdrs, open_timeout=open_timeout,
                           ping_interval=ping_interval, ping_timeout=ping_timeout,
                           max_size=max_size, compression=None, max_queue=64)
        client = cls(ws)
        try:
            await aio.wait_for(client._connected.wait(), open_timeout)
        except asyncio.TimeoutError:
            await client.close()
            raise ConnectionLost("no 'connected' notification from the server") from None
        except BaseException:  # cancelled while waiting: nobody will ever close this client
            client._reader.cancel()
            ws.transport.abort()
            raise
        return client

    async def __aenter__(self) -> "ExecutorClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        # asyncio.wait, not `await self._reader`: the reader's end (cancelled or failed) is not
        # the caller's business, but a cancel of the caller (a timeout around close, Ctrl-C)
        # must still reach it rather than be swallowed with the reader's CancelledError.
        await asyncio.wait({self._reader})
        if not self._reader.cancelled():
            self._reader.exception()  # retrieved: no "exception was never retrieved" at exit

    # ---- requests --------------------------------------------------------------------------

    async def request(self, method: str, params: dict | None = None) -> Any:
        if self._closed is not None:
            raise ConnectionLost(str(self._closed))
        rid = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            await self.ws.send(protocol.request_json(rid, method, params))
        except websockets.ConnectionClosed as e:
            self._pending.pop(rid, None)
            raise ConnectionLost(str(e)) from None
        return await fut

    async def start(self, command: str | None = None, *, args: list[str] | None = None,
                    cwd: str | None = None, env: dict[str, str | None] | None = None,
                    input: str | None = None, timeout: float | None = None,
                    stall_timeout: float | None = None) -> JobHandle:
        params: dict[str, Any] = {}
        if command is not None:
            params["command"] = command
        if args is not None:
            params["args"] = list(args)
        for key, value in (("cwd", cwd), ("env", env), ("input", input), ("timeout", timeout),
                           ("stall_timeout", stall_timeout)):
            if value is not None:
                params[key] = value
        reply = await self.request("execute", params)
        queue = self._jobs.setdefault(reply["job_id"], asyncio.Queue())
        return JobHandle(self, reply, queue)

    async def execute(self, command: str | None = None, *,
                      on_event: Callable[[Event], Any] | None = None, **kwargs) -> JobResult:
        job = await self.start(command, **kwargs)
        return await job.result(on_event)

    async def control(self, kind: str, job_id: str | None = None) -> dict:
        params: dict[str, Any] = {"type": kind}
        if job_id is not None:
            params["job_id"] = job_id
        return await self.request("control", params)

    async def jobs(self) -> list[dict]:
        return (await self.request("jobs"))["jobs"]

    async def ping(self) -> dict:
        return await self.request("ping")

    # ---- the reader ----------------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                msg = json.loads(frame)
                if "id" in msg and ("result" in msg or "error" in msg):
                    fut = self._pending.pop(msg["id"], None)
                    if fut is None or fut.done():
                        continue
                    if "error" in msg:
                        e = msg["error"]
                        fut.set_exception(ExecutorError(e.get("code", 0), e.get("message", ""),
                                                        e.get("data")))
                    else:
                        fut.set_result(msg["result"])
                    continue
                method = msg.get("method")
                params = msg.get("params") or {}
                if method == "connected":
                    self.session = params
                    self._connected.set()
                elif method in _KINDS and "job_id" in params:
                    self._jobs.setdefault(params["job_id"], asyncio.Queue()).put_nowait(
                        Event(_KINDS[method], params))
        except websockets.ConnectionClosed as e:
            self._closed = e
        except Exception as e:  # noqa: BLE001 - surface anything to waiters
            self._closed = e
        finally:
            if self._closed is None:
                self._closed = ConnectionError("closed")
            lost = ConnectionLost(str(self._closed))
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(lost)
            self._pending.clear()
            for q in self._jobs.values():
                q.put_nowait(lost)


# ---- the small CLI ---------------------------------------------------------------------------

async def _cli(ns: argparse.Namespace) -> int:
    client = await ExecutorClient.connect(ns.url, ns.token)
    try:
        job = await client.start(args=ns.cmd, cwd=ns.cwd, timeout=ns.timeout,
                                 stall_timeout=ns.stall_timeout)
        out, err = sys.stdout.buffer, sys.stderr.buffer
        end: dict = {}
        async for ev in job:
            if ev.kind == "output":
                f = out if ev.stream == "stdout" else err
                f.write(ev.data)
                f.flush()
            elif ev.kind == "completed":
                end = ev.params
        if end.get("reason") not in ("exited", None):
            print(f"cc_executor: job ended: {end.get('reason')}"
                  f"{' - ' + end['error'] if end.get('error') else ''}", file=sys.stderr)
        code = end.get("exit_code", 1)
        return code if code >= 0 else 128 - code
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cc_executor.client",
                                description="Run one command on a cc_executor service.")
    p.add_argument("--url", default=os.environ.get("CC_EXECUTOR_URL", DEFAULT_URL))
    p.add_argument("--token", default=os.environ.get("CC_EXECUTOR_TOKEN"))
    p.add_argument("--cwd")
    p.add_argument("--timeout", type=float)
    p.add_argument("--stall-timeout", type=float)
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    ns = p.parse_args(argv)
    if ns.cmd and ns.cmd[0] == "--":
        ns.cmd = ns.cmd[1:]
    if not ns.cmd:
        p.error("give the command after --")
    try:
        return asyncio.run(_cli(ns))
    except ExecutorError as e:
        print(f"cc_executor: {e}", file=sys.stderr)
        return 2
    except (OSError, websockets.InvalidHandshake, websockets.InvalidURI) as e:
        print(f"cc_executor: cannot connect to {ns.url}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
