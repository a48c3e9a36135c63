"""What the harness sees of one run of a case: the live job state and the finished observations.

Owns `CaseRun` (which run: the planned case, the attempt number, the instance, the output stem),
`LiveJob` (what the event consumer has received so far: output, start, completion) and `Observed`
(everything one run saw, from the execute request to the leftover check). `Observed` is the one
value the judging step (`stress.run.attempt_record`) reads, so what a run saw and what it is judged
by cannot drift apart, and judging needs no socket, clock or file to be tested.

Why output goes to the files at once and into memory too: a run that is interrupted, stalls or
times out still leaves its partial output byte-exact in outputs/ (the files are opened
unbuffered), while the patterns are matched against the bytes in memory.

Must not import: the modules that run or judge (execution, attempt_record, runner); nothing of
the service but `cc_executor.client`'s types and the shared libraries, never
`cc_executor.jobs/server/process/tree/registry`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO

from cc_executor.client import Event, ExecutorError, JobHandle
from cc_executor.timing import Timeouts
from stress.run.planned import Planned


@dataclass(frozen=True)
class CaseRun:
    """One run of a case: attempt `n` of `planned`, or one instance of that attempt."""

    planned: Planned
    n: int
    """The attempt number, 1-based."""
    instance: int | None
    """0-based instance index for an instances test; None for a test without instances."""
    stem: str
    """Output path stem under outputs/ (the attempt's, plus ".i<k>" for an instance)."""


class LiveJob:
    """The state of one running job, updated by the event consumer as events arrive."""

    def __init__(self, out: IO[bytes], err: IO[bytes]) -> None:
        self.out_file, self.err_file = out, err
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.out_batches = 0
        self.err_batches = 0
        self.queued_at = time.monotonic()
        self.started: float | None = None
        self.last: float = time.monotonic()
        self.completed: dict | None = None
        self.pid: int | None = None
        self.pgid: int | None = None
        self.guard: str | None = None
        """Which client-side guard gave up on the job: "queue", "stall" or "deadline"."""
        self.queue_reason: str | None = None
        self.ended: float | None = None
        self.first_output: float | None = None
        """When the first output batch arrived (monotonic), None until one does."""

    def on_event(self, ev: Event) -> None:
        if ev.kind == "output":
            data = ev.data
            if ev.stream == "stderr":
                self.err_file.write(data)
                self.stderr += data
                self.err_batches += 1
            else:
                self.out_file.write(data)
                self.stdout += data
                self.out_batches += 1
            self.last = ev.received
            if self.first_output is None:
                self.first_output = ev.received
        elif ev.kind == "started":
            self.started = self.last = ev.received
            self.pid, self.pgid = ev.params.get("pid"), ev.params.get("pgid")
        elif ev.kind == "queued":
            self.queue_reason = ev.params.get("reason")
        elif ev.kind == "completed":
            self.completed = ev.params
            self.ended = ev.received


@dataclass
class Observed:
    """Everything one run of a case saw: filled in step by step while it runs, then judged."""

    live: LiveJob
    limits: Timeouts
    """The limits in force: this host's stretch until the service reports its own."""
    factor: float
    """The stretch factor behind `limits`."""
    load1: float
    """This host's 1-minute load average when the run began."""
    started_at: float
    """Unix time of the execute request."""
    job: JobHandle | None = None
    """The service's job; None when it refused the request or never answered."""
    detail: str | None = None
    """Why the run ended abnormally, for people (None: nothing to add to the completion)."""
    lost: str | None = None
    """Set when the connection to the service broke (or it stopped answering the request): the
    text a dispatched run hands to the dispatcher, which retries the attempt elsewhere. Set only
    where the code caught that failure by type (`ConnectionLost`, the request's timeout), never
    derived from `detail`'s wording."""
    refused: ExecutorError | None = None
    """The service's refusal of the execute request, by type (its code and `data.reason`)."""
    interrupted: bool = False
    """Cut short by the user or by --halt now: not a verdict on the test."""
    wall: float = 0.0
    """Seconds from the execute request to the end, queue wait included."""
    resources: dict | None = None
    leftovers: Sequence[str] = ()
    """Tagged processes still alive after the end ("pid: cmdline"), killed since."""
    code_runs: dict = field(default_factory=dict)
    """python-runs assertions: the model's code run as jobs after this one (`stress.run.code_runs`)."""


__all__ = ["CaseRun", "LiveJob", "Observed"]
