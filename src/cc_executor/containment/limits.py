"""A job's resource limits: what was asked, the server's ceilings, and what the host can enforce.

The rule, in one place: a limit is in force only if something real enforces it. Each limit names
its enforcer in `limits_enforced`, and a limit nothing here can enforce is refused (never
silently ignored), as is one over the server's ceiling. A ceiling also applies to jobs that ask
for nothing: an operator's ceiling bounds every job.

Enforcers, best first:
* memory_mb   - cgroup v2 `memory.max` where the controller is delegated, else cgroup v1
                `memory.limit_in_bytes` (and `memsw` where swap accounting exists);
* processes   - cgroup v2 `pids.max`, else cgroup v1 `pids.max`;
* cpu_seconds - `RLIMIT_CPU` on every process (inherited), plus the job's whole CPU time read
                from its v2 cgroup's `cpu.stat` where the job has one;
* open_files  - `RLIMIT_NOFILE` (per process; inherited);
* output_mb   - counted by the runner (stdout + stderr together).
Never `RLIMIT_NPROC` (root ignores it) nor `RLIMIT_AS` (node, hence the Claude CLI, reserves
far more address space than it uses).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

NAMES = ("memory_mb", "processes", "cpu_seconds", "open_files", "output_mb")


@dataclass(frozen=True)
class Limits:
    """Limits of one job; None = no limit. Plain values: the runner's `RunSpec` carries them."""

    memory_mb: int | None = None
    processes: int | None = None
    cpu_seconds: int | None = None
    open_files: int | None = None
    output_mb: float | None = None

    def asked(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None}

    @property
    def output_bytes(self) -> int | None:
        return None if self.output_mb is None else max(1, int(self.output_mb * 1024 * 1024))


class LimitError(ValueError):
    """A limit that cannot be granted: `name` is the limit, `ceiling` the setting over which
    it is (None when the host cannot enforce it at all)."""

    def __init__(self, name: str, message: str, ceiling: str | None = None):
        super().__init__(message)
        self.name = name
        self.ceiling = ceiling


def ceiling_setting(name: str) -> str:
    """The setting that holds the ceiling of limit `name`: `max_memory_mb`, ..."""
    return f"max_{name}"


def plan(asked: Limits | None, ceilings: dict[str, float],
         enforcers: dict[str, str]) -> tuple[Limits, dict[str, dict]]:
    """The limits a job runs with, and what enforces each.

    `ceilings`: limit name -> the server's ceiling (0 or absent: none). `enforcers`: limit
    name -> what enforces it on this host (absent: nothing can). Raises LimitError."""
    values = dict(asked.asked()) if asked is not None else {}
    for name in NAMES:
        top = ceilings.get(name) or 0
        if top > 0:
            if name not in values:
                values[name] = top
            elif values[name] > top:
                setting = ceiling_setting(name)
                raise LimitError(name, f"{values[name]:g} is over the server's ceiling of "
                                 f"{top:g} ({setting})", ceiling=setting)
    enforced = {}
    for name, value in values.items():
        by = enforcers.get(name)
        if by is None:
            raise LimitError(name, "this host cannot enforce it (no "
                             f"{_NEEDS.get(name, 'enforcer')} available to this service)")
        enforced[name] = {"value": value, "by": by}
    return Limits(**values), enforced


_NEEDS = {"memory_mb": "writable memory controller (cgroup v2 or v1)",
          "processes": "writable pids controller (cgroup v2 or v1)"}
