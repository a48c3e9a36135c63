"""What `ExecutorClient(resume=True)` remembers to resume its jobs after a dropped connection.

Per job: the `resume_token` its `execute` reply carried and the last output `seq` the caller
was given. After a reconnect each unfinished job is attached again from that `seq`, and output
at or below it (sent again because the server could not know what arrived) is dropped here, so
the caller sees one unbroken stream: no gap, no duplicate, one completion.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass


@dataclass
class Book:
    token: str
    last_seq: int = -1
    completed: bool = False


class ResumeBooks:
    def __init__(self) -> None:
        self.jobs: dict[str, Book] = {}
        # Output routed before `add` (the reader goes on while `start` wakes up): its last seq.
        self._early: dict[str, int] = {}

    def add(self, job_id: str, token: str | None) -> None:
        early = self._early.pop(job_id, -1)
        if token:
            self.jobs[job_id] = Book(token, early)

    def admit(self, job_id: str, method: str, params: dict) -> bool:
        """Whether a notification is new (pass it on) or a replayed duplicate (drop it)."""
        book = self.jobs.get(job_id)
        if book is None:
            if method == "process.output":
                self._early[job_id] = max(self._early.get(job_id, -1), params.get("seq", -1))
            return True
        if book.completed:
            return False
        if method == "process.output":
            seq = params.get("seq", -1)
            if seq <= book.last_seq:
                return False
            book.last_seq = seq
        elif method == "process.completed":
            book.completed = True
        return True

    def unfinished(self) -> dict[str, Book]:
        return {job_id: b for job_id, b in self.jobs.items() if not b.completed}

    def forget(self, job_id: str) -> None:
        self.jobs.pop(job_id, None)
        self._early.pop(job_id, None)


def backoff(attempt: int, first: float = 0.05, cap: float = 2.0) -> float:
    """Seconds before reconnect attempt `attempt` (0, 1, 2...): doubling, capped, with jitter
    so that many clients dropped together do not come back in lockstep."""
    return min(cap, first * (2 ** attempt)) * (0.5 + random.random() / 2)


async def sleep_backoff(attempt: int) -> None:
    await asyncio.sleep(backoff(attempt))
