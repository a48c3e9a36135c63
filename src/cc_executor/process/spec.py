"""What a run is asked to do and what it gives back: plain values, shared by every other module.

Kept apart from the runner so that the batcher, the tests and the service can name these types
without pulling in the event loop, the spawn path or `/proc` scans.
"""

from __future__ import annotations

import enum
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from .. import defaults, tree
from ..claude_cli import NESTING_VAR
from ..containment import Limits

_NESTING_KEY = os.fsencode(NESTING_VAR)  # a CLI that sees it refuses to start (nested)

Stream = Literal["stdout", "stderr"]

_MARKER_KEY = os.fsencode(tree.MARKER_VAR)


class EndReason(str, enum.Enum):
    EXITED = "exited"
    SIGNALLED = "signalled"
    TIMEOUT = "timeout"
    STALLED = "stalled"
    CANCELLED = "cancelled"
    SHUTDOWN = "shutdown"
    MEMORY_LIMIT = "memory_limit"
    PROCESS_LIMIT = "process_limit"
    CPU_LIMIT = "cpu_limit"
    OUTPUT_LIMIT = "output_limit"


class SpawnError(Exception):
    """The command could not be started (not found, not executable, bad cwd...)."""


@dataclass(frozen=True, slots=True)
class OutputBatch:
    stream: Stream
    seq: int
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class RunEnd:
    reason: EndReason
    exit_code: int
    """The exit status, or the negative signal number when a signal ended the leader."""
    signal: int | None
    duration: float
    stdout_bytes: int
    stderr_bytes: int
    batches: int
    killed: int = 0
    """How many processes the runner had to signal (0 for a clean exit)."""
    leftover_pipe: bool = False
    """A process outside our reach kept a pipe open; it was closed without EOF."""


@dataclass
class RunSpec:
    """What to run. Exactly one of `argv` and `shell`."""

    argv: Sequence[str] | None = None
    shell: str | None = None
    cwd: str | None = None
    env: Mapping[str, str | None] | None = None
    """Overrides on top of the inherited environment; None removes a variable."""
    inherit_env: bool = True
    input: bytes | None = None
    timeout: float | None = None
    stall_timeout: float | None = None
    kill_grace: float = defaults.KILL_GRACE
    capture: bool = True
    """False: the child writes straight to our stdout/stderr (no batches, no stall detection)."""
    capture_to: Literal["pipe", "file"] = "pipe"
    """"file": stdout/stderr go to unlinked temp files that the runner tails with pread. For
    programs that lose output written to a pipe when they exit (Claude Code CLI 2.1.x drops what
    it has not flushed): a regular file is always complete. The file is also the buffer, so a slow
    consumer never blocks the child; memory stays bounded by `max_buffer` all the same."""
    inherit_stdin: bool = False
    """True: the child reads our stdin (a terminal for `safe_run`); default is /dev/null."""
    batch_bytes: int = defaults.BATCH_BYTES
    batch_interval: float = defaults.BATCH_INTERVAL
    max_buffer: int = defaults.MAX_BUFFER
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    limits: Limits | None = None
    """Resource limits (`containment.limits`); memory and processes need the runner's
    `Containment`, the others work everywhere (rlimits, the runner's output count)."""

    def resolved_argv(self) -> list[str]:
        if (self.argv is None) == (self.shell is None):
            raise ValueError("give exactly one of argv and shell")
        if self.shell is not None:
            return ["/bin/sh", "-c", self.shell]
        argv = list(self.argv or [])
        if not argv or not all(isinstance(a, str) for a in argv):
            raise ValueError("argv must be a non-empty list of strings")
        return argv


def _server_env() -> dict[bytes, bytes]:
    """This process's environment in the bytes form exec takes, so a start never decodes and
    re-encodes every variable (`dict(os.environ)` does both). On POSIX `os.environ` keeps
    exactly that form in its `_data` dict, which copies in one C call (`dict(os.environb)`
    looks each variable up through Python code: ~40 us a start with 40 variables)."""
    data = getattr(os.environ, "_data", None)
    if isinstance(data, dict):
        return dict(data)
    return dict(os.environb)


def build_env(spec: RunSpec, marker: str) -> dict[bytes, bytes]:
    env = _server_env() if spec.inherit_env else {}
    for key, value in (spec.env or {}).items():
        if value is None:
            env.pop(os.fsencode(key), None)
        else:
            env[os.fsencode(key)] = os.fsencode(value)
    # A CLI started from inside a Claude Code session refuses to run nested.
    env.pop(_NESTING_KEY, None)
    env[_MARKER_KEY] = os.fsencode(marker)
    return env
