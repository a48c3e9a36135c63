"""The cc_executor wire protocol (JSON-RPC 2.0 over WebSocket text frames), with no I/O in it.

Keeping every rule about bytes-on-the-wire here, apart from sockets and asyncio (as the
`websockets` library keeps its protocol state machine apart from its transports), lets the
server stay a thin loop (frame -> `decode_frame` -> dispatch -> encoders) and lets us test
every malformed frame without starting a server. `docs/protocol.md` is the reference for
client authors; this module is its executable form.

Design choices worth knowing before editing:

* `decode_frame` never raises: a server that lets one bad frame kill the session (as an
  earlier implementation did for JSON arrays) is a denial of service. Every failure becomes
  an `ErrorReply`, carrying the request id whenever one could be read.
* Messages the server builds from client-supplied strings are encoded with `ensure_ascii`,
  so a lone surrogate sent by a client can never make the reply unencodable as UTF-8.
* `encode_output` is the hot path (one call per 64 KiB output batch, ~3,000 calls/s at
  200 MiB/s). It skips pydantic and, for ASCII batches, escapes with `bytes.replace`, which
  runs ~3x faster than the json module's per-character escaper on this Python.
* `split_command` exists because `shlex.split` is quadratic on long quoted strings (86 s
  for a 2 MiB prompt here), which would stall the server's event loop.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
from collections.abc import Mapping
from json.encoder import encode_basestring as _json_string  # C escaper, non-ASCII kept as is
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

JSONRPC_VERSION = "2.0"

# --- Error codes ------------------------------------------------------------------------------
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

SHUTTING_DOWN_MESSAGE = "server is shutting down"
"""The TOO_MANY_JOBS message of an execute refused because the service is stopping: clients
(the stress harness's dispatcher) match it to tell a server going away from a full one."""

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

# --- Names --------------------------------------------------------------------------------------
Method = Literal["execute", "control", "jobs", "ping"]
METHODS: tuple[str, ...] = ("execute", "control", "jobs", "ping")

CONNECTED = "connected"
PROCESS_QUEUED = "process.queued"
PROCESS_STARTED = "process.started"
PROCESS_OUTPUT = "process.output"
PROCESS_COMPLETED = "process.completed"
PROCESS_PROGRESS = "process.progress"
NOTIFICATIONS: tuple[str, ...] = (
    CONNECTED,
    PROCESS_QUEUED,
    PROCESS_STARTED,
    PROCESS_OUTPUT,
    PROCESS_COMPLETED,
    PROCESS_PROGRESS,
)

ControlType = Literal["PAUSE", "RESUME", "CANCEL"]
CONTROL_TYPES: tuple[str, ...] = ("PAUSE", "RESUME", "CANCEL")
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
]

# Limits the protocol itself imposes (documented in docs/protocol.md).
MAX_SECONDS = 1e9  # larger timeouts overflow some event loops' timer arithmetic
try:
    ARG_MAX = max(os.sysconf("SC_ARG_MAX"), 128 * 1024)
except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
    ARG_MAX = 2 * 1024 * 1024
SHELL = "/bin/sh"

