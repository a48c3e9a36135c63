"""Everything the server sends: results of each method and params of each notification.

The one definition of each shape. The server builds its replies from these models (so a typo
fails loudly, in tests, rather than reaching a client), the client parses what it receives
into them, and docs/protocol.md describes them field by field. `process.output` alone is
encoded by hand on the server (see `encoding.encode_output`, the hot path), into exactly the
shape of `OutputParams`; a test holds the two together.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from typing_extensions import TypedDict

from .names import (
    CONNECTED,
    CONTROL_STATUS,
    METHODS,
    PROCESS_COMPLETED,
    PROCESS_DETACHED,
    PROCESS_OUTPUT,
    PROCESS_PROGRESS,
    PROCESS_QUEUED,
    PROCESS_STARTED,
    ControlStatus,
    JobState,
    Reason,
    Status,
    Stream,
    completion_status,
)


class _Wire(BaseModel):
    """Base of everything the server sends: strict shapes so a server typo fails loudly."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    _omit_if_none: ClassVar[frozenset[str]] = frozenset()
    _nested: ClassVar[tuple[str, ...]] = ()
    """Fields holding messages (or lists of them), each sent through its own `wire()`."""

    def wire(self) -> dict[str, Any]:
        """The JSON object sent: fields in declaration order, each nested message through its
        own `wire()` (so a `jobs` row leaves out its `position` as a lone row does), and the
        `_omit_if_none` fields left out when they are None.

        Read from the validated values as they are (every field type here is JSON-native), not
        through `model_dump`: this runs for every message of every job."""
        d = dict(self.__dict__)
        if self.__pydantic_extra__:
            d.update(self.__pydantic_extra__)
        for key in self._nested:
            value = d[key]
            if value is None:
                continue
            d[key] = ([item.wire() for item in value] if isinstance(value, list)
                      else value.wire())
        for key in self._omit_if_none:
            if d.get(key) is None:
                d.pop(key, None)
        return d


NonNegInt = Annotated[int, Field(ge=0)]


class EnforcedLimit(TypedDict):
    """One limit in force on a job: its value and the mechanism that enforces it. A plain
    dict on the wire and in the model (`wire()` copies fields as they are)."""

    value: int | float
    by: str


class _StartedJob(_Wire):
    """A job that started: the same fields in the `execute` result and in `process.started`."""

    _omit_if_none: ClassVar[frozenset[str]] = frozenset({"limits_enforced"})

    job_id: str
    pid: int
    pgid: int
    argv: list[str]
    timeout: float | None = Field(None, description="total limit in force, after the stretch")
    stall_timeout: float | None = Field(None, description="stall limit in force, after it")
    timeout_factor: float = Field(1.0, ge=1.0, description="load stretch applied at the start")
    limits_enforced: dict[str, EnforcedLimit] | None = Field(
        None, description="each limit in force: its value and what enforces it (left out when "
        "the job has none)")


class ExecuteStarted(_StartedJob):
    _omit_if_none: ClassVar[frozenset[str]] = _StartedJob._omit_if_none | {"resume_token"}
    status: Literal["started"] = "started"
    resume_token: str | None = Field(None, description="for `attach`; jobs with detach_timeout")


class _Held(_Wire):
    """Why a queued job waits, for programs: the signal that holds it (`load`, `free_memory`,
    `cpu_pressure`, `memory_pressure`, `io_pressure`, `slow_start`, `max_jobs`), its value and
    the limit it is over; left out when the wait has no such signal (behind earlier jobs)."""

    _omit_if_none: ClassVar[frozenset[str]] = frozenset({"signal", "value", "limit"})
    signal: str | None = None
    value: float | None = None
    limit: float | None = None


class ExecuteQueued(_Held):
    _omit_if_none: ClassVar[frozenset[str]] = frozenset(
        {"signal", "value", "limit", "resume_token"})
    status: Literal["queued"] = "queued"
    job_id: str
    position: int = Field(ge=1, description="1 = next to start")
    reason: str
    resume_token: str | None = Field(None, description="for `attach`; jobs with detach_timeout")


