"""`ResumeBook`: the resumable jobs, their tokens, and when each is given up.

A job with `detach_timeout` > 0 is entered here at `execute`, with a random token that only its
`execute` reply carries. It leaves when it is given up: `detach_timeout` seconds after its
connection dropped (if nobody attached by then), or `DELIVERED_GRACE` (10 s, or
`detach_timeout` if shorter) after its completion went out (a client whose connection dropped
right then can still attach and read the end). The book only keeps time and tokens; what giving up means (end the tree, drop the
queued job, free the spool) is the caller's `on_expire`.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Entry:
    job: Any
    token: str
    timeout: float
    detached: bool = False
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


DELIVERED_GRACE = 10.0
"""Seconds, at most, a job stays attachable after its completion went out: long enough for a
client whose connection dropped right then to reconnect and read its end; short enough that
finished jobs do not pile up their replay windows (a busy server finishes many a second)."""


class ResumeBook:
    def __init__(self, on_expire: Callable[[Any], None]):
        self.entries: dict[str, Entry] = {}
        self._on_expire = on_expire

    def add(self, job_id: str, job: Any, timeout: float) -> str:
        token = secrets.token_urlsafe(24)
        self.entries[job_id] = Entry(job, token, timeout)
        return token

    def find(self, job_id: str, token: str | None) -> Any | None:
        """The job, when the token is its own; None otherwise (unknown id and wrong token
        alike, compared in constant time)."""
        entry = self.entries.get(job_id)
        offered = (token or "").encode()
        expected = entry.token.encode() if entry is not None else b"\0" * 32
        ok = secrets.compare_digest(offered, expected)
        return entry.job if entry is not None and ok and token else None

    def detached(self, job_id: str) -> None:
        """Its connection dropped: start counting."""
        entry = self.entries.get(job_id)
        if entry is not None:
            entry.detached = True
            self._arm(job_id, entry)

    def delivered(self, job_id: str) -> None:
        """Its completion went out: keep it a little longer for a late re-attach."""
        entry = self.entries.get(job_id)
        if entry is not None:
            self._arm(job_id, entry, min(entry.timeout, DELIVERED_GRACE))

    def attached(self, job_id: str) -> None:
        entry = self.entries.get(job_id)
        if entry is not None:
            entry.detached = False
            if entry.timer is not None:
                entry.timer.cancel()
                entry.timer = None

    def _arm(self, job_id: str, entry: Entry, seconds: float | None = None) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
        entry.timer = asyncio.get_running_loop().call_later(
            entry.timeout if seconds is None else seconds, self._expire, job_id)

    def _expire(self, job_id: str) -> None:
        entry = self.entries.pop(job_id, None)
        if entry is not None:
            entry.timer = None
            self._on_expire(entry.job)

    def forget(self, job_id: str) -> None:
        entry = self.entries.pop(job_id, None)
        if entry is not None and entry.timer is not None:
            entry.timer.cancel()

    def count_detached(self) -> int:
        return sum(1 for e in self.entries.values() if e.detached)

    def close(self) -> list[Any]:
        """Stop every timer; return the jobs, for the caller to drop."""
        jobs = []
        for entry in self.entries.values():
            if entry.timer is not None:
                entry.timer.cancel()
            jobs.append(entry.job)
        self.entries.clear()
        return jobs
