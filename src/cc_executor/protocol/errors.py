"""Error codes, and the one exception that carries a JSON-RPC error out of dispatch.

Clients branch on `code`, and where one code covers several conditions, on `data.reason`
(one of `ErrorReason`): never on `message`, which is for people and may be reworded. The
codes and reasons are documented in docs/protocol.md, section Errors.
"""

from __future__ import annotations

import enum
from typing import Any

# Standard JSON-RPC 2.0 codes.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# Application codes (-32000..-32099 is the range JSON-RPC reserves for servers).
UNAUTHORIZED = -32001
COMMAND_NOT_ALLOWED = -32002
TOO_MANY_JOBS = -32003
NO_SUCH_JOB = -32004
JOB_NOT_RUNNING = -32005
SPAWN_FAILED = -32006
QUEUE_WAIT_EXCEEDED = -32007
FRAME_TOO_LARGE = -32008
BINARY_FRAME = -32009

ERROR_NAMES: dict[int, str] = {
    PARSE_ERROR: "parse error",
    INVALID_REQUEST: "invalid request",
    METHOD_NOT_FOUND: "method not found",
    INVALID_PARAMS: "invalid params",
    INTERNAL_ERROR: "internal error",
    UNAUTHORIZED: "unauthorized",
    COMMAND_NOT_ALLOWED: "command not allowed",
    TOO_MANY_JOBS: "too many jobs",
    NO_SUCH_JOB: "no such job",
    JOB_NOT_RUNNING: "job not running",
    SPAWN_FAILED: "spawn failed",
    QUEUE_WAIT_EXCEEDED: "queue wait exceeded",
    FRAME_TOO_LARGE: "frame too large",
    BINARY_FRAME: "binary frame",
}


class ErrorReason(str, enum.Enum):
    """`error.data.reason`: which of the conditions that share a code this one is."""

    # -32003 too many jobs
    SHUTTING_DOWN = "shutting_down"
    """The service is stopping: another server may take the job; this one will not."""
    CONNECTION_LIMIT = "connection_limit"
    QUEUE_FULL = "queue_full"
    # -32002 command not allowed
    NOT_ALLOWED = "not_allowed"
    # -32006 spawn failed
    EXECUTABLE_NOT_FOUND = "executable_not_found"
    """An allow-listed name that the server cannot find: its install, not the request, is wrong."""
    CWD_NOT_FOUND = "cwd_not_found"
    CANNOT_START = "cannot_start"
    # -32005 job not running
    WRONG_STATE = "wrong_state"
    # -32004 no such job
    UNKNOWN_JOB = "unknown_job"
    NO_LIVE_JOB = "no_live_job"
    # -32600 invalid request
    BATCH_TOO_LONG = "batch_too_long"
    EMPTY_BATCH = "empty_batch"


SHUTTING_DOWN_MESSAGE = "server is shutting down"
"""The message of the -32003 refusal with `data.reason` "shutting_down" (for people; clients
match the reason)."""


class RpcError(Exception):
    """A JSON-RPC error to send back: raise it anywhere below dispatch.

    The one error type of the service (the job layer raises it too), so dispatch answers every
    refusal the same way and each carries a code, a clear message and structured `data`.
    """

    def __init__(self, code: int, message: str, data: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    @property
    def reason(self) -> str | None:
        """`data.reason`, when the error has one."""
        value = (self.data or {}).get("reason")
        return value.value if isinstance(value, ErrorReason) else value

    @classmethod
    def because(cls, code: int, reason: ErrorReason, message: str, **data: Any) -> RpcError:
        """An error whose `data` names its reason (plus any detail fields)."""
        return cls(code, message, {"reason": reason.value, **data})


def params_error(field: str, problem: str) -> RpcError:
    """An -32602 error in the house format: `params.<field>: <problem>`, data {"field": ...}."""
    return RpcError(INVALID_PARAMS, f"params.{field}: {problem}", {"field": field})


def clip(text: Any, limit: int = 64) -> str:
    """A client-supplied name, bounded so an error message cannot be megabytes long."""
    s = str(text)
    return s if len(s) <= limit else s[:limit] + "..."
