"""Request params: what each method accepts, validated strictly, refused in the house format.

Each method's params are one pydantic model (strict JSON types, unknown fields refused), so a
request that passes decoding is safe to act on. Failures are phrased `params.<field>: <rule>`
by `decoding`, from the rules written here next to the fields they describe.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .command import split_command
from .errors import clip, params_error
from .names import ControlType

# Limits the protocol itself imposes (documented in docs/protocol.md).
MAX_SECONDS = 1e9  # larger timeouts overflow some event loops' timer arithmetic
try:
    ARG_MAX = max(os.sysconf("SC_ARG_MAX"), 128 * 1024)
except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
    ARG_MAX = 2 * 1024 * 1024
SHELL = "/bin/sh"


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


# The protocol's bounds of each limit (a server's ceilings are usually far lower).
LIMIT_BOUNDS: dict[str, tuple[type, float]] = {
    "memory_mb": (int, 16 * 1024 * 1024),
    "processes": (int, 4 * 1024 * 1024),
    "cpu_seconds": (int, MAX_SECONDS),
    "open_files": (int, 1024 * 1024),
    "output_mb": (float, 1024 * 1024 * 1024),
}


class JobLimits(_Params):
    """`execute`'s `limits`: resource limits of the job, each optional (docs/protocol.md)."""

    memory_mb: int | None = None
    processes: int | None = None
    cpu_seconds: int | None = None
    open_files: int | None = None
    output_mb: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _each(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise _cc_value("must be an object of limits (memory_mb, processes, cpu_seconds, "
                            "open_files, output_mb)", path="limits", field="limits")
        for name, value in data.items():
            path = f"limits.{clip(name)}"
            if name not in LIMIT_BOUNDS:
                raise _cc_value("unknown limit (limits are: memory_mb, processes, cpu_seconds, "
                                "open_files, output_mb)", path=path, field=path)
            kind, top = LIMIT_BOUNDS[name]
            if value is None:
                continue
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if ok and kind is int:
                ok = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
                if ok:
                    data = {**data, name: int(value)}
                    value = int(value)
            if not ok or not (0 < value <= top):
                what = "an integer" if kind is int else "a number"
                raise _cc_value(f"must be {what} > 0 and <= {top:.0f}", path=path, field=path)
            if kind is float:
                data = {**data, name: float(value)}
        return data


class ExecuteParams(_Params):
    """Params of `execute`. Exactly one of `command` (a string) or `args` (an argv list)."""

    command: str | None = None
    args: list[str] | None = Field(None, min_length=1)
    cwd: str | None = None
    env: dict[str, str | None] | None = None
    input: str | None = None
    timeout: Seconds | None = None
    stall_timeout: Seconds | None = None
    # Seconds the job outlives a dropped connection, waiting for `attach` (0: ended at once).
    detach_timeout: Annotated[float, Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False)] | None \
        = None
    limits: JobLimits | None = None

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
            path = f"env.{clip(name)}"
            if not name or "=" in name:
                raise _cc_value("a variable name must be non-empty and contain no '='", path=path)
            _check_text(name, path)
            if value is not None:
                _check_text(value, path)
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


class AttachParams(_Params):
    """Params of `attach`: the job, the token its `execute` reply carried, and the last output
    `seq` the client holds (-1: replay from the start). A missing token is let through here
    and refused like a wrong one (-32004), so the two cannot be told apart."""

    job_id: str = Field(min_length=1)
    resume_token: str | None = None
    since_seq: int = Field(-1, ge=-1)


class NoParams(_Params):
    """Params of `jobs` and `ping`: none (absent, null or {})."""


METHOD_PARAMS: dict[str, type[_Params]] = {
    "execute": ExecuteParams,
    "control": ControlParams,
    "jobs": NoParams,
    "ping": NoParams,
    "attach": AttachParams,
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
    "detach_timeout": "must be a number >= 0 (seconds)",
    "resume_token": "must be a string",
    "since_seq": "must be an integer >= -1",
    "type": "must be one of PAUSE, RESUME, CANCEL (any case)",
    "job_id": "must be a non-empty string",
    "limits": "must be an object of limits (memory_mb, processes, cpu_seconds, open_files, "
              "output_mb)",
}
_NESTED_RULES: dict[str, str] = {
    "args": "must be a string",
    "env": "must be a string or null",
}
