"""The connection to one service: requests by id, notifications routed to their jobs.

One reader task reads every frame: a response goes to the request that waits for its `id`, a
notification to its job's queue by `job_id` (parsed there into a typed `Event`). Several jobs may
run at once on one connection. Frames are built by `cc_executor.protocol` (`request_json`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Callable
from typing import Any

import websockets
from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.protocol import State

from .. import aio, defaults, protocol
from .errors import ConnectionLost, ExecutorError
from .events import KINDS, Event, JobResult
from .job import JobHandle, JobObserver

DEFAULT_URL = "ws://127.0.0.1:8004/ws"

log = logging.getLogger("cc_executor.client")


class ExecutorClient:
    def __init__(self, ws: ClientConnection):
        self.ws = ws
        self.session: dict = {}
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._jobs: dict[str, asyncio.Queue] = {}
        self._abandoned: set[str] = set()
        self._connected = asyncio.Event()
        self._closed: BaseException | None = None
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, url: str = DEFAULT_URL, token: str | None = None, *,
                      open_timeout: float = 10.0,
                      ping_interval: float | None = defaults.PING_INTERVAL,
                      ping_timeout: float | None = defaults.PING_TIMEOUT,
                      max_size: int | None = 2**28,
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
            client.abort()
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

    def abort(self) -> None:
        """Drop the connection now, with no closing handshake: for a peer that has stopped
        answering. Every pending request and every job's iteration ends with ConnectionLost."""
        transport = self.ws.transport
        if transport is not None:
            transport.abort()

    @property
    def is_open(self) -> bool:
        """Whether the connection can still carry requests (not closing, closed or lost)."""
        return self.ws.state is State.OPEN and self._closed is None

    def forget_job(self, job_id: str) -> None:
        """Stop routing `job_id`'s notifications (its completion came)."""
        self._jobs.pop(job_id, None)

    def abandon_job(self, job_id: str) -> None:
        """Drop `job_id`'s notifications from now on, up to its completion: its handle gave up
        on it (an observer ended its iteration), and nobody will read them."""
        self._jobs.pop(job_id, None)
        self._abandoned.add(job_id)

    def _route(self, method: str, params: dict) -> None:
        """One job notification into its job's queue, parsed into a typed `Event`. A frame our
        models refuse (a newer server's new value, say) still reaches the job, untyped
        (`message` None), and is logged: one odd frame must not end the connection."""
        job_id = params["job_id"]
        if job_id in self._abandoned:
            if method == protocol.PROCESS_COMPLETED:
                self._abandoned.discard(job_id)
            return
        try:
            event = Event.parse(method, params)
        except ValidationError as e:
            log.warning("%s for job %s does not match the protocol: %s", method, job_id,
                        str(e).splitlines()[0])
            event = Event(KINDS[method], params)
        self._jobs.setdefault(job_id, asyncio.Queue()).put_nowait(event)

    # ---- requests --------------------------------------------------------------------------

    async def request(self, method: str, params: dict | None = None) -> Any:
        if self._closed is not None:
            raise ConnectionLost(str(self._closed))
        rid = next(self._ids)
        frame = protocol.request_json(rid, method, params)  # may raise: nothing registered yet
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            await self.ws.send(frame)
        except websockets.ConnectionClosed as e:
            self._pending.pop(rid, None)
            raise ConnectionLost(str(e)) from None
        return await fut

    async def start(self, command: str | None = None, *, args: list[str] | None = None,
                    cwd: str | None = None, env: dict[str, str | None] | None = None,
                    input: str | None = None, timeout: float | None = None,
                    stall_timeout: float | None = None, limits: dict[str, float] | None = None,
                    observer: JobObserver | None = None) -> JobHandle:
        """Send `execute`; the handle streams the job's events. `observer`: hooks on the job."""
        params: dict[str, Any] = {}
        if command is not None:
            params["command"] = command
        if args is not None:
            params["args"] = list(args)
        for key, value in (("cwd", cwd), ("env", env), ("input", input), ("timeout", timeout),
                           ("stall_timeout", stall_timeout), ("limits", limits)):
            if value is not None:
                params[key] = value
        reply = await self.request("execute", params)
        queue = self._jobs.setdefault(reply["job_id"], asyncio.Queue())
        return JobHandle(self, reply, queue, observer)

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
                elif method in KINDS and "job_id" in params:
                    self._route(method, params)
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

