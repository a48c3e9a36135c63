"""The protocol's vocabulary: methods, notifications, control types, end reasons, statuses.

Only names live here, so every other module (and every client) spells them one way. The two
rules that derive one name from another (a completion's status, a control's result status)
live here too, next to the names they map.
"""

from __future__ import annotations

from typing import Literal, get_args

JSONRPC_VERSION = "2.0"

Method = Literal["execute", "control", "jobs", "ping", "attach"]
METHODS: tuple[str, ...] = get_args(Method)

CONNECTED = "connected"
PROCESS_QUEUED = "process.queued"
PROCESS_STARTED = "process.started"
PROCESS_OUTPUT = "process.output"
PROCESS_COMPLETED = "process.completed"
PROCESS_PROGRESS = "process.progress"
PROCESS_DETACHED = "process.detached"
NOTIFICATIONS: tuple[str, ...] = (
    CONNECTED,
    PROCESS_QUEUED,
    PROCESS_STARTED,
    PROCESS_OUTPUT,
    PROCESS_COMPLETED,
    PROCESS_PROGRESS,
    PROCESS_DETACHED,
)

ControlType = Literal["PAUSE", "RESUME", "CANCEL"]
CONTROL_TYPES: tuple[str, ...] = get_args(ControlType)
ControlStatus = Literal["paused", "resumed", "cancelled"]
CONTROL_STATUS: dict[str, str] = {"PAUSE": "paused", "RESUME": "resumed", "CANCEL": "cancelled"}

Stream = Literal["stdout", "stderr"]
JobState = Literal["queued", "running", "paused", "ended"]
Reason = Literal[
    "exited",
    "signalled",
    "timeout",
    "stalled",
    "cancelled",
    "shutdown",
    "queue_timeout",
    "spawn_failed",
    "memory_limit",
    "process_limit",
    "cpu_limit",
    "output_limit",
]
REASONS: tuple[str, ...] = get_args(Reason)
Status = Literal[
    "completed",
    "failed",
    "signalled",
    "timeout",
    "stalled",
    "cancelled",
    "shutdown",
    "queue_timeout",
    "spawn_failed",
    "memory_limit",
    "process_limit",
    "cpu_limit",
    "output_limit",
]


def completion_status(reason: str, exit_code: int) -> str:
    """`completed`/`failed` for a normal exit (by exit code), otherwise the reason itself."""
    if reason == "exited":
        return "completed" if exit_code == 0 else "failed"
    return reason
