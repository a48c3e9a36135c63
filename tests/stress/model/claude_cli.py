"""Run the pinned Claude Code CLI once, bounded in time, remembering every process of its tree.

The CLI runs Bash tool commands in a new session (setsid) with job control on, so a command's
background jobs get their own process group and are re-parented to init when the CLI exits: killing
the CLI's process group does not reach them. This runner therefore samples the CLI's descendants
while it runs, so a caller can find and kill what survives (by pid and start time, never by name).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from cc_executor.claude_cli import NESTING_VAR, PROJECT_BIN

CLAUDE_BIN = PROJECT_BIN / "claude"
SAMPLE_INTERVAL = 0.05


def find_claude() -> Path | None:
    """The CLI pinned in package.json (installed by `./dev setup`), or None when it is absent."""
    return CLAUDE_BIN if os.access(CLAUDE_BIN, os.X_OK) else None


@dataclass
class ClaudeRun:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    duration: float
    timed_out: bool
    pid: int
    tree: dict[int, float] = field(default_factory=dict)
    """pid -> create_time of every process seen in the CLI's tree (the CLI included)."""

    def events(self) -> list[dict]:
        """stream-json lines as objects (non-JSON lines are skipped)."""
        out = []
        for line in self.stdout.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def result(self) -> dict | None:
        """The final `result` event of a stream-json or json run."""
        for event in reversed(self.events()):
            if event.get("type") == "result":
                return event
        return None

    def survivors(self) -> list[psutil.Process]:
        """Processes of this run's tree still alive (same pid and start time)."""
        alive = []
        for pid, created in self.tree.items():
            try:
                proc = psutil.Process(pid)
                if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
            except psutil.NoSuchProcess:
                continue
        return alive

    def kill_survivors(self, timeout: float = 5.0) -> list[int]:
        """SIGKILL every survivor; returns their pids. Raises if any is still alive after `timeout`."""
        procs = self.survivors()
        for proc in procs:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=timeout)
        if alive:
            raise RuntimeError(f"processes still alive after SIGKILL: {[p.pid for p in alive]}")
        return [p.pid for p in procs]


def _sample_tree(root: psutil.Process, tree: dict[int, float]) -> None:
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        if proc.pid not in tree:
            try:
                tree[proc.pid] = proc.create_time()
            except psutil.NoSuchProcess:
                continue


def run_claude(args: list[str], *, env: dict[str, str], timeout: float, cwd: str | os.PathLike | None = None,
               claude: str | os.PathLike | None = None) -> ClaudeRun:
    """Run `claude ARGS` with stdin=/dev/null in its own session; kill its group on timeout.

    stdout and stderr go to unnamed temporary files, not pipes: CLI 2.1.197 exits without draining
    its asynchronous pipe writes, so a reader of a pipe loses everything past the 64 KiB the kernel
    buffered, with exit code 0 (upstream issue anthropics/claude-code#77112; seen here for
    stream-json, json and text output). Writes to a regular file are synchronous and complete.

    `env` must be complete (see cli_env.claude_process_env). The process tree is sampled every
    50 ms, so children that live at least that long are recorded in `ClaudeRun.tree`.
    """
    binary = os.fspath(claude or find_claude() or CLAUDE_BIN)
    if NESTING_VAR in env:
        raise ValueError(f"env contains {NESTING_VAR}; the CLI refuses to start inside another session")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        proc = subprocess.Popen([binary, *args], stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                env=env, cwd=cwd, start_new_session=True)
        tree: dict[int, float] = {}
        root = psutil.Process(proc.pid)
        timed_out = False
        while True:
            _sample_tree(root, tree)
            try:
                proc.wait(timeout=SAMPLE_INTERVAL)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() - started > timeout:
                    timed_out = True
                    _sample_tree(root, tree)
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    proc.wait()
                    break
        duration = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    return ClaudeRun(list(args), proc.returncode, stdout.decode("utf-8", "replace"),
                     stderr.decode("utf-8", "replace"), duration, timed_out, proc.pid, tree)
