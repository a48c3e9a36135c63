"""`Relay`: a resumable job's output on its way to whichever connection holds the job now.

The job's pump hands each batch to `output` (into the spool); one delivery task per attachment
sends the spool's records after the connection's `since_seq`, in order, then the completion,
once. Between connections (`detach`) the spool fills; when it holds `spool_limit` unsent bytes
the job is paused (SIGSTOP via the run), and resumed once a connection drained half of it. While
attached, the pump waits whenever more than `high_water` bytes are unsent: the same
back-pressure a job without `detach_timeout` has.

Knows nothing of WebSockets (a sink is `async (text) -> None`) nor of the job manager.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from .. import protocol
from .spool import Spool

log = logging.getLogger("cc_executor.detach")

Sink = Callable[[str], Awaitable[None]]
SEND_CHUNK = 1024 * 1024  # bytes read from the spool per step of a delivery


class Pausable(Protocol):
    def pause(self) -> bool: ...
    def resume(self) -> bool: ...


class Relay:
    def __init__(self, job_id: str, spool: Spool, spool_limit: int, high_water: int):
        self.job_id = job_id
        self.spool = spool
        self.spool_limit = spool_limit
        self.high_water = high_water
        self.sink: Sink | None = None
        self.completion: str | None = None
        self.completion_sent = False
        self.dropped = False
        self.paused_by_spool = False
        self.on_delivered: Callable[[], None] | None = None  # the completion went out
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._task: asyncio.Task | None = None

    # ---- the pump's side -----------------------------------------------------------------

    async def output(self, stream: str, seq: int, offset: int, data: bytes,
                     run: Pausable) -> None:
        """Keep one batch, then wait while too much is unsent (pausing a detached job whose
        spool is full). Returns at once for a dropped job."""
        if self.dropped:
            return
        self.spool.append(seq, stream, offset, data)
        self._wake.set()
        for _ in range(1_000_000):  # bounded: each turn waits for a delivery or a change
            if self.dropped:
                return
            unsent = self.spool.unsent
            if self.sink is not None:
                if self.paused_by_spool and unsent <= self.spool_limit // 2:
                    self.paused_by_spool = False
                    run.resume()
                if unsent <= self.high_water:
                    return
            elif unsent <= self.spool_limit:
                return
            elif not self.paused_by_spool and run.pause():
                self.paused_by_spool = True
                log.info("job %s paused: its spool is full (%d bytes unsent)", self.job_id, unsent)
            self._room.clear()
            await self._room.wait()

    def finish(self, completion: str) -> None:
        """The job ended: its completion goes out after the last output, once."""
        if self.completion is None:
            self.completion = completion
        self._wake.set()

    # ---- connections ---------------------------------------------------------------------

    def attach(self, sink: Sink, since_seq: int, start: bool = True) -> None:
        """Send from `since_seq` on to `sink` (replay, then live). Any earlier delivery stops
        first (its connection gets nothing more of this job). `start=False`: the delivery
        begins at `start_delivery` (once the `attach` reply is out)."""
        self._stop_delivery()
        self.spool.rewind(since_seq)
        self.sink = sink
        self.completion_sent = False
        if start:
            self.start_delivery()

    def start_delivery(self) -> None:
        if self.sink is not None and self._task is None and not self.dropped:
            self._task = asyncio.get_running_loop().create_task(self._deliver(self.sink))
        self._room.set()

    def detach(self) -> None:
        """The connection is gone: keep spooling, wait for the next `attach`."""
        self._stop_delivery()
        self.sink = None
        self._room.set()  # the pump re-checks its limit: the spool's, now

    def drop(self) -> None:
        """The job is given up (its detach time ran out, or the service stops)."""
        self.dropped = True
        self._stop_delivery()
        self.sink = None
        self.spool.close()
        self._room.set()

    def _stop_delivery(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()  # a send waiting on a half-open socket: whole frames were written

    async def _deliver(self, sink: Sink) -> None:
        try:
            while not self.dropped:
                records = self.spool.after(self.spool.sent_upto, SEND_CHUNK)
                if records:
                    for r in records:
                        await sink(protocol.encode_output(self.job_id, r.stream, r.seq,
                                                          r.offset, r.data))
                        self.spool.mark_sent(r.seq)
                    self._room.set()
                    continue
                if self.completion is not None:
                    await sink(self.completion)
                    self.completion_sent = True
                    if self.on_delivered is not None:
                        self.on_delivered()
                    return
                self._wake.clear()
                await self._wake.wait()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the connection went away: the manager detaches the job
            log.debug("delivery of %s stopped: %s", self.job_id, e)
            if self.sink is sink:
                self.sink = None
                self._room.set()
