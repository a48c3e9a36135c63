"""`Run`: one command from spawn to its one `RunEnd` - the lifecycle, the controls, the timers.

The output path is delegated: `OutputReader` reads the descriptors, `OutputBatcher` cuts batches
and keeps the back-pressure books. What stays here is what only the run as a whole can decide:
when the leader is gone (pidfd), what to kill and when (`tree`), how long to drain, and the end.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator

from .. import tree
from ..containment import Containment, JobBox
from ..registry import Registry
from .batcher import OutputBatcher
from .ending import TreeEnder
from .exit_watch import ExitWatch
from .reader import OutputReader
from .spawn import spawn
from .spec import EndReason, OutputBatch, RunEnd, RunSpec, SpawnError, build_env
from .stdin import StdinFeeder

_LIMIT_POLL = 0.1  # seconds between looks at a job's cgroup limits


class Run:
    """One running command. Create with `start()`; consume with `events()` or `output()`."""

    def __init__(self, spec: RunSpec, registry: Registry | None = None,
                 containment: Containment | None = None):
        self.spec = spec
        self.run_id = spec.run_id
        self.argv = spec.resolved_argv()
        self.pid = -1
        self.pgid = -1
        self.started_at = 0.0
        self.paused = False
        self._registry = registry
        self._loop = asyncio.get_running_loop()
        self._proc: subprocess.Popen | None = None
        self._wakeup = asyncio.Event()
        self._batcher = OutputBatcher(spec.batch_bytes, spec.max_buffer)
        self._reader = OutputReader(self._loop, self._batcher, spec.batch_interval, self._wakeup)
        self._exit_fut: asyncio.Future[int] = self._loop.create_future()
        self._end_fut: asyncio.Future[RunEnd] = self._loop.create_future()
        self._end: RunEnd | None = None
        self._end_request: EndReason | None = None
        self._kill_task: asyncio.Task | None = None
        self._ender: TreeEnder  # set at spawn, once the pid is known
        self._leftover_pipe = False
        self._exit_watch: ExitWatch | None = None
        self._watchdog_handle: asyncio.TimerHandle | None = None
        self._stdin: StdinFeeder | None = None
        self._tasks: list[asyncio.Task] = []
        self._consumed = False
        self._containment = containment
        self.box: JobBox | None = None
        self._limit_hit: EndReason | None = None
        self._limit_handle: asyncio.TimerHandle | None = None

    # The output path's state, by the names tests look at.
    _streams = property(lambda self: self._reader.streams)
    _batches = property(lambda self: self._batcher.ready)
    _queued = property(lambda self: self._batcher.queued)
    _held_back = property(lambda self: self._batcher.held_back)

    def output_bytes(self) -> int:
        """Output read so far, both streams (for live views; the end's counts are in RunEnd)."""
        return sum(self._reader.totals().values())

    # ---- start -----------------------------------------------------------------------------

    def _spawn(self) -> None:
        spec = self.spec
        self.box = self._make_box()
        try:
            self._proc, files = spawn(spec, self.argv, build_env(spec, self.run_id), self.box)
        except BaseException:
            if self.box is not None and not self.box.recycle():
                self.box.remove()
            raise
        proc = self._proc
        self.pid = self.pgid = proc.pid
        self._ender = TreeEnder(proc, self.run_id, spec.kill_grace, self.box)
        if spec.limits is not None and spec.limits.output_bytes is not None:
            self._reader.output_limit = spec.limits.output_bytes
            self._reader.on_limit = lambda: self._request_end(EndReason.OUTPUT_LIMIT)
        if self.box is not None and self.box.watched:
            self._limit_handle = self._loop.call_later(_LIMIT_POLL, self._on_limit_poll)
        self.started_at = time.time()
        self._t0 = time.monotonic()
        self._reader.active_at = self._t0
        if self._registry is not None:
            # Written on the next loop turn, so a caller's reply (e.g. the execute result) goes
            # out first; it still precedes any end of the run, which needs later loop turns.
            self._loop.call_soon(self._registry.add, self.run_id, self.pid, self.argv, spec.cwd,
                                 self.run_id)
        self._exit_watch = ExitWatch(self._loop, proc, self._exit_fut)
        if files is not None:
            self._tasks.append(self._reader.tail_files(files))
        elif spec.capture:
            self._reader.read_pipes((proc.stdout.fileno(), proc.stderr.fileno()))
        if spec.input is not None:
            self._stdin = StdinFeeder(self._loop, proc.stdin, spec.input)
        self._tasks.append(self._loop.create_task(self._lifecycle()))
        if spec.timeout is not None or (spec.stall_timeout is not None and spec.capture):
            self._on_watchdog()

    def _make_box(self) -> JobBox | None:
        """The run's cgroups (and rlimits), from the runner's `Containment`; without one, only
        the limits that need no cgroup can be had."""
        limits = self.spec.limits
        if self._containment is None:
            if limits is None:
                return None
            if limits.memory_mb is not None or limits.processes is not None:
                raise SpawnError("memory_mb and processes limits need cgroup containment")
            box = JobBox(limits)
            return box if box.needs_wrap else None
        try:
            return self._containment.box(self.run_id, limits)
        except OSError as e:
            raise SpawnError(f"cannot create the job's cgroup: {e.strerror or e}") from e

    def _on_limit_poll(self) -> None:
        """A limit the kernel enforces without telling the leader (an OOM kill in the job, a
        fork refused, the job's CPU time): end the job, naming it."""
        self._limit_handle = None
        if self._exit_fut.done() or self._end_request is not None:
            return
        hit = self.box.hit() if self.box is not None else None
        if hit is not None:
            self._limit_hit = EndReason(hit)
            self._request_end(EndReason(hit))
            return
        self._limit_handle = self._loop.call_later(_LIMIT_POLL, self._on_limit_poll)

    # ---- consumer API -------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[OutputBatch | RunEnd]:
        """Every batch in order, then the RunEnd. Only one consumer may iterate."""
        if self._consumed:
            raise RuntimeError("events() may be iterated only once")
        self._consumed = True
        batcher = self._batcher
        while True:
            while batcher.ready:
                batch = batcher.take()
                if batcher.may_resume:
                    self._reader.resume()
                yield batch
            if self._end is not None:
                yield self._end
                return
            self._wakeup.clear()
            await self._wakeup.wait()

    async def output(self) -> AsyncIterator[OutputBatch]:
        async for ev in self.events():
            if isinstance(ev, OutputBatch):
                yield ev

    async def wait(self) -> RunEnd:
        """The end of the run. Does not consume output: without a consumer, back-pressure
        holds the child once `max_buffer` bytes wait (use `collect()` to read everything)."""
        return await asyncio.shield(self._end_fut)

    async def collect(self) -> tuple[bytes, bytes, RunEnd]:
        """Read everything into memory: for small outputs and tests."""
        out, err = bytearray(), bytearray()
        end = None
        async for ev in self.events():
            if isinstance(ev, RunEnd):
                end = ev
            elif ev.stream == "stdout":
                out += ev.data
            else:
                err += ev.data
        assert end is not None
        return bytes(out), bytes(err), end

    @property
    def done(self) -> bool:
        return self._end is not None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    # ---- control ----------------------------------------------------------------------------

    def pause(self) -> bool:
        """SIGSTOP the group. Returns False when the run is not running or already paused."""
        if self.paused or self._exit_fut.done() or self._end_request is not None:
            return False
        tree._signal_all(self.pgid, (), signal.SIGSTOP)
        self.paused = True
        return True

    def resume(self) -> bool:
        if not self.paused or self._exit_fut.done():
            return False
        tree._signal_all(self.pgid, (), signal.SIGCONT)
        self.paused = False
        self._reader.active_at = time.monotonic()
        return True

    def cancel(self, reason: EndReason = EndReason.CANCELLED) -> bool:
        """Ask for the end: kill the tree. False when the run was already ending."""
        return self._request_end(reason)

    def shutdown(self) -> bool:
        return self._request_end(EndReason.SHUTDOWN)

    def _request_end(self, reason: EndReason) -> bool:
        if self._end_request is not None or self._exit_fut.done():
            return False
        self._end_request = reason
        self._kill_task = self._loop.create_task(self._ender.end_tree(with_leader=True))
        return True

    # ---- timers -----------------------------------------------------------------------------

    def _on_watchdog(self) -> None:
        """Check the timeout and the stall limit, then re-arm for the nearest deadline.

        A timer, not a task: arming and cancelling a TimerHandle costs far less than a task
        waiting on the exit, and every run pays it on its way to `process.completed`."""
        self._watchdog_handle = None
        if self._exit_fut.done() or self._end_request is not None:
            return
        spec = self.spec
        reader = self._reader
        stall = spec.stall_timeout if spec.capture else None
        now = time.monotonic()
        deadlines = []
        if spec.timeout is not None:
            if now - self._t0 >= spec.timeout:
                self._request_end(EndReason.TIMEOUT)
                return
            deadlines.append(self._t0 + spec.timeout)
        if stall is not None:
            if self.paused or self._batcher.held_back:
                reader.active_at = now
            elif now - reader.active_at >= stall:
                self._request_end(EndReason.STALLED)
                return
            deadlines.append(reader.active_at + stall)
        delay = max(0.005, min(deadlines) - now) if deadlines else 1.0
        if stall is not None:
            delay = min(delay, max(0.05, stall / 4))
        self._watchdog_handle = self._loop.call_later(delay, self._on_watchdog)

    # ---- the one end --------------------------------------------------------------------------

    async def _lifecycle(self) -> None:
        try:
            await self._exit_fut
            if self._kill_task is not None:
                await self._kill_task
            elif self._ender.leftovers():
                # The leader is gone but left work in its group: end it, it is an orphan now.
                await self._ender.end_tree(with_leader=False)
            if self._stdin is not None:
                self._stdin.close()
            await self._drain()
            if tree.is_subreaper():
                await self._ender.sweep_adopted()
        finally:
            self._finish(self._proc.returncode if self._proc else -1)

    async def _drain(self) -> None:
        """Read what is left of the output once the leader is gone and its group ended.

        Pipes are read past `max_buffer`, but by `_DRAIN_ALLOWANCE` at most: that covers what
        dead writers left in the pipes. A writer that escaped the group (a `setsid` grandchild)
        and still writes overflows it, or keeps the pipe open past `kill_grace`; it is found by
        its marker and ended, then the rest is read the same bounded way. Memory stays bounded
        even while such a writer floods.

        Capture files have no end-of-file while anybody writes, so escaped writers are ended
        first, then the files are read to their end at the consumer's pace (the backlog waits on
        disk, not in memory)."""
        reader = self._reader
        if not reader.streams or (reader.eof.is_set() and not reader.tails_files):
            return  # nothing, or every pipe to its end, was read already (most runs by now)
        if reader.tails_files:
            if self._ender.box is None or self._ender.box.v2 is None:
                await self._ender.end_marked()  # in a v2 cgroup, nothing escaped the kill
            await reader.read_files_to_end()
            return
        if await reader.read_to_eof(self.spec.kill_grace):
            return
        # Someone outside the group holds a pipe: find it by marker and end it.
        if await self._ender.end_marked() and await reader.read_to_eof(1.0):
            return
        self._leftover_pipe = True
        reader.abandon()

    def _finish(self, rc: int | None) -> None:
        if self._end is not None:
            return
        if self._limit_handle is not None:
            self._limit_handle.cancel()
            self._limit_handle = None
        if self.box is not None:
            if self._limit_hit is None and self._end_request is None:
                hit = self.box.hit()  # an OOM kill may have taken the leader itself
                self._limit_hit = EndReason(hit) if hit else None
            # A slot goes back for the next job (one read, here); anything else is removed off
            # the loop: an rmdir waits for the kernel to retire the cgroup (~0.3 ms here),
            # which the job's completion need not wait for.
            if not self.box.recycle():
                self._loop.run_in_executor(None, self.box.remove)
        if self._watchdog_handle is not None:
            self._watchdog_handle.cancel()
            self._watchdog_handle = None
        self._reader.close()
        for f in (self._proc.stdout, self._proc.stderr) if self._proc else ():
            if f is not None:
                f.close()
        if self._exit_watch is not None:
            self._exit_watch.close()
        self._end = self._make_end(-1 if rc is None else rc)
        for t in self._tasks:
            if t is not asyncio.current_task() and not t.done():
                t.cancel()
        self._end_fut.set_result(self._end)
        self._wakeup.set()
        if self._registry is not None:
            # Queued behind the consumer's wake-up, off the path to its completion message: the
            # record only matters if we die with the process running, and it is not running.
            self._loop.call_soon(self._registry.remove, self.run_id)

    def _make_end(self, rc: int) -> RunEnd:
        limits = self.spec.limits
        if self._end_request is not None:
            reason = self._end_request
        elif self._limit_hit is not None:
            reason = self._limit_hit
        elif rc == -signal.SIGXCPU and limits is not None and limits.cpu_seconds is not None:
            reason = EndReason.CPU_LIMIT
        elif rc < 0:
            reason = EndReason.SIGNALLED
        else:
            reason = EndReason.EXITED
        by_name = self._reader.totals()
        return RunEnd(
            reason=reason,
            exit_code=rc,
            signal=-rc if rc < 0 else None,
            duration=time.monotonic() - self._t0,
            stdout_bytes=by_name.get("stdout", 0),
            stderr_bytes=by_name.get("stderr", 0),
            batches=self._batcher.batches_made,
            killed=self._ender.killed,
            leftover_pipe=self._leftover_pipe,
        )