class AttachResult(_Wire):
    """The `attach` result: the job as it is now. The replayed `process.output` frames (seq >
    `since_seq`) follow it, then live ones, then the one `process.completed`."""

    _omit_if_none: ClassVar[frozenset[str]] = frozenset({"pid", "pgid", "position"})
    status: Literal["attached"] = "attached"
    job_id: str
    state: JobState
    pid: int | None = None
    pgid: int | None = None
    argv: list[str]
    position: int | None = Field(None, ge=1, description="queued jobs only")
    next_seq: int = Field(ge=0, description="seq of the next output frame not yet made")


class ControlResult(_Wire):
    status: ControlStatus
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
    _nested: ClassVar[tuple[str, ...]] = ("jobs",)
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


class Gpu(_Wire):
    """One GPU as `nvidia-smi --query-gpu` names it."""

    index: NonNegInt
    model: str
    memory_mib: NonNegInt | None = Field(None, description="total memory, MiB")


class Hardware(_Wire):
    """The service's host, for capacity decisions (a fleet worker derives its slots from it):
    cores this process may use, memory, load, and GPUs (left out when the host has none or
    `nvidia-smi` is absent)."""

    _nested: ClassVar[tuple[str, ...]] = ("gpus",)
    _omit_if_none: ClassVar[frozenset[str]] = frozenset({"gpus"})
    cores: int = Field(ge=1)
    memory_total: NonNegInt = Field(description="bytes")
    memory_available: NonNegInt = Field(description="bytes")
    load: tuple[float, float, float] = Field(description="1, 5, 15-minute load averages")
    gpus: list[Gpu] | None = None


class ConnectedParams(_Wire):
    METHOD: ClassVar[str] = CONNECTED
    _nested: ClassVar[tuple[str, ...]] = ("capabilities", "hardware")
    _omit_if_none: ClassVar[frozenset[str]] = frozenset({"hardware"})

    session_id: str
    version: str
    capabilities: Capabilities
    hardware: Hardware | None = None
    model: Literal["real", "simulated"] = "real"
    """What answers claude jobs: `simulated` when the service was started beside the loopback
    model (`./dev serve --model local`)."""


class QueuedParams(_Held):
    METHOD: ClassVar[str] = PROCESS_QUEUED

    job_id: str
    position: int = Field(ge=1)
    reason: str


class StartedParams(_StartedJob):
    METHOD: ClassVar[str] = PROCESS_STARTED


class OutputParams(_Wire):
    """Shape of `process.output` params, for clients and tests; the server uses the faster
    `encode_output`, which produces exactly this shape."""

    METHOD: ClassVar[str] = PROCESS_OUTPUT

    _omit_if_none: ClassVar[frozenset[str]] = frozenset({"data_base64"})
    job_id: str
    type: Stream
    seq: NonNegInt
    offset: NonNegInt
    size: NonNegInt
    data: str
    data_base64: str | None = None


class CompletedParams(_Wire):
    """`process.completed` params. `status` is derived from `reason` and `exit_code` when
    omitted, and checked when given, so no server path can report a contradiction (the
    earlier implementation reported killed jobs as exit 0)."""

    METHOD: ClassVar[str] = PROCESS_COMPLETED

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

    METHOD: ClassVar[str] = PROCESS_PROGRESS

    job_id: str
    state: Literal["queued", "running"]
    elapsed: float = Field(ge=0, description="seconds since the job was accepted")
    silent_for: float = Field(ge=0, description="seconds since its last started/output frame")


class DetachedParams(_Wire):
    """`process.detached`: the job moved to another connection (`attach`); nothing more of it
    comes on this one."""

    METHOD: ClassVar[str] = PROCESS_DETACHED

    job_id: str
    reason: Literal["attached_elsewhere"] = "attached_elsewhere"


NOTIFICATION_PARAMS: dict[str, type[_Wire]] = {
    CONNECTED: ConnectedParams,
    PROCESS_QUEUED: QueuedParams,
    PROCESS_STARTED: StartedParams,
    PROCESS_OUTPUT: OutputParams,
    PROCESS_COMPLETED: CompletedParams,
    PROCESS_PROGRESS: ProgressParams,
    PROCESS_DETACHED: DetachedParams,
}
