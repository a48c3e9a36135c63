"""Every setting of the service in one place, read from the environment and `.env`.

Each field is also a command-line flag (generated in `cc_executor.settings_cli`, which override
these) and a line of `.env.example` (rendered by `env_example`), so adding a field here is the
whole change. Keeping them together means the server, the runner and the load monitor never
disagree about a default, and the docs have a single table to mirror.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values
from pydantic import BaseModel, Field, field_validator

from . import defaults

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_SIZE_MULT = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str | int) -> int:
    """Parse `512M`, `1.5GiB`, `65536` into bytes (binary units, case-insensitive)."""
    if isinstance(text, int):
        return text
    m = _SIZE_RE.match(str(text))
    if not m:
        raise ValueError(f"not a size: {text!r} (expected e.g. 65536, 512K, 64M, 2G)")
    unit = (m.group(2) or "").lower()[:1]
    return int(float(m.group(1)) * _SIZE_MULT[unit])


def format_size(n: int) -> str:
    """`4194304` -> `4M`: the largest binary unit that divides exactly, so it parses back."""
    for unit in ("T", "G", "M", "K"):
        mult = _SIZE_MULT[unit.lower()]
        if n and n % mult == 0:
            return f"{n // mult}{unit}"
    return str(n)


def parse_bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    t = str(text).strip().lower()
    if t in {"1", "true", "yes", "on"}:
        return True
    if t in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {text!r} (expected 1/0, true/false, yes/no, on/off)")


def parse_list(text: str | list[str]) -> list[str]:
    if isinstance(text, list):
        return [s for s in text if s]
    return [s.strip() for s in str(text).split(",") if s.strip()]


def default_run_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    return Path(base) / f"cc_executor-{os.getuid()}"


# Fields given in bytes: read with `parse_size`, shown with `format_size`.
SIZE_FIELDS = ("max_frame", "batch_bytes", "max_buffer", "min_free_mem", "spool_memory",
               "spool_limit", "replay_window")


class Settings(BaseModel):
    """The service's configuration. Field docs are the source for `.env.example` and `--help`."""

    host: str = Field("127.0.0.1", description="Address to bind; non-loopback requires a token")
    port: int = Field(8004, ge=0, le=65535, description="TCP port; 0 picks a free one")
    token: str | None = Field(None, description="Bearer token required on the WebSocket upgrade")
    allow: list[str] = Field(default_factory=lambda: ["claude"], description="Executables allowed",
                             json_schema_extra={"metavar": "CMD"})
    shell: bool = Field(False, description="Run `command` strings through `sh -c` (unsafe)")
    allow_origin: list[str] = Field(default_factory=list, description="Extra allowed Origins",
                                    json_schema_extra={"metavar": "ORIGIN"})
    log_dir: Path = Field(Path("logs"), description="Where job event logs go")
    run_dir: Path = Field(default_factory=default_run_dir, description="Live process registry")
    kill_grace: float = Field(defaults.KILL_GRACE, gt=0,
                              description="Seconds between SIGTERM and SIGKILL")
    max_frame: int = Field(16 * 1024**2, gt=0, description="Largest accepted client frame, bytes")
    max_batch: int = Field(defaults.MAX_BATCH, gt=0, description="Most requests in one JSON-RPC batch array; "
                           "a longer batch gets one -32600 error naming this limit")
    max_jobs_per_connection: int = Field(64, gt=0, description="Running+queued jobs per connection")
    max_jobs: int = Field(128, gt=0, description="Jobs running at once across all connections")
    max_queue: int = Field(1024, ge=0, description="Jobs waiting to start, across all connections")
    queue_timeout: float = Field(900.0, gt=0, description="Longest wait in the queue, seconds")
    default_timeout: float | None = Field(None, description="Total limit for jobs that set none")
    ping_interval: float = Field(defaults.PING_INTERVAL, gt=0,
                                 description="WebSocket protocol ping interval")
    ping_timeout: float = Field(defaults.PING_TIMEOUT, gt=0,
                                description="Seconds to wait for a pong")
    progress_interval: float = Field(5.0, ge=0, description="Seconds of a job's silence "
                                     "between process.progress keepalives; 0 disables")
    batch_bytes: int = Field(defaults.BATCH_BYTES, gt=0,
                             description="Largest output batch, bytes")
    batch_interval: float = Field(defaults.BATCH_INTERVAL, gt=0,
                                  description="Longest wait before a partial batch")
    max_buffer: int = Field(defaults.MAX_BUFFER, gt=0, description="Undelivered output per job "
                            "before the runner stops reading the pipe (back-pressure)")
    spool_memory: int = Field(4 * 1024**2, ge=0, description="Output of one resumable job "
                              "(detach_timeout) kept in memory; more goes to an unlinked file "
                              "under run_dir")
    spool_limit: int = Field(256 * 1024**2, gt=0, description="Undelivered output a detached "
                             "job may hold before it is paused (never truncated)")
    replay_window: int = Field(4 * 1024**2, ge=0, description="Output already sent that a "
                               "resumable job keeps for a replay after a dropped connection")
    max_detach_timeout: float = Field(3600, ge=0, description="Ceiling of a job's "
                                      "detach_timeout: how long a job may outlive its dropped "
                                      "connection; 0: no ceiling")
    is_sandbox: bool = Field(False, description="Set IS_SANDBOX=1 for claude (root + skip-perms)")
    claude_path: str | None = Field(None, description="Path of the claude executable")
    claude_capture: str = Field("file", pattern="^(file|pipe)$",
                                description="How claude's output is captured: file (complete even "
                                "when the CLI exits without flushing a pipe) or pipe")
    throttle: bool = Field(True, description="Queue new jobs while the host is overloaded")
    stretch_timeouts: bool = Field(True, description="Stretch a job's timeout and stall_timeout "
                                   "by the host's load factor when it starts (cc_executor.timing)")
    max_load: str = Field("8", description="Max 1-min load: absolute (8) or per core (2/core)")
    min_free_mem: int = Field(256 * 1024**2, ge=0, description="Free-memory floor, bytes")
    cpu_pressure_limit: float = Field(0.25, ge=0, le=1, description="Queue new jobs while "
                                      "tasks stalled on CPU more than this share of the last "
                                      "sample window (PSI)")
    memory_pressure_limit: float = Field(0.10, ge=0, le=1, description="Same, for memory")
    io_pressure_limit: float = Field(0.50, ge=0, le=1, description="Same, for IO")
    slow_start: int = Field(8, gt=0, le=1024, description="Young jobs (started, CPU not yet "
                            "measured) at once; doubles while the host stays calm, back to this "
                            "when not")
    job_cpu_share: float = Field(0.5, ge=0, le=64, description="CPU pressure holds jobs only "
                                 "while the running jobs use this share of the cores")
    sample_interval: float = Field(0.5, gt=0, le=60, description="Seconds between host "
                                   "samples (load, memory, PSI) that admission reads")
    psi_dir: str = Field("/proc/pressure", description="Where PSI is read; empty or missing: "
                         "fall back to the load-average rule")
    job_load: float = Field(1.0, ge=0, le=64, description="Without PSI: load a new job is "
                            "assumed to bring until the 1-min average shows it (paces starts); "
                            "0 turns pacing off")

    metrics_token: str | None = Field(None, description="Bearer token GET /metrics requires; "
                                      "unset: /metrics is open like /health (counts only)")
    log_level: str = Field("info", pattern="^(debug|info|warning|error)$",
                           description="Console log level (debug, info, warning, error); info "
                           "shows refused upgrades, rate-limited")
    model: str = Field("real", pattern="^(real|simulated)$", description="What answers claude "
                       "jobs, as `connected` and /health report it: real, or simulated (set by "
                       "`./dev serve --model local`; a label only, the service fakes nothing)")
    claude_telemetry: bool = Field(False, description="Turn on the Claude CLI's own "
                                   "OpenTelemetry export for claude jobs (docs/observability.md)")
    containment: str = Field("auto", pattern="^(auto|cgroup|fallback)$", description="How "
                             "jobs are contained: auto (a cgroup per job where the host offers a "
                             "writable cgroup v2 tree, else fallback), cgroup (required), or "
                             "fallback (process group, marker and subreaper sweep)")
    max_memory_mb: int = Field(0, ge=0, description="Ceiling of a job's limits.memory_mb, and "
                               "the limit of jobs that set none; 0: no ceiling")
    max_processes: int = Field(0, ge=0, description="Same, for limits.processes")
    max_cpu_seconds: int = Field(0, ge=0, description="Same, for limits.cpu_seconds")
    max_open_files: int = Field(0, ge=0, description="Same, for limits.open_files")
    max_output_mb: float = Field(0, ge=0, description="Same, for limits.output_mb")

    @field_validator("allow", "allow_origin", mode="before")
    @classmethod
    def _lists(cls, v):  # noqa: D102
        return parse_list(v)

    @field_validator("shell", "is_sandbox", "throttle", "stretch_timeouts", "claude_telemetry",
                     mode="before")
    @classmethod
    def _bools(cls, v):  # noqa: D102
        return parse_bool(v)

    @field_validator(*SIZE_FIELDS, mode="before")
    @classmethod
    def _sizes(cls, v):  # noqa: D102
        return parse_size(v)

    @field_validator("token", "claude_path", "default_timeout", "metrics_token", mode="before")
    @classmethod
    def _empty_is_none(cls, v):  # noqa: D102
        return None if v == "" else v

    @field_validator("max_load")
    @classmethod
    def _max_load(cls, v: str) -> str:  # noqa: D102
        parse_max_load(v, cores=1)
        return v

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        dotenv_path: str | Path | None = ".env",
        **overrides,
    ) -> "Settings":
        """Build settings from `.env`, then the environment, then explicit overrides.

        The process environment wins over `.env`, as with python-dotenv's default.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        sources: list[Mapping[str, str | None]] = []
        if dotenv_path and Path(dotenv_path).is_file():
            sources.append(dotenv_values(dotenv_path))
        sources.append(environ)
        for source in sources:
            for name in cls.model_fields:
                key = ENV_PREFIX + name.upper()
                if key in source and source[key] is not None:
                    values[name] = source[key]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def max_load_value(self, cores: int | None = None) -> float:
        return parse_max_load(self.max_load, cores or os.cpu_count() or 1)


ENV_PREFIX = "CC_EXECUTOR_"


def parse_max_load(text: str, cores: int) -> float:
    """`8` is an absolute 1-minute load; `2/core` (or `2x`) scales with the core count."""
    t = str(text).strip().lower()
    per_core = 1
    for suffix in ("/core", "x"):
        if t.endswith(suffix):
            t, per_core = t[: -len(suffix)], cores
            break
    try:
        value = float(t)
    except ValueError:
        value = float("nan")
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"not a load: {text!r} (expected a number >= 0, e.g. 8 or 2/core)")
    return value * per_core


def default_text(name: str) -> str:
    """A field's default as it would be written in `.env` ("" for none), so `.env.example`
    and `--help` show the same value, in a form the field reads back."""
    default = Settings.model_fields[name].get_default(call_default_factory=True)
    if isinstance(default, list):
        return ",".join(default)
    if isinstance(default, bool):
        return "1" if default else "0"
    if default is None:
        return ""
    if name in SIZE_FIELDS:
        return format_size(default)
    return str(default)


def env_example() -> str:
    """Render `.env.example` from the field docs so it never drifts from the code."""
    lines = ["# cc_executor settings. Every variable is optional; shown with its default.", ""]
    for name, field in Settings.model_fields.items():
        # The run dir's default depends on the user and XDG_RUNTIME_DIR: no one value to show.
        default = "" if name == "run_dir" else default_text(name)
        lines.append(f"# {field.description}")
        lines.append(f"{ENV_PREFIX}{name.upper()}={default}")
        lines.append("")
    return "\n".join(lines)
