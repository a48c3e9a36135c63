"""The /dashboard live feed's one message: a snapshot of what the service is doing.

Not JSON-RPC: the feed only ever sends, and only this, about twice a second. A snapshot is
complete on its own (a page that missed one loses nothing), so the page holds no state of its
own beyond the last snapshot. Fields use base units: seconds, bytes, ratios 0-1.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

FEED_TYPE = "snapshot"


class _Feed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class FeedJob(_Feed):
    """A running, queued, paused or detached job."""

    job_id: str
    state: str
    argv_head: str = Field(description="the program's name and its first arguments, shortened")
    elapsed: float = Field(description="seconds since it started (queued: since it was queued)")
    bytes: int = Field(description="output bytes so far, both streams")
    position: int | None = None


class FeedCompletion(_Feed):
    job_id: str
    argv_head: str
    reason: str
    exit_code: int | None = None
    duration: float | None = None
    wait: float = 0.0
    bytes: int = 0
    ended_at: float = Field(description="Unix time")


class FeedDecision(_Feed):
    """An admission decision about a job: held (queued, with the signal) or admitted."""

    job_id: str
    held: bool
    reason: str
    signal: str | None = None
    at: float


class FeedSnapshot(_Feed):
    type: str = FEED_TYPE
    time: float
    version: str
    model: str
    uptime: float
    counts: dict[str, int]
    jobs: list[FeedJob]
    jobs_shown: int
    host: dict[str, Any] | None = None
    admission: dict[str, Any] | None = None
    decisions: list[FeedDecision]
    completions: list[FeedCompletion]

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), separators=(",", ":"))
