"""`Outbox`: a connection's replies, written in order by a task of their own.

Why: the frame loop used to await each reply's send before reading the next frame. With a
client that has stopped reading, a send waits behind the output backlog (the per-connection
send lock is held by a job's pump), so the loop stopped reading, and a CANCEL sent after it was
not even decoded: the second of two flooding jobs kept running until the client read again.
Now the loop decodes and carries out each request at once (a control signals the process group
right then) and only hands the reply here; replies still leave in request order, each followed
by what must come after it (a started job's announcement).

Bounded: when `limit` replies wait, `put` waits too, so a client that sends requests without
ever reading cannot grow the server's memory; control then acts once the client reads again.
Knows nothing of WebSockets: an entry is just an async callable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("cc_executor.outbox")

Entry = Callable[[], Awaitable[None]]

DEFAULT_LIMIT = 1024


class Outbox:
    """A FIFO of async callables, run one at a time, in order, by one task."""

    def __init__(self, limit: int = DEFAULT_LIMIT):
        self._queue: asyncio.Queue[Entry | None] = asyncio.Queue(maxsize=limit)
        self._task = asyncio.get_running_loop().create_task(self._run())
        self._busy = False  # the task is running an entry

    async def put(self, entry: Entry, *, inline: bool = False) -> None:
        """Queue `entry`; returns at once unless `limit` entries already wait.

        `inline`: the caller knows the send cannot wait behind output (the connection has no
        job streaming yet), so when nothing is queued or running the entry runs right here,
        before whatever else this loop turn holds (a registry write, the event log): the
        reply to a first `execute` leaves a loop turn sooner, in order all the same."""
        if inline and not self._busy and self._queue.empty():
            await self._run_one(entry)
            return
        await self._queue.put(entry)

    async def _run(self) -> None:
        while True:
            entry = await self._queue.get()
            if entry is None:
                return
            await self._run_one(entry)

    async def _run_one(self, entry: Entry) -> None:
        self._busy = True
        try:
            await entry()
        except Exception:  # a bug of ours: the next replies must still go out
            log.exception("reply entry failed")
        finally:
            self._busy = False

    async def close(self, timeout: float) -> None:
        """Run what is queued (sends on a closed connection fail fast, their follow-ups still
        run), then stop; after `timeout` seconds, stop anyway."""
        try:
            self._queue.put_nowait(None)
        except asyncio.QueueFull:
            self._task.cancel()
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        if not done:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=1.0)
