"""Find and end what a job left running on this host, by the tag in its processes' environment.

Owns the job tag (`JOB_TAG_VAR`): every job the harness starts gets STRESS_JOB=<report dir>/<output
stem>, and everything it starts inherits it. Why a tag and not the process group: the Claude CLI
hands its environment to Bash tool commands, which may setsid or nohup away from its group, so
only the environment still finds them. After the service reports the end, a managed (same-host)
run checks that nothing of the job is left: any survivor fails the attempt (reason
leftover_processes) and is killed. A dispatched run also ends a job's tagged processes before it
retries the attempt elsewhere, so the retry never runs beside the remains of the first try.

Reads /proc only; must not import the runner's other modules, nor anything of the service
(never `cc_executor.jobs/server/process/tree/registry`).
"""

from __future__ import annotations

import os
import signal
import time

JOB_TAG_VAR = "STRESS_JOB"
"""Every job gets STRESS_JOB=<report dir>/<output stem>. Everything it starts inherits it (the
Claude CLI hands its environment to Bash tool commands, which may setsid or nohup away from its
group), so after the service reports the end, a managed (same-host) run can check that nothing
of the job is left: any survivor fails the attempt (reason leftover_processes) and is killed."""
LEFTOVER_WAIT = 2.0
"""Seconds a tagged process may take to finish dying after the completion before it counts."""


def tagged_processes(tag: str) -> dict[int, str]:
    """Live processes on this host whose environment holds STRESS_JOB=<tag>: pid -> command line."""
    needle = f"{JOB_TAG_VAR}={tag}".encode()
    found: dict[int, str] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
            if stat[stat.rfind(b")") + 2:][:1] in (b"Z", b"X"):
                continue
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                found[int(entry.name)] = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
    return found


def end_leftovers(tag: str, wait: float = LEFTOVER_WAIT) -> list[str]:
    """Tagged processes still alive `wait` s after the job ended, SIGKILLed by pid: "pid: cmdline"."""
    deadline = time.monotonic() + wait
    while (left := tagged_processes(tag)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return [f"{pid}: {cmd[:160]}" for pid, cmd in sorted(left.items())]


__all__ = ["JOB_TAG_VAR", "LEFTOVER_WAIT", "end_leftovers", "tagged_processes"]
