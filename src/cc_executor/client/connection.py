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
from .resume import ResumeBooks, sleep_backoff

DEFAULT_URL = "ws://127.0.0.1:8004/ws"

log = logging.getLogger("cc_executor.client")


class ExecutorClient:
    def __init__(self, ws: ClientConnection, reconnect: Callable[[], Any] | None = None,
                 detach_timeout: float = 60.0, resume_timeout: float = 30.0):
        self.ws = ws
        # resume=True: how to connect again, and for how long to keep trying (see `_resume`).
        self._reconnect = reconnect
        self.detach_timeout = detach_timeout
        self.resume_timeout = resume_timeout
        self._books = ResumeBooks()
        self._closing = False
        self._resuming: asyncio.Task | None = None
        self.reconnects = 0
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
                      headers: dict[str, str] | None = None, resume: bool = False,
                      detach_timeout: float = 60.0,
                      resume_timeout: float = 30.0) -> "ExecutorClient":
        """`resume=True`: every job is started with `detach_timeout` (unless given), and when
        the connection drops the client reconnects by itself (backoff, for up to
        `resume_timeout` seconds) and re-attaches each unfinished job from the last output it
        gave the caller: iterations go on with no gap and no duplicate. Requests in flight at
        the drop still fail with ConnectionLost (whether they were carried out is unknown)."""
        hdrs = dict(headers or {})
        if token:
            hdrs["Authorization"] = f"Bearer {token}"

        def dial():
            return connect(url, additional_headers=hdrs, open_timeout=open_timeout,
                           ping_interval=ping_interval, ping_timeout=ping_timeout,
                           max_size=max_size, compression=None, max_queue=64)

        ws = await dial()
        client = cls(ws, dial if resume else None, detach_timeout, resume_timeout)
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
        self._closing = True
        if self._resuming is not None:
            self._resuming.cancel()
            await asyncio.wait({self._resuming})
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
        answering. Every pending request and every job's iteration ends with ConnectionLost
        (no resume: to simulate a network blip, abort `ws.transport` itself)."""
        self._closing = True
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
        self._books.forget(job_id)

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
        if self._reconnect is not None and not self._books.admit(job_id, method, params):
            return  # replayed after a resume, and already given to the caller
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
        if self._resuming is not None and not self._resuming.done():
            await asyncio.wait({self._resuming}, timeout=self.resume_timeout)
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
                    stall_timeout: float | None = None, detach_timeout: float | None = None,
                    limits: dict[str, float] | None = None,
                    observer: JobObserver | None = None) -> JobHandle:
        """Send `execute`; the handle streams the job's events. `observer`: hooks on the job."""
        if detach_timeout is None and self._reconnect is not None:
            detach_timeout = self.detach_timeout
        params: dict[str, Any] = {}
        if command is not None:
            params["command"] = command
        if args is not None:
            params["args"] = list(args)
        for key, value in (("cwd", cwd), ("env", env), ("input", input), ("timeout", timeout),
                           ("stall_timeout", stall_timeout), ("detach_timeout", detach_timeout),
                           ("limits", limits)):
            if value is not None:
                params[key] = value
        reply = await self.request("execute", params)
        self._books.add(reply["job_id"], reply.get("resume_token"))
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
                elif method == protocol.PROCESS_DETACHED and "job_id" in params:
                    self._moved_away(params["job_id"])
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
            if self._resuming is not None and not self._resuming.done():
                pass  # a resume under way lost its new connection: it tries again itself
            elif self._reconnect is not None and not self._closing:  # even with no job live:
                # the caller's next request expects a working connection
                self._resuming = asyncio.get_running_loop().create_task(self._resume())
                # Jobs without a token (detach_timeout 0) ended with the connection.
                self._fail_jobs(lost, set(self._jobs) - set(self._books.unfinished()))
            else:
                self._fail_jobs(lost)

    def _fail_jobs(self, lost: ConnectionLost, only: set[str] | None = None) -> None:
        for job_id, q in list(self._jobs.items()):
            if only is None or job_id in only:
                q.put_nowait(lost)

    def _moved_away(self, job_id: str) -> None:
        """`process.detached`: another connection attached the job; it ends here."""
        self._books.forget(job_id)
        q = self._jobs.get(job_id)
        if q is not None:
            q.put_nowait(ConnectionLost(f"job {job_id} was attached by another connection"))

    async def _resume(self) -> None:
        """Reconnect with backoff, then attach every unfinished job from its last seq."""
        deadline = asyncio.get_running_loop().time() + self.resume_timeout
        why: BaseException = self._closed or ConnectionError("closed")
        for attempt in range(1000):  # bounded by the deadline long before
            if asyncio.get_running_loop().time() >= deadline:
                break
            await sleep_backoff(attempt)
            try:
                ws = await aio.wait_for(self._reconnect(), 10.0)
            except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as e:
                why = e
                continue
            self.ws, self._closed = ws, None
            self._connected = asyncio.Event()
            self._reader = asyncio.get_running_loop().create_task(self._read())
            try:
                await aio.wait_for(self._connected.wait(), 10.0)
                await self._attach_all()
            except (ConnectionLost, asyncio.TimeoutError) as e:
                why = e
                continue  # dropped again meanwhile: the reader's end started no resume (ours)
            self.reconnects += 1
            return
        lost = ConnectionLost(f"could not resume within {self.resume_timeout:g} s: {why}")
        self._closed = lost
        self._fail_jobs(lost)

    async def _attach_all(self) -> None:
        for job_id, book in self._books.unfinished().items():
            rid = next(self._ids)
            fut = asyncio.get_running_loop().create_future()
            self._pending[rid] = fut
            try:
                await self.ws.send(protocol.request_json(rid, "attach", {
                    "job_id": job_id, "resume_token": book.token, "since_seq": book.last_seq}))
            except websockets.ConnectionClosed as e:
                self._pending.pop(rid, None)
                raise ConnectionLost(str(e)) from None
            try:
                await fut
            except ConnectionLost:
                raise
            except ExecutorError as e:  # expired or unknown: that job is lost for good
                self._books.forget(job_id)
                self._fail_jobs(ConnectionLost(f"job {job_id} cannot be resumed: {e}"),
                                {job_id})

