"""What a request or a job can fail with, as types a caller branches on.

`ExecutorError` is a JSON-RPC error the service answered with: branch on its `code` and `reason`
(`error.data.reason`, one of `protocol.ErrorReason`), never on its message. `ConnectionLost` is
the connection ending under a request or a job.
"""

from __future__ import annotations

from typing import Any


class ExecutorError(Exception):
    """The service answered a request with a JSON-RPC error.

    Branch on `code` and `reason` (`error.data.reason`, one of `protocol.ErrorReason`), never on
    `message`: the message is for people and may be reworded."""

    def __init__(self, code: int, message: str, data: Any = None):
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message
        self.data = data

    @property
    def reason(self) -> str | None:
        """`data.reason` when the service gave one (see `protocol.ErrorReason`)."""
        return self.data.get("reason") if isinstance(self.data, dict) else None


class ConnectionLost(ExecutorError):
    """The connection ended (dropped, closed, or `abort()`ed) before the answer or the job's
    completion arrived. `detail` says why, for people."""

    def __init__(self, detail: str):
        super().__init__(-1, f"connection lost: {detail}")
        self.detail = detail
