"""One job the service accepted: its events as they come, its result, its controls, and the
hooks a caller may attach to watch it.

Why hooks (`JobObserver`) rather than subclassing: a supervisor (the stress harness's multi-server
pool) needs to see every event of every job, to learn of a lost connection, and to check before a
control request goes out, without copying a handle's state or overriding its internals.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from .errors import ConnectionLost
from .events import Event, JobResult

if TYPE_CHECKING:
    from .connection import ExecutorClient


class JobObserver:
    """Hooks on one job, awaited in the task that iterates it. The defaults do nothing.

    An exception raised by `on_event` or `before_control` ends that iteration or that control
    request with it (raise a `ConnectionLost` subclass to have callers treat the job as lost)."""

    async def on_event(self, job: JobHandle, event: Event) -> None:
        """Each event, before the iterating caller sees it."""

    async def on_lost(self, job: JobHandle, error: ConnectionLost) -> None:
        """The job's iteration ends with `error` (the connection, or a hook, gave up on it)."""

    async def before_control(self, job: JobHandle, kind: str) -> None:
        """A `control` request (PAUSE, RESUME, CANCEL) is about to be sent for this job."""


class JobHandle:
    """A job the service accepted. Iterate for events (ends after `completed`), or `result()`."""

    def __init__(self, client: ExecutorClient, reply: dict, queue: asyncio.Queue,
                 observer: JobObserver | None = None):
        self.client = client
        self.observer = observer
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
        self.limits_enforced: dict | None = reply.get("limits_enforced")
        self.done = False
        self._queue = queue
        self._t0 = time.monotonic()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        try:
            while not self.done:
                ev = await self._queue.get()
                if isinstance(ev, BaseException):
                    self.done = True
                    raise ev
                self._note(ev)
                if self.observer is not None:
                    await self.observer.on_event(self, ev)
                yield ev
        except ConnectionLost as e:
            if not self.done:  # given up before its completion: nobody reads the rest
                self.done = True
                self.client.abandon_job(self.job_id)
            if self.observer is not None:
                await self.observer.on_lost(self, e)
            raise

    def _note(self, ev: Event) -> None:
        if ev.kind == "started":
            self.pid, self.pgid = ev.params.get("pid"), ev.params.get("pgid")
            self.timeout, self.stall_timeout, self.timeout_factor = (
                ev.params.get("timeout"), ev.params.get("stall_timeout"),
                ev.params.get("timeout_factor"))
        if ev.kind == "completed":
            self.done = True
            self.client.forget_job(self.job_id)

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
            stdout=b"".join(out), stderr=b"".join(err), pid=self.pid, pgid=self.pgid,
            batches=batches, queued=self.queued, message=completed.get("error"),
            completed=completed, first_output_at=None if first is None else first - self._t0,
            wall=time.monotonic() - self._t0)

    async def control(self, kind: str) -> dict:
        if self.observer is not None:
            await self.observer.before_control(self, kind.upper())
        return await self.client.control(kind, job_id=self.job_id)

    async def cancel(self) -> dict:
        return await self.control("CANCEL")
