"""What a job tells its client: typed events as they arrive, and the collected result.

Each notification is parsed once, on arrival, into the protocol's own model of it
(`protocol.parse_notification`): the same definitions the server builds its messages from.
`Event.params` keeps the raw wire params for callers that read them as a dict.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from .. import protocol

KINDS: dict[str, str] = {
    protocol.PROCESS_QUEUED: "queued",
    protocol.PROCESS_STARTED: "started",
    protocol.PROCESS_OUTPUT: "output",
    protocol.PROCESS_PROGRESS: "progress",
    protocol.PROCESS_COMPLETED: "completed",
}
"""Notification method -> `Event.kind`."""


@dataclass(frozen=True)
class Event:
    """A notification about one job: queued, started, output, progress or completed.

    `message` is the typed params (`protocol.QueuedParams`, `StartedParams`, `OutputParams`,
    `ProgressParams` or `CompletedParams`); `params` the same as the wire dict.
    `progress` is the server's keepalive while the job writes nothing (`elapsed`,
    `silent_for`); it carries no output, and `JobHandle.result` only passes it to `on_event`."""

    kind: str
    params: dict
    received: float = field(default_factory=time.monotonic)
    message: BaseModel | None = None

    @classmethod
    def parse(cls, method: str, params: dict[str, Any]) -> Event:
        """The event of one notification; pydantic's ValidationError if it is malformed."""
        return cls(KINDS[method], params, message=protocol.parse_notification(method, params))

    @property
    def stream(self) -> str | None:
        return self.params.get("type") if self.kind == "output" else None

    @property
    def data(self) -> bytes:
        return protocol.output_bytes(self.params) if self.kind == "output" else b""


@dataclass
class JobResult:
    job_id: str
    status: str
    reason: str
    exit_code: int
    signal: int | None
    duration: float
    stdout: bytes
    stderr: bytes
    pid: int | None = None
    pgid: int | None = None
    batches: int = 0
    queued: bool = False
    message: str | None = None
    completed: dict = field(default_factory=dict)
    first_output_at: float | None = None
    wall: float = 0.0

    @property
    def ok(self) -> bool:
        return self.reason == "exited" and self.exit_code == 0

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", errors="replace")
