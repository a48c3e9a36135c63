"""`Resumer`: what `detach_timeout` and `attach` do to a job, kept out of the job manager.

The job manager owns jobs (admission, the pump, the one completion); this owns their life
between connections: enrolling a job (its relay, spool and token), detaching it when its
connection drops, moving it to the connection that attaches with the right token, and giving
it up when nobody came back in time (through the manager's `give_up`). A job here is the job
manager's `Job`, used by its attributes only (`owner`, `sink`, `sink_broken`, `relay`, ...), so
this package never imports the manager.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .. import protocol
from ..protocol import INVALID_PARAMS, NO_SUCH_JOB, ErrorReason, RpcError
from .book import ResumeBook
from .relay import Relay
from .spool import Spool

log = logging.getLogger("cc_executor.detach")


class Resumer:
    def __init__(self, spool_dir: Path | None, spool_memory: int, spool_limit: int,
                 replay_window: int, high_water: int, give_up: Callable[[Any], None]):
        self.spool_dir = spool_dir
        self.spool_memory = spool_memory
        self.spool_limit = spool_limit
        self.replay_window = replay_window
        self.high_water = high_water
        self._give_up = give_up
        self.book = ResumeBook(self._expired)
        self._notices: set[asyncio.Task] = set()

    def enroll(self, job: Any, detach_timeout: float) -> None:
        """Make `job` resumable: its output goes through a relay (kept for replay) and its
        `execute` reply carries a token."""
        spool = Spool(self.spool_memory, self.replay_window, self.spool_dir)
        job.relay = Relay(job.job_id, spool, self.spool_limit, self.high_water)
        job.relay.on_delivered = lambda: self.book.delivered(job.job_id)
        job.relay.attach(job.sink, -1)
        job.resume_token = self.book.add(job.job_id, job, detach_timeout)

    def owner_gone(self, owner: Any) -> None:
        """The owner's connection dropped: its resumable jobs, running, queued or ended with
        their completion not yet out, wait for an `attach`."""
        for entry in list(self.book.entries.values()):
            job = entry.job
            # One whose completion went out already is kept on its own clock (`delivered`).
            if job.owner is owner and not entry.detached and not job.relay.completion_sent:
                job.owner = None
                job.sink_broken = True
                job.relay.detach()
                self.book.detached(job.job_id)
                log.info("job %s detached (%g s to attach)", job.job_id, entry.timeout)

    def owner_closed(self, owner: Any) -> None:
        """The owner closed its connection on purpose: its jobs are not waited for."""
        for entry in list(self.book.entries.values()):
            if entry.job.owner is owner:
                self.book.forget(entry.job.job_id)
                entry.job.relay.drop()

    def attach(self, owner: Any, sink: Any, params: protocol.AttachParams,
               position: Callable[[Any], int], keepalive: Callable[[Any], None]
               ) -> tuple[protocol.AttachResult, Callable[[], Awaitable[None]]]:
        """Move the job to `owner`; return the result and what starts the replay from
        `params.since_seq` (after the reply is out). Raises -32004 for an unknown job and for a
        wrong or missing token alike."""
        job = self._move(owner, sink, params)
        if job.state != "ended":
            keepalive(job)  # process.progress to the new connection while the job is quiet
        run = job.run
        paused = run is not None and run.paused and job.state == "running"
        result = protocol.AttachResult(
            job_id=job.job_id, state="paused" if paused else job.state,
            pid=run.pid if run else None, pgid=run.pgid if run else None, argv=job.argv,
            position=position(job) if job.state == "queued" else None,
            next_seq=job.relay.spool.next_seq)

        async def replay() -> None:
            if job.owner is owner:  # not moved on again meanwhile
                job.relay.start_delivery()
        return result, replay

    def _move(self, owner: Any, sink: Any, params: protocol.AttachParams) -> Any:
        job = self.book.find(params.job_id, params.resume_token)
        if job is None or job.relay.dropped:
            raise RpcError.because(NO_SUCH_JOB, ErrorReason.UNKNOWN_JOB,
                                   f"no such job: {params.job_id}", job_id=params.job_id)
        last = job.relay.spool.next_seq - 1
        if params.since_seq > last:  # told only to the token's holder: no existence leak
            # Accepted, it would mark output not yet read as held: live output then skipped.
            raise RpcError(INVALID_PARAMS, f"params.since_seq: {params.since_seq} is past the "
                           f"job's output (its last seq is {last})",
                           {"field": "since_seq", "next_seq": last + 1})
        old_owner, old_sink = job.owner, job.sink
        job.owner, job.sink, job.sink_broken = owner, sink, False
        self.book.attached(job.job_id)
        job.relay.attach(sink, params.since_seq, start=False)
        if old_owner is not None and old_owner is not owner:
            # Not awaited: the old connection may be the half-open one whose sends wait.
            notice = protocol.notify(protocol.DetachedParams(job_id=job.job_id))
            task = asyncio.get_running_loop().create_task(_quietly(old_sink, notice))
            self._notices.add(task)
            task.add_done_callback(self._notices.discard)
        return job

    def _expired(self, job: Any) -> None:
        log.info("job %s given up: nobody attached within %s", job.job_id, "detach_timeout")
        self._give_up(job)
        job.relay.drop()

    async def deliver_ends(self, timeout: float) -> None:
        """The service stops: let attached jobs' relays send their completions (bounded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for _ in range(100_000):
            waiting = [e for e in self.book.entries.values() if e.job.relay.sink is not None
                       and e.job.relay.completion is not None
                       and not e.job.relay.completion_sent]
            if not waiting or loop.time() >= deadline:
                return
            await asyncio.sleep(0.01)

    def drop_detached(self) -> None:
        """The service stops: nobody attaches any more, so a detached job's relay stops holding
        its pump (with a full spool it would wait out the shutdown's whole end wait)."""
        for entry in list(self.book.entries.values()):
            if entry.detached:
                entry.job.relay.drop()

    def close(self) -> None:
        """The service stops: every spool is freed (the manager ended the runs)."""
        for job in self.book.close():
            job.relay.drop()
        for task in list(self._notices):
            task.cancel()

    def count_detached(self) -> int:
        return self.book.count_detached()


async def _quietly(sink: Any, text: str) -> None:
    try:
        await sink(text)
    except Exception:  # that connection is gone too: nothing to tell
        pass
