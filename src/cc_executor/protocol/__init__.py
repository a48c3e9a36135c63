"""The cc_executor wire protocol (JSON-RPC 2.0 over WebSocket text frames), with no I/O in it.

The only place that knows a wire shape. Keeping every rule about bytes-on-the-wire here, apart
from sockets and asyncio (as the `websockets` library keeps its protocol state machine apart
from its transports), lets the server stay a thin loop (frame -> `decode_frame` -> dispatch ->
encoders) and lets us test every malformed frame without starting a server.
`docs/protocol.md` is the reference for client authors; this package is its executable form.

    names      the vocabulary: methods, notifications, control types, end reasons, statuses
    errors     error codes, `ErrorReason` (`data.reason`), `RpcError`: the one error type
    params     request params (what each method accepts), validated strictly
    messages   results and notification params (everything the server sends)
    encoding   messages -> JSON text; `encode_output`, the hot path
    decoding   frames -> `Request` / `Batch` / `ErrorReply`; client-side parsing
    command    `execute.command` -> words, like a POSIX shell, in linear time

Imports: only pydantic, the standard library and `cc_executor.defaults`. Never the server,
jobs, process runner, client, or `policy` (which says which well-formed requests are refused,
and imports this).
"""

from .command import split_command
from .decoding import (
    DEFAULT_MAX_BATCH,
    Batch,
    ErrorReply,
    Request,
    decode_frame,
    output_bytes,
    parse_notification,
)
from .encoding import (
    RequestId,
    batch_json,
    encode_output,
    error_json,
    notification_json,
    notify,
    per_session,
    request_json,
    result_json,
)
from .errors import (
    BINARY_FRAME,
    COMMAND_NOT_ALLOWED,
    ERROR_NAMES,
    FRAME_TOO_LARGE,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    JOB_NOT_RUNNING,
    METHOD_NOT_FOUND,
    NO_SUCH_JOB,
    PARSE_ERROR,
    QUEUE_WAIT_EXCEEDED,
    SHUTTING_DOWN_MESSAGE,
    SPAWN_FAILED,
    TOO_MANY_JOBS,
    UNAUTHORIZED,
    ErrorReason,
    RpcError,
    params_error,
)
from .messages import (
    NOTIFICATION_PARAMS,
    AttachResult,
    Capabilities,
    CompletedParams,
    ConnectedParams,
    ControlResult,
    DetachedParams,
    ExecuteQueued,
    ExecuteStarted,
    Gpu,
    Hardware,
    JobInfo,
    JobsResult,
    OutputParams,
    PingResult,
    ProgressParams,
    QueuedParams,
    StartedParams,
)
from .names import (
    CONNECTED,
    CONTROL_STATUS,
    CONTROL_TYPES,
    JSONRPC_VERSION,
    METHODS,
    NOTIFICATIONS,
    PROCESS_COMPLETED,
    PROCESS_DETACHED,
    PROCESS_OUTPUT,
    PROCESS_PROGRESS,
    PROCESS_QUEUED,
    PROCESS_STARTED,
    REASONS,
    ControlType,
    JobState,
    Method,
    Reason,
    Status,
    Stream,
    completion_status,
)
from .params import (
    ARG_MAX,
    MAX_SECONDS,
    SHELL,
    AttachParams,
    ControlParams,
    ExecuteParams,
    JobLimits,
    NoParams,
)

__all__ = [
    "ARG_MAX", "AttachParams", "AttachResult", "DetachedParams", "PROCESS_DETACHED",
    "BINARY_FRAME", "Batch", "COMMAND_NOT_ALLOWED", "CONNECTED", "CONTROL_STATUS",
    "CONTROL_TYPES", "Capabilities", "CompletedParams", "ConnectedParams", "ControlParams",
    "ControlResult", "ControlType", "DEFAULT_MAX_BATCH", "ERROR_NAMES", "ErrorReason",
    "ErrorReply", "ExecuteParams", "ExecuteQueued", "ExecuteStarted", "FRAME_TOO_LARGE", "Gpu", "Hardware",
    "JobLimits", "INTERNAL_ERROR", "INVALID_PARAMS", "INVALID_REQUEST", "JOB_NOT_RUNNING", "JSONRPC_VERSION",
    "JobInfo", "JobState", "JobsResult", "MAX_SECONDS", "METHODS", "METHOD_NOT_FOUND", "Method",
    "NOTIFICATIONS", "NOTIFICATION_PARAMS", "NO_SUCH_JOB", "NoParams", "OutputParams",
    "PARSE_ERROR", "PROCESS_COMPLETED", "PROCESS_OUTPUT", "PROCESS_PROGRESS", "PROCESS_QUEUED",
    "PROCESS_STARTED", "PingResult", "ProgressParams", "QUEUE_WAIT_EXCEEDED", "QueuedParams",
    "REASONS", "Reason", "Request", "RequestId", "RpcError", "SHELL", "SHUTTING_DOWN_MESSAGE",
    "SPAWN_FAILED", "StartedParams", "Status", "Stream", "TOO_MANY_JOBS", "UNAUTHORIZED",
    "batch_json", "completion_status", "decode_frame", "encode_output", "error_json",
    "notification_json", "notify", "per_session", "output_bytes", "params_error", "parse_notification",
    "request_json", "result_json", "split_command",
]