# `execute.env` may not set these: each can make a common runtime or tool run code of the
# client's choosing (the dynamic loader, shells, interpreters, git and what git starts: its ssh,
# pager, editor, credential prompt, external diff). A deny-list lowers the risk for the runtimes
# it knows; it is not a sandbox: an allowed program may read other variables, config files, or
# its arguments and run what they say, so allow only programs you would let a client run with
# any arguments. Removing one (a `null` value) is fine. Documented in docs/protocol.md.
# PATH is not on it: jobs legitimately set their own (the pinned CLI's folder first, so a shell
# line's `claude` is the one the allow-list means), and the allowed program itself is resolved
# with the server's PATH, so PATH cannot swap it. What that program runs in turn by name *is*
# looked up in the job's PATH: one more reason this list is no sandbox.
ENV_DENIED: frozenset[str] = frozenset({
    # shells: start-up files, exported functions' options, xtrace prompts
    "BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "PS4", "PROMPT_COMMAND",
    # glibc: character-set converters loaded as shared objects
    "GCONV_PATH",
    # Node.js
    "NODE_OPTIONS", "NODE_PATH", "NODE_REPL_EXTERNAL_MODULE",
    # Python
    "PYTHONSTARTUP", "PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONINSPECT",
    "PYTHONWARNINGS", "PYTHONBREAKPOINT",
    # Perl, Ruby, the JVM
    "PERL5OPT", "PERL5LIB", "PERLLIB", "PERL5DB",
    "RUBYOPT", "RUBYLIB",
    "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS",
    # OpenSSL configuration (can load engines/providers)
    "OPENSSL_CONF", "OPENSSL_ENGINES", "OPENSSL_MODULES",
    # git: programs it runs (GIT_SSH*, GIT_CONFIG* are prefixes below) and where it finds them
    "GIT_EXTERNAL_DIFF", "GIT_ASKPASS", "SSH_ASKPASS", "GIT_PROXY_COMMAND",
    "GIT_EXEC_PATH", "GIT_TEMPLATE_DIR",
    # pagers and editors (git, less, and many other tools start them)
    "GIT_PAGER", "PAGER", "LESSOPEN", "LESSCLOSE",
    "GIT_EDITOR", "GIT_SEQUENCE_EDITOR", "EDITOR", "VISUAL",
})
# Every variable with these prefixes: the loader's (LD_PRELOAD, LD_AUDIT, LD_LIBRARY_PATH...),
# macOS's, bash's exported functions (`BASH_FUNC_name%%`), git's ssh command (GIT_SSH,
# GIT_SSH_COMMAND) and git's config from the environment (GIT_CONFIG_COUNT, GIT_CONFIG_KEY_<n>,
# GIT_CONFIG_VALUE_<n>, GIT_CONFIG_PARAMETERS, GIT_CONFIG_GLOBAL, ...: core.sshCommand,
# core.fsmonitor, aliases and hooks paths all run programs).
ENV_DENIED_PREFIXES: tuple[str, ...] = ("LD_", "DYLD_", "BASH_FUNC_", "GIT_SSH", "GIT_CONFIG")


def env_name_denied(name: str) -> bool:
    """Whether `execute.env` may not set `name` (see ENV_DENIED)."""
    return name in ENV_DENIED or name.startswith(ENV_DENIED_PREFIXES)

_dumps = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode


