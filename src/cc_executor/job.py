"""`Job`: one `execute` request's record, from submission to its one `process.completed`.

Apart from `jobs` (the manager that admits, pumps and ends jobs) so the record's fields, which
the manager, the server, detachment and the views all read, are in one short place.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from . import protocol
from .load import Decision
from .process import Run, RunSpec

Sink = Callable[[str], Awaitable[None]]
"""Where a job's messages go: `async (text) -> None` (the connection's send, or a relay)."""


@dataclass
class Job:
    job_id: str
    owner: Any
    sink: Sink
    argv: list[str]
    spec: RunSpec
    is_claude: bool
    state: str = "queued"  # queued -> running -> ended
    run: Run | None = None
    queued_at: float = field(default_factory=time.monotonic)
    queue_reason: str = ""
    queue_decision: Decision | None = None  # why it waits, with the signal that holds it
    started_at: float | None = None
    completed: bool = False
    sink_broken: bool = False
    pump: asyncio.Task | None = None
    # Set once the execute reply is out, for a job spawned by `submit`: its pump exists from
    # the spawn on (so nothing can leak its slot) but sends nothing before the reply.
    gate: asyncio.Event | None = None
    announced: bool = False  # process.started sent (or being sent): exactly once
    # Keepalive bookkeeping (`process.progress`): when a frame of this job last went out, when
    # the job last said something (started/output), sends in flight, the timer and the send.
    last_sent: float = field(default_factory=time.monotonic)
    last_output: float = field(default_factory=time.monotonic)
    sending: int = 0
    keepalive_timer: asyncio.TimerHandle | None = None
    keepalive: asyncio.Task | None = None  # a progress frame being sent
    timeout_factor: float = 1.0  # the load stretch applied to spec's limits when it started
    relay: Any = None  # a resumable job's output path (`detach.Relay`); None: straight to sink
    resume_token: str | None = None
    limits_enforced: dict[str, dict] | None = None  # granted once, at submission

    def describe(self, position: int = 0) -> protocol.JobInfo:
        """This job's row of the `jobs` result; `position` counts for queued jobs only."""
        run = self.run
        state = "paused" if run is not None and run.paused else self.state
        return protocol.JobInfo(
            job_id=self.job_id, state=state, argv=self.argv,
            pid=run.pid if run else None, pgid=run.pgid if run else None,
            started_at=run.started_at if run else None,
            position=position if self.state == "queued" else None)