# --- Errors raised during dispatch ------------------------------------------------------------
class RpcError(Exception):
    """A JSON-RPC error to send back; raise it anywhere in dispatch, reply via `Request.error_from`.

    One exception type for every refusal keeps the server's dispatch free of per-case
    `try/except` ladders and guarantees each refusal carries a code and a clear message.
    """

    def __init__(self, code: int, message: str, data: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


def params_error(field: str, problem: str) -> RpcError:
    """An -32602 error in the house format: `params.<field>: <problem>`, data {"field": ...}."""
    return RpcError(INVALID_PARAMS, f"params.{field}: {problem}", {"field": field})


# --- Request params -----------------------------------------------------------------------------
def _cc_value(message: str, **ctx: Any) -> PydanticCustomError:
    """A validation failure in the house format. `message` is a pydantic template, so it must
    never contain client text (braces in it would be substituted); the offending location
    goes in ctx["path"] (e.g. "args[2]") and ctx["field"] instead."""
    return PydanticCustomError("cc_value", message, ctx or None)


def _check_text(value: str, path: str | None = None) -> None:
    """Reject strings that cannot reach `execve`/a pipe: NULs and lone surrogates."""
    if "\x00" in value:
        raise _cc_value("must not contain NUL characters", path=path)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _cc_value("must be valid Unicode (it contains a lone surrogate)", path=path) from None


Seconds = Annotated[float, Field(gt=0, le=MAX_SECONDS, allow_inf_nan=False)]


class _Params(BaseModel):
    """Base of request params: strict JSON types, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ExecuteParams(_Params):
    """Params of `execute`. Exactly one of `command` (a string) or `args` (an argv list)."""

    command: str | None = None
    args: list[str] | None = Field(None, min_length=1)
    cwd: str | None = None
    env: dict[str, str | None] | None = None
    input: str | None = None
    timeout: Seconds | None = None
    stall_timeout: Seconds | None = None

    @field_validator("command")
    @classmethod
    def _command(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.strip():
            raise _cc_value("must be a non-empty string")
        _check_text(v)
        if len(v.encode("utf-8")) > ARG_MAX:
            raise _cc_value(f"is too long: the system limit for a command line is {ARG_MAX} bytes")
        return v

    @field_validator("args")
    @classmethod
    def _args(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not v[0]:
            raise _cc_value("must not be empty: args[0] is the program to run", path="args[0]")
        total = 0
        for i, arg in enumerate(v):
            _check_text(arg, f"args[{i}]")
            total += len(arg.encode("utf-8")) + 1
        if total > ARG_MAX:
            raise _cc_value(f"are too long: the system limit for a command line is {ARG_MAX} bytes")
        return v

    @field_validator("cwd")
    @classmethod
    def _cwd(cls, v: str | None) -> str | None:
        if v is not None:
            if not v:
                raise _cc_value("must be a non-empty string (a directory path)")
            _check_text(v)
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str | None] | None) -> dict[str, str | None] | None:
        if v is None:
            return v
        for name, value in v.items():
            path = f"env.{_short(name)}"
            if not name or "=" in name:
                raise _cc_value("a variable name must be non-empty and contain no '='", path=path)
            _check_text(name, path)
            if value is not None:
                _check_text(value, path)
                if env_name_denied(name):
                    raise _cc_value(
                        "may not be set: it can make an allowed program run code of the client's "
                        "choosing (refused names: see docs/protocol.md, execute env)", path=path)
        return v

    @field_validator("input")
    @classmethod
    def _input(cls, v: str | None) -> str | None:
        if v is not None:
            _check_text_unicode_only(v)
        return v

    @model_validator(mode="after")
    def _exactly_one_program(self) -> ExecuteParams:
        if (self.command is None) == (self.args is None):
            got = "both" if self.command is not None else "neither"
            raise _cc_value(
                f"give exactly one of command (a string) or args (a list of strings); got {got}",
                field="command" if got == "neither" else "args",
                path="command" if got == "neither" else "args",
            )
        return self

    def argv(self, shell: bool = False) -> list[str]:
        """The argv to exec: `args` as given; `command` split like a POSIX shell, or run by
        `/bin/sh -c` when the server has shell mode on. Raises `RpcError` (-32602)."""
        if self.args is not None:
            return list(self.args)
        assert self.command is not None
        if shell:
            return [SHELL, "-c", self.command]
        try:
            words = split_command(self.command)
        except ValueError as exc:
            raise params_error(
                "command", f"cannot be split into words ({exc}); send args for an exact argv"
            ) from None
        if not words or not words[0]:
            raise params_error("command", "the program name is empty")
        return words


def _check_text_unicode_only(value: str) -> None:
    # stdin may legitimately carry NULs; it only has to be encodable.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _cc_value("must be valid Unicode (it contains a lone surrogate)") from None


class ControlParams(_Params):
    """Params of `control`. `type` is case-insensitive on the wire, upper-case once decoded."""

    type: ControlType
    job_id: str | None = Field(None, min_length=1)

    @field_validator("type", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v


class NoParams(_Params):
    """Params of `jobs` and `ping`: none (absent, null or {})."""


METHOD_PARAMS: dict[str, type[_Params]] = {
    "execute": ExecuteParams,
    "control": ControlParams,
    "jobs": NoParams,
    "ping": NoParams,
}

# The rule each field breaks, phrased for the error message `params.<field>: <rule>`.
_FIELD_RULES: dict[str, str] = {
    "command": "must be a non-empty string",
    "args": "must be a non-empty list of strings",
    "cwd": "must be a non-empty string (a directory path)",
    "env": "must be an object mapping variable names to strings or null",
    "input": "must be a string",
    "timeout": "must be a number > 0",
    "stall_timeout": "must be a number > 0",
    "type": "must be one of PAUSE, RESUME, CANCEL (any case)",
    "job_id": "must be a non-empty string",
}
_NESTED_RULES: dict[str, str] = {
    "args": "must be a string",
    "env": "must be a string or null",
}


# --- Request / error reply models -------------------------------------------------------------
RequestId = int | str | None


class Request(BaseModel):
    """A decoded, validated client request. `notification` is True when the frame had no id:
    the server executes it but sends neither its result nor its error."""

    model_config = ConfigDict(frozen=True, strict=True)

    id: int | str | None = None
    method: Method
    params: ExecuteParams | ControlParams | NoParams = Field(default_factory=NoParams)
    notification: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Request:
        expected = METHOD_PARAMS[self.method]
        if type(self.params) is not expected:
            raise ValueError(f"{self.method} takes {expected.__name__}")
        if self.notification and self.id is not None:
            raise ValueError("a notification has no id")
        return self

    def to_json(self) -> str:
        """The frame a client sends (used by our own clients and the stress harness)."""
        msg: dict[str, Any] = {"jsonrpc": JSONRPC_VERSION}
        if not self.notification:
            msg["id"] = self.id
        msg["method"] = self.method
        params = self.params.model_dump(exclude_none=True)
        if params:
            msg["params"] = params
        return _dumps(msg)

    def reply(self, result: BaseModel | Mapping[str, Any]) -> str | None:
        """The result response, or None for a notification (nothing may be sent)."""
        return None if self.notification else result_json(self.id, result)

    def error(self, code: int, message: str, data: dict[str, Any] | None = None) -> ErrorReply:
        return ErrorReply(
            id=self.id, code=code, message=message, data=data, silent=self.notification
        )

    def error_from(self, exc: RpcError) -> ErrorReply:
        return self.error(exc.code, exc.message, exc.data)


class ErrorReply(BaseModel):
    """An error response ready to send. `silent` marks an error about a well-formed
    notification: JSON-RPC forbids answering those, so the server logs it and sends nothing."""

    model_config = ConfigDict(frozen=True, strict=True)

    id: int | str | None = None
    code: int
    message: str
    data: dict[str, Any] | None = None
    silent: bool = False

    @property
    def should_send(self) -> bool:
        return not self.silent

    def to_json(self) -> str:
        return error_json(self.id, self.code, self.message, self.data)


# --- Results and notification params (server -> client) --------------------------------------
class _Wire(BaseModel):
    """Base of everything the server sends: strict shapes so a server typo fails loudly."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    _omit_if_none: ClassVar[frozenset[str]] = frozenset()

    def wire(self) -> dict[str, Any]:
        d = self.model_dump(mode="json")
        for key in self._omit_if_none:
            if d.get(key) is None:
                d.pop(key, None)
        return d


NonNegInt = Annotated[int, Field(ge=0)]


class ExecuteStarted(_Wire):
    status: Literal["started"] = "started"
    job_id: str
    pid: int
    pgid: int
    argv: list[str]
    timeout: float | None = Field(None, description="total limit in force, after the stretch")
    stall_timeout: float | None = Field(None, description="stall limit in force, after it")
    timeout_factor: float = Field(1.0, ge=1.0, description="load stretch applied at the start")


class ExecuteQueued(_Wire):
    status: Literal["queued"] = "queued"
    job_id: str
    position: int = Field(ge=1, description="1 = next to start")
    reason: str


class ControlResult(_Wire):
    status: Literal["paused", "resumed", "cancelled"]
    job_id: str

    @classmethod
    def for_type(cls, type: str, job_id: str) -> ControlResult:
        return cls(status=CONTROL_STATUS[type.upper()], job_id=job_id)


class JobInfo(_Wire):
    """One row of `jobs`. Extra fields are allowed so the server can add detail freely."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)
    _omit_if_none: ClassVar[frozenset[str]] = frozenset({"position"})
    job_id: str
    state: JobState
    pid: int | None = None
    pgid: int | None = None
    argv: list[str]
    started_at: float | None = Field(None, description="unix seconds; null while queued")
    position: int | None = Field(None, ge=1, description="queued rows only: 1 = next to start")


class JobsResult(_Wire):
    jobs: list[JobInfo]


class PingResult(_Wire):
    pong: Literal[True] = True
    time: float


class Capabilities(_Wire):
    methods: list[str] = Field(default_factory=lambda: list(METHODS))
    shell: bool
    allow: list[str]
    max_frame: int = Field(gt=0)
    batch_bytes: int = Field(gt=0)


class ConnectedParams(_Wire):
    session_id: str
    version: str
    capabilities: Capabilities


class QueuedParams(_Wire):
    job_id: str
    position: int = Field(ge=1)
    reason: str


class StartedParams(_Wire):
    job_id: str
    pid: int
    pgid: int
    argv: list[str]
    timeout: float | None = None
    stall_timeout: float | None = None
    timeout_factor: float = Field(1.0, ge=1.0)


class OutputParams(_Wire):
    """Shape of `process.output` params, for clients and tests; the server uses the faster
    `encode_output`, which produces exactly this shape."""

    _omit_if_none: ClassVar[frozenset[str]] = frozenset({"data_base64"})
    job_id: str
    type: Stream
    seq: NonNegInt
    offset: NonNegInt
    size: NonNegInt
    data: str
    data_base64: str | None = None


def completion_status(reason: str, exit_code: int) -> str:
    """`completed`/`failed` for a normal exit (by exit code), otherwise the reason itself."""
    if reason == "exited":
        return "completed" if exit_code == 0 else "failed"
    return reason


class CompletedParams(_Wire):
    """`process.completed` params. `status` is derived from `reason` and `exit_code` when
    omitted, and checked when given, so no server path can report a contradiction (the
    earlier implementation reported killed jobs as exit 0)."""

    _omit_if_none: ClassVar[frozenset[str]] = frozenset({"error"})
    job_id: str
    status: Status
    reason: Reason
    exit_code: int
    signal: int | None = Field(None, ge=1)
    duration: float = Field(ge=0)
    stdout_bytes: NonNegInt = 0
    stderr_bytes: NonNegInt = 0
    error: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _derive_status(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("status") is None and "reason" in data:
            code = data.get("exit_code")
            if isinstance(code, int):
                data = {**data, "status": completion_status(data["reason"], code)}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> CompletedParams:
        expected = completion_status(self.reason, self.exit_code)
        if self.status != expected:
            raise ValueError(f"status must be {expected!r} for reason {self.reason!r}")
        if self.signal is not None and self.exit_code != -self.signal:
            raise ValueError("exit_code must be -signal when a signal ended the process")
        if self.reason == "exited" and (self.signal is not None or self.exit_code < 0):
            raise ValueError("reason 'exited' needs exit_code >= 0 and no signal")
        if self.reason == "signalled" and self.signal is None:
            raise ValueError("reason 'signalled' needs the signal number")
        if self.reason in ("queue_timeout", "spawn_failed") and (
            self.exit_code != -1 or self.signal is not None
        ):
            raise ValueError(f"reason {self.reason!r} means the process never ran: exit_code -1")
        return self


class ProgressParams(_Wire):
    """`process.progress`: a keepalive while a job says nothing. Never a `data` member (seed-004
    clients would take it for output), never an `error`."""

    job_id: str
    state: Literal["queued", "running"]
    elapsed: float = Field(ge=0, description="seconds since the job was accepted")
    silent_for: float = Field(ge=0, description="seconds since its last started/output frame")


NOTIFICATION_PARAMS: dict[str, type[_Wire]] = {
    CONNECTED: ConnectedParams,
    PROCESS_QUEUED: QueuedParams,
    PROCESS_STARTED: StartedParams,
    PROCESS_OUTPUT: OutputParams,
    PROCESS_COMPLETED: CompletedParams,
    PROCESS_PROGRESS: ProgressParams,
}


# --- Encoders -----------------------------------------------------------------------------------
def _as_dict(obj: BaseModel | Mapping[str, Any]) -> Any:
    if isinstance(obj, _Wire):
        return obj.wire()
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    return obj


def result_json(id: RequestId, result: BaseModel | Mapping[str, Any]) -> str:
    return _dumps({"jsonrpc": JSONRPC_VERSION, "id": id, "result": _as_dict(result)})


def error_json(
    id: RequestId, code: int, message: str, data: Mapping[str, Any] | None = None
) -> str:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return _dumps({"jsonrpc": JSONRPC_VERSION, "id": id, "error": error})


def notification_json(method: str, params: BaseModel | Mapping[str, Any]) -> str:
    """A server notification. Never has an `id`, and never a top-level `error` (seed-004
    clients treat any top-level `error` as a failed run)."""
    return _dumps({"jsonrpc": JSONRPC_VERSION, "method": method, "params": _as_dict(params)})


# Hot path. JSON needs `"`, `\` and U+0000..U+001F escaped; every other byte of ASCII text is
# copied as is. `\` must be replaced first so later escapes are not escaped again.
_ASCII_ESCAPES: tuple[tuple[bytes, bytes], ...] = (
    (b"\\", b"\\\\"),
    (b'"', b'\\"'),
    (b"\n", b"\\n"),
    (b"\r", b"\\r"),
    (b"\t", b"\\t"),
) + tuple(
    (bytes([c]), b"\\u%04x" % c) for c in range(32) if c not in (9, 10, 13)
)
_OUTPUT_PREFIX = '{"jsonrpc":"2.0","method":"process.output","params":{"job_id":'
_STREAM_FIELD = {"stdout": ',"type":"stdout","seq":', "stderr": ',"type":"stderr","seq":'}


def _escape_dense(data: bytes) -> bool:
    # Each replaced byte costs bytes.replace ~40 ns; the C escaper costs ~5 ns for every
    # byte. Past ~6% escapes (stream-json is ~15% quotes) the C escaper wins. A 4 KiB
    # sample decides for the whole batch.
    sample = data[:4096]
    n = sample.count(b'"') + sample.count(b"\\") + sample.count(b"\n")
    return n * 16 > len(sample)


def _json_utf8_bytes(data: bytes) -> str:
    """Escape at the byte level, then decode once. Safe for UTF-8 because every byte we
    replace is ASCII, and ASCII bytes never occur inside a multi-byte sequence; escaping
    also cannot turn invalid UTF-8 valid, so the final decode still validates."""
    for raw, escaped in _ASCII_ESCAPES:
        if raw in data:
            data = data.replace(raw, escaped)
    return '"' + data.decode("utf-8") + '"'


def encode_output(job_id: str, stream: str, seq: int, offset: int, data: bytes) -> str:
    """The complete `process.output` notification for one batch, as JSON text.

    Lossless: valid UTF-8 goes in `data` as text; anything else goes in `data` decoded with
    U+FFFD replacement (so simple clients still show something) plus `data_base64` with the
    exact bytes. The result never contains lone surrogates, so it is always sendable.
    """
    head = _STREAM_FIELD.get(stream)
    if head is None:
        raise ValueError(f"stream must be 'stdout' or 'stderr', not {stream!r}")
    b64 = ""
    try:
        # NUL almost always means binary: decode first so invalid data fails before the
        # byte-level escaping has done ~30 replace passes over it.
        if b"\x00" in data or _escape_dense(data):
            text = _json_string(data.decode("utf-8"))
        else:
            text = _json_utf8_bytes(data)
    except UnicodeDecodeError:
        text = _json_string(data.decode("utf-8", "replace"))
        b64 = ',"data_base64":"' + base64.b64encode(data).decode("ascii") + '"'
    return (
        f'{_OUTPUT_PREFIX}{_dumps(job_id)}{head}{seq:d},"offset":{offset:d},'
        f'"size":{len(data):d},"data":{text}{b64}}}}}'
    )


def output_bytes(params: Mapping[str, Any]) -> bytes:
    """The exact bytes of one `process.output` batch (client side): `data_base64` when
    present, else `data` encoded as UTF-8. Raises ValueError on a malformed notification."""
    b64 = params.get("data_base64")
    if b64 is not None:
        if not isinstance(b64, str):
            raise ValueError("data_base64 must be a string")
        try:
            return base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"data_base64 is not valid base64: {exc}") from None
    data = params.get("data")
    if not isinstance(data, str):
        raise ValueError("process.output params need a string 'data'")
    return data.encode("utf-8")


def incomplete_utf8_tail(data: bytes) -> int:
    """How many trailing bytes of `data` are an unfinished UTF-8 sequence (0..3).

    A reader that holds these back until its next read (or EOF) cuts batches on character
    boundaries, so valid UTF-8 output never falls back to `data_base64` just because a
    64 KiB batch boundary split a character.
    """
    n = len(data)
    for back in range(1, min(4, n) + 1):
        byte = data[n - back]
        if byte < 0x80:
            return 0
        if byte >= 0xC0:  # lead byte: how long should its sequence be?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4 if byte < 0xF8 else 0
            return back if need > back else 0
    return 0  # only continuation bytes (or nothing): not a sequence we can complete


# --- Command splitting ---------------------------------------------------------------------
_WORD_PIECES = re.compile(
    r"""
      (?P<ws>[ \t\r\n]+)
    | '(?P<sq>[^']*)'
    | "(?P<dq>[^"\\]*(?:\\.[^"\\]*)*)"
    | \\(?P<esc>.)
    | (?P<word>[^ \t\r\n'"\\]+)
    | (?P<bad>['"\\])
    """,
    re.VERBOSE | re.DOTALL,
)
_DQ_ESCAPE = re.compile(r'\\(["\\])')
_WHITESPACE = re.compile(r"[ \t\r\n]+")


_DQ_BODY = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)


def _split_failure(command: str, m: re.Match[str]) -> str:
    """shlex's message for an unfinished word: a trailing lone backslash (also inside
    double quotes, where shlex reads it as an escape) or else an unclosed quote."""
    if m.group() == "\\":
        return "No escaped character"
    if m.group() == '"':
        body = _DQ_BODY.match(command, m.end())
        if body is not None and body.end() < len(command):  # stopped at a lone backslash
            return "No escaped character"
    return "No closing quotation"


def split_command(command: str) -> list[str]:
    """Split like `shlex.split(command)` (POSIX mode, no comments), in linear time.

    Same results and the same ValueError messages as shlex for every input (property-tested
    against it); shlex itself takes minutes on a long quoted prompt.
    """
    if "'" not in command and '"' not in command and "\\" not in command:
        return [w for w in _WHITESPACE.split(command) if w]
    words: list[str] = []
    parts: list[str] | None = None
    for m in _WORD_PIECES.finditer(command):
        kind = m.lastgroup
        if kind == "ws":
            if parts is not None:
                words.append("".join(parts))
                parts = None
            continue
        if kind == "bad":
            raise ValueError(_split_failure(command, m))
        piece = m.group(kind)  # type: ignore[arg-type]
        if kind == "dq" and "\\" in piece:
            piece = _DQ_ESCAPE.sub(r"\1", piece)
        if parts is None:
            parts = [piece]
        else:
            parts.append(piece)
    if parts is not None:
        words.append("".join(parts))
    return words


# --- Decoder ------------------------------------------------------------------------------------
_TOP_LEVEL = frozenset({"jsonrpc", "id", "method", "params"})


def _short(text: Any, limit: int = 64) -> str:
    """A client-supplied name, bounded so an error message cannot be megabytes long."""
    s = str(text)
    return s if len(s) <= limit else s[:limit] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {_short(text, 32)}")
    return value


def _utf8_longer_than(text: str, limit: int) -> bool:
    n = len(text)
    if n > limit:
        return True
    if n * 4 <= limit or text.isascii():
        return False
    return len(text.encode("utf-8", "surrogatepass")) > limit


def _loc_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += ("." if path else "") + _short(part)
    return path


def _params_problem(method: str, exc: ValidationError) -> tuple[str, str]:
    """(field, message) for the first problem pydantic found, in the house format."""
    err = exc.errors(include_url=False, include_input=False)[0]
    loc = tuple(err.get("loc") or ())
    ctx = err.get("ctx") or {}
    field = str(ctx.get("field") or (loc[0] if loc else "params"))
    path = str(ctx.get("path") or _loc_path(loc) or field)
    kind = err.get("type")
    if kind == "extra_forbidden":
        allowed = list(METHOD_PARAMS[method].model_fields)
        takes = (
            f"{method} takes: {', '.join(allowed)}" if allowed else f"{method} takes no params"
        )
        return field, f"params.{path}: unknown parameter ({takes})"
    if kind == "cc_value":
        return field, f"params.{path}: {err.get('msg', 'is invalid')}"
    if kind == "missing":
        rule = _FIELD_RULES.get(field)
        return field, f"params.{path}: is required" + (f"; it {rule}" if rule else "")
    if kind == "less_than_equal" and field in ("timeout", "stall_timeout"):
        return field, f"params.{path}: must be at most {MAX_SECONDS:.0f} seconds"
    if len(loc) > 1 and field in _NESTED_RULES:
        return field, f"params.{path}: {_NESTED_RULES[field]}"
    rule = _FIELD_RULES.get(field) or str(err.get("msg", "is invalid")).lower()
    return field, f"params.{path}: {rule}"


def _reply(
    id: RequestId, code: int, message: str, data: dict[str, Any] | None = None, silent=False
) -> ErrorReply:
    return ErrorReply(id=id, code=code, message=message, data=data, silent=silent)


def decode_frame(frame: str | bytes, max_frame: int) -> Request | ErrorReply:
    """Turn one WebSocket frame into a validated `Request` or a ready `ErrorReply`.

    Never raises, whatever `frame` is. Checks run cheapest-first: the frame type and size
    before parsing (so an oversized frame costs no parse), then JSON, then the JSON-RPC
    envelope, then the method's params.
    """
    try:
        return _decode(frame, max_frame)
    except Exception as exc:  # the last line of defence; reaching it is a bug in this module
        return _reply(
            None, INTERNAL_ERROR, f"internal error decoding the frame ({type(exc).__name__})"
        )


def _decode(frame: Any, max_frame: int) -> Request | ErrorReply:
    if isinstance(frame, (bytes, bytearray, memoryview)):
        return _reply(
            None,
            BINARY_FRAME,
            "binary frames are not accepted: send each request as a JSON text frame",
        )
    if not isinstance(frame, str):
        return _reply(None, INVALID_REQUEST, f"a frame must be text, not {type(frame).__name__}")
    if _utf8_longer_than(frame, max_frame):
        return _reply(
            None,
            FRAME_TOO_LARGE,
            f"frame too large: the limit is {max_frame} bytes",
            {"max_frame": max_frame},
        )

    try:
        obj = json.loads(frame, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        return _reply(None, PARSE_ERROR, "parse error: JSON nested too deeply")
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, huge numbers
        return _reply(None, PARSE_ERROR, f"parse error: {_short(exc, 200)}")

    if isinstance(obj, list):
        return _reply(
            None, INVALID_REQUEST, "batch requests are not supported: send one request per frame"
        )
    if not isinstance(obj, dict):
        return _reply(
            None, INVALID_REQUEST, f"a request must be a JSON object, not {_json_type(obj)}"
        )

    has_id = "id" in obj
    raw_id = obj.get("id")
    id_ok = raw_id is None or isinstance(raw_id, str) or (
        isinstance(raw_id, int) and not isinstance(raw_id, bool)
    )
    rid: RequestId = raw_id if id_ok else None

    unknown = sorted(_short(k, 32) for k in obj.keys() - _TOP_LEVEL)
    if unknown:
        shown = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        return _reply(
            rid,
            INVALID_REQUEST,
            f"unknown top-level member(s): {shown}; a request has only jsonrpc, id, method, params",
        )
    if "jsonrpc" not in obj:
        return _reply(rid, INVALID_REQUEST, 'missing "jsonrpc": "2.0"')
    if obj["jsonrpc"] != JSONRPC_VERSION or not isinstance(obj["jsonrpc"], str):
        return _reply(rid, INVALID_REQUEST, 'jsonrpc must be exactly "2.0"')
    if not id_ok:
        return _reply(
            None,
            INVALID_REQUEST,
            f"id must be a string, an integer or null, not {_json_type(raw_id)}",
        )
    if "method" not in obj:
        return _reply(rid, INVALID_REQUEST, 'missing "method"')
    method = obj["method"]
    if not isinstance(method, str):
        return _reply(rid, INVALID_REQUEST, f"method must be a string, not {_json_type(method)}")

    silent = not has_id
    params = obj.get("params")
    if params is None:
        params = {}
    elif isinstance(params, list):
        return _reply(
            rid,
            INVALID_PARAMS,
            "params must be an object of named parameters; "
            "positional (array) params are not supported",
            {"field": "params"},
            silent,
        )
    elif not isinstance(params, dict):
        return _reply(
            rid, INVALID_REQUEST, f"params must be an object, not {_json_type(params)}"
        )

    model_cls = METHOD_PARAMS.get(method)
    if model_cls is None:
        return _reply(
            rid,
            METHOD_NOT_FOUND,
            f"method not found: {json.dumps(_short(method))}; methods: {', '.join(METHODS)}",
            None,
            silent,
        )
    try:
        model = model_cls.model_validate(params)
    except ValidationError as exc:
        field, message = _params_problem(method, exc)
        return _reply(rid, INVALID_PARAMS, message, {"field": field}, silent)
    return Request(id=rid, method=method, params=model, notification=not has_id)
