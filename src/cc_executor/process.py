"""The process runner: start a command, stream its output in batches, control it, end it once.

This module knows nothing of WebSockets; the service, the harness and `safe_run` all use it.

How it works, and why:

* `subprocess.Popen` with `start_new_session=True` (own session and process group), stdin
  /dev/null unless input is given, then `os.pidfd_open` watched by the event loop for the exit.
  That is ~10x cheaper than asyncio's subprocess transport with a child watcher, and it never
  reaps anybody else's children.
* stdout and stderr are read with `loop.add_reader` on the raw, non-blocking pipe descriptors
  (never `connect_read_pipe`, which double-closes descriptors under uvloop: MagicStack/uvloop#763).
  There is no line splitting anywhere, so no line is ever too long.
* Output is cut into batches of at most `batch_bytes`, flushed after `batch_interval` when a
  producer is slow, and at once when a stream ends. A cut never splits a UTF-8 character (an
  incomplete tail waits for its next bytes; invalid bytes are passed through as they are: batches
  are `bytes`, so nothing is lost). Every batch carries its stream, a run-wide sequence number and
  its byte offset within its stream.
* Back-pressure: when more than `max_buffer` bytes wait for the consumer, the runner stops reading
  the pipes; the child then blocks in `write()` once the pipe is full. Reading resumes when the
  consumer has taken half of it. Memory is therefore bounded by `max_buffer` plus one read (plus
  what dead writers left in the pipes, during the final drain). Time spent held back this way, or
  paused, does not count as a stall.
* Exactly one `RunEnd` per run, after every batch. Ending kills the whole tree (see `tree`):
  SIGTERM to the group and to escaped descendants, `kill_grace`, SIGKILL, then reap. When the
  leader exits by itself, anything it left in its group is ended the same way.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import fcntl
import os
import shlex
import signal
import subprocess
import tempfile
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from . import tree
from .registry import Registry

Stream = Literal["stdout", "stderr"]

_READ_SIZE = 1 << 20
# A pipe starts with small reads and the kernel's default size; the first read that fills the
# small buffer switches it to big reads and a big pipe. Short jobs (most of them) then never pay
# for a 1 MiB buffer per read or for resizing the pipe; a flood gets both at once.
_FIRST_READ_SIZE = 1 << 16
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_PIPE_SIZE = 1 << 20
# What dead writers can have left behind once the leader is gone: both pipes full, plus a read in
# flight. The final drain may read that much past `max_buffer`, and no more: anything beyond it
# comes from a live writer that escaped the group, which is then found and ended first.
_DRAIN_ALLOWANCE = 2 * _PIPE_SIZE + _READ_SIZE
_MARKER_KEY = os.fsencode(tree.MARKER_VAR)


class EndReason(str, enum.Enum):
    EXITED = "exited"
    SIGNALLED = "signalled"
    TIMEOUT = "timeout"
    STALLED = "stalled"
    CANCELLED = "cancelled"
    SHUTDOWN = "shutdown"


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
    kill_grace: float = 3.0
    capture: bool = True
    """False: the child writes straight to our stdout/stderr (no batches, no stall detection)."""
    capture_to: Literal["pipe", "file"] = "pipe"
    """"file": stdout/stderr go to unlinked temp files that the runner tails with pread. For
    programs that lose output written to a pipe when they exit (Claude Code CLI 2.1.x drops what
    it has not flushed): a regular file is always complete. The file is also the buffer, so a slow
    consumer never blocks the child; memory stays bounded by `max_buffer` all the same."""
    inherit_stdin: bool = False
    """True: the child reads our stdin (a terminal for `safe_run`); default is /dev/null."""
    batch_bytes: int = 64 * 1024
    batch_interval: float = 0.010
    max_buffer: int = 4 * 1024 * 1024
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])

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
    re-encodes every variable (`dict(os.environ)` does both)."""
    return dict(os.environb)


def build_env(spec: RunSpec, marker: str) -> dict[bytes, bytes]:
    env = _server_env() if spec.inherit_env else {}
    for key, value in (spec.env or {}).items():
        if value is None:
            env.pop(os.fsencode(key), None)
        else:
            env[os.fsencode(key)] = os.fsencode(value)
    # A CLI started from inside a Claude Code session refuses to run nested.
    env.pop(b"CLAUDECODE", None)
    env[_MARKER_KEY] = os.fsencode(marker)
    return env


def utf8_cut(buf: bytes | bytearray, n: int) -> int:
    """Largest cut <= n that does not end inside a (well-formed-looking) UTF-8 sequence."""
    if n >= len(buf):
        n = len(buf)
    for back in range(1, 4):
        i = n - back
        if i < 0:
            break
        c = buf[i]
        if c & 0xC0 == 0x80:
            continue
        if 0xC2 <= c <= 0xF4:  # a byte that can start a character; others never will: pass
            need = 2 if c < 0xE0 else 3 if c < 0xF0 else 4
            if back < need:
                return i
        break
    return n


_devnull_fd = -1


def _devnull() -> int:
    """/dev/null opened once for every child's stdin (close-on-exec here; the child's dup2
    onto fd 0 clears that), instead of an open and a close per start."""
    global _devnull_fd
    if _devnull_fd < 0:
        _devnull_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    return _devnull_fd


def _capture_file() -> int:
    """An anonymous temp file (no name, gone when closed), opened read-write."""
    tmp = tempfile.gettempdir()
    try:
        return os.open(tmp, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except (AttributeError, OSError):
        fd, path = tempfile.mkstemp(prefix="cc_executor-")
        os.unlink(path)
        return fd


class _StreamState:
    __slots__ = ("name", "fd", "pending", "offset", "total", "eof", "reading", "is_file",
                 "read_size")

    def __init__(self, name: Stream, fd: int, is_file: bool = False):
        self.name = name
        self.fd = fd
        self.is_file = is_file
        self.pending = bytearray()
        self.offset = 0
        self.total = 0
        self.eof = False
        self.reading = False
        self.read_size = _FIRST_READ_SIZE


class Run:
    """One running command. Create with `start()`; consume with `events()` or `output()`."""

    def __init__(self, spec: RunSpec, registry: Registry | None = None):
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
        self._streams: list[_StreamState] = []
        self._batches: deque[OutputBatch] = deque()
        self._queued = 0
        self._seq = 0
        self._flush_handle: asyncio.TimerHandle | None = None
        self._wakeup = asyncio.Event()
        self._exit_fut: asyncio.Future[int] = self._loop.create_future()
        self._end_fut: asyncio.Future[RunEnd] = self._loop.create_future()
        self._end: RunEnd | None = None
        self._end_request: EndReason | None = None
        self._kill_task: asyncio.Task | None = None
        self._killed = 0
        self._held_back = False
        self._buffer_limit = spec.max_buffer
        # While draining (the leader is gone): bytes dead writers may still have left behind.
        # Reading more than that means a writer is alive; None when not draining.
        self._drain_budget: int | None = None
        self._drain_overflow = asyncio.Event()
        self._last_activity = 0.0
        self._eof_event = asyncio.Event()
        self._writers_done = False
        self._pidfd = -1
        self._watchdog_handle: asyncio.TimerHandle | None = None
        self._stdin_fd = -1
        self._stdin_data = memoryview(spec.input or b"")
        self._tasks: list[asyncio.Task] = []
        self._consumed = False

    # ---- start -----------------------------------------------------------------------------

    def _spawn(self) -> None:
        spec = self.spec
        env = build_env(spec, self.run_id)
        files: tuple[int, int] | None = None
        if spec.capture and spec.capture_to == "file":
            files = (_capture_file(), _capture_file())
            out, err = files
        else:
            out = err = subprocess.PIPE if spec.capture else None
        try:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE if spec.input is not None
                else None if spec.inherit_stdin else _devnull(),
                stdout=out,
                stderr=err,
                cwd=spec.cwd,
                env=env,
                start_new_session=True,
                close_fds=True,
                bufsize=0,
            )
        except OSError as e:
            for fd in files or ():
                os.close(fd)
            raise self._spawn_error(e) from e
        proc = self._proc
        self.pid = self.pgid = proc.pid
        self.started_at = time.time()
        self._t0 = time.monotonic()
        self._last_activity = self._t0
        if self._registry is not None:
            # Written on the next loop turn, so a caller's reply (e.g. the execute result) goes
            # out first; it still precedes any end of the run, which needs later loop turns.
            self._loop.call_soon(self._registry.add, self.run_id, self.pid, self.argv, spec.cwd,
                                 self.run_id)
        try:
            self._pidfd = os.pidfd_open(self.pid)
            self._loop.add_reader(self._pidfd, self._on_exit)
        except (AttributeError, OSError):
            self._pidfd = -1
            self._tasks.append(self._loop.create_task(self._wait_in_thread()))
        if files is not None:
            for name, fd in zip(("stdout", "stderr"), files):
                st = _StreamState(name, fd, is_file=True)  # type: ignore[arg-type]
                st.reading = True
                self._streams.append(st)
            self._tasks.append(self._loop.create_task(self._poll_files()))
        elif spec.capture:
            for name, f in (("stdout", proc.stdout), ("stderr", proc.stderr)):
                fd = f.fileno()
                os.set_blocking(fd, False)
                st = _StreamState(name, fd)  # type: ignore[arg-type]
                self._streams.append(st)
                self._start_reading(st)
        if spec.input is not None:
            self._stdin_fd = proc.stdin.fileno()
            os.set_blocking(self._stdin_fd, False)
            self._loop.add_writer(self._stdin_fd, self._on_writable)
        self._tasks.append(self._loop.create_task(self._lifecycle()))
        if spec.timeout is not None or (spec.stall_timeout is not None and spec.capture):
            self._on_watchdog()

    def _spawn_error(self, e: OSError) -> SpawnError:
        spec = self.spec
        if isinstance(e, FileNotFoundError):
            missing = spec.cwd if spec.cwd and not os.path.isdir(spec.cwd) else self.argv[0]
            what = "working directory" if missing == spec.cwd else "executable"
            return SpawnError(f"{what} not found: {missing}")
        if isinstance(e, PermissionError):
            return SpawnError(f"permission denied: {e.filename or self.argv[0]}")
        if isinstance(e, NotADirectoryError):
            return SpawnError(f"not a directory: {spec.cwd}")
        return SpawnError(f"cannot start {self.argv[0]}: {e.strerror or e}")

    async def _wait_in_thread(self) -> None:
        rc = await asyncio.to_thread(self._proc.wait)
        if not self._exit_fut.done():
            self._exit_fut.set_result(rc)

    def _on_exit(self) -> None:
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        rc = self._proc.wait()
        if not self._exit_fut.done():
            self._exit_fut.set_result(rc)

    # ---- stdin ------------------------------------------------------------------------------

    def _on_writable(self) -> None:
        try:
            n = os.write(self._stdin_fd, self._stdin_data[: 1 << 16])
            self._stdin_data = self._stdin_data[n:]
        except BlockingIOError:
            return
        except OSError:  # the child closed its stdin (EPIPE): it does not want the rest
            self._stdin_data = memoryview(b"")
        if not self._stdin_data:
            self._close_stdin()

    def _close_stdin(self) -> None:
        if self._stdin_fd >= 0:
            self._loop.remove_writer(self._stdin_fd)
            self._proc.stdin.close()
            self._stdin_fd = -1

    # ---- output -----------------------------------------------------------------------------

    def _start_reading(self, st: _StreamState) -> None:
        if not st.eof and not st.reading:
            if not st.is_file:
                self._loop.add_reader(st.fd, self._on_readable, st)
            st.reading = True

    def _stop_reading(self, st: _StreamState) -> None:
        if st.reading:
            if not st.is_file:
                self._loop.remove_reader(st.fd)
            st.reading = False

    async def _poll_files(self) -> None:
        """Tail the capture files: every batch_interval while they grow, backing off to 50 ms
        when quiet. Once the writers are gone (`_writers_done`), an empty read is the end."""
        delay = self.spec.batch_interval
        while True:
            got = self._poll_once()
            if all(st.eof for st in self._streams):
                return
            if got:
                delay = self.spec.batch_interval
                await asyncio.sleep(0 if self._writers_done else delay)
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)

    def _poll_once(self) -> bool:
        got = False
        for st in self._streams:
            if st.eof or not st.reading:
                continue
            try:
                data = os.pread(st.fd, _READ_SIZE, st.total)
            except OSError:
                data = b""
            if data:
                self._ingest(st, data)
                got = True
            elif self._writers_done:
                self._stream_ended(st)
        return got

    def _stream_ended(self, st: _StreamState) -> None:
        self._stop_reading(st)
        st.eof = True
        self._cut(st, "final")
        if all(s.eof for s in self._streams):
            self._eof_event.set()

    def _on_readable(self, st: _StreamState) -> None:
        try:
            data = os.read(st.fd, st.read_size)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._stream_ended(st)
            return
        if len(data) == st.read_size < _READ_SIZE:  # a fast writer: go big (see _FIRST_READ_SIZE)
            st.read_size = _READ_SIZE
            try:
                fcntl.fcntl(st.fd, _F_SETPIPE_SZ, _PIPE_SIZE)
            except OSError:
                pass
        self._ingest(st, data)

    def _ingest(self, st: _StreamState, data: bytes) -> None:
        self._last_activity = time.monotonic()
        st.pending += data
        st.total += len(data)
        self._queued += len(data)
        if len(st.pending) >= self.spec.batch_bytes:
            self._cut(st, "full")
        if st.pending and self._flush_handle is None:
            self._flush_handle = self._loop.call_later(self.spec.batch_interval, self._on_flush)
        if self._drain_budget is not None:
            self._drain_budget -= len(data)
            if self._drain_budget < 0:  # more than dead writers can have left: one is alive
                self._drain_overflow.set()
                self._hold_back()
                return
        if self._queued > self._buffer_limit:
            self._hold_back()

    def _on_flush(self) -> None:
        self._flush_handle = None
        for st in self._streams:
            if st.pending:
                self._cut(st, "flush")
        if any(st.pending for st in self._streams) and self._flush_handle is None:
            # Only an incomplete UTF-8 tail is left: look again after the next interval.
            self._flush_handle = self._loop.call_later(self.spec.batch_interval, self._on_flush)

    def _cut(self, st: _StreamState, mode: Literal["full", "flush", "final"]) -> None:
        """Move batches from pending to the queue.

        full: only whole `batch_bytes` batches; flush: all but an incomplete UTF-8 tail;
        final: everything (the stream ended, so an incomplete tail is just invalid bytes).
        """
        size = self.spec.batch_bytes
        pending = st.pending
        made = False
        while pending:
            n = min(len(pending), size)
            if mode == "full" and n < size:
                break
            if mode != "final" or n < len(pending):
                n = utf8_cut(pending, n)
            if n <= 0:
                break
            data = bytes(pending[:n])
            del pending[:n]
            self._batches.append(OutputBatch(st.name, self._seq, st.offset, data))
            self._seq += 1
            st.offset += n
            made = True
        if made:
            self._wakeup.set()

    def _hold_back(self) -> None:
        self._held_back = True
        for st in self._streams:
            self._stop_reading(st)

    def _consumer_took(self, n: int) -> None:
        self._queued -= n
        if self._held_back and self._queued <= self.spec.max_buffer // 2:
            self._held_back = False
            # Time spent held back is the consumer's, not a stall of the child.
            self._last_activity = time.monotonic()
            for st in self._streams:
                self._start_reading(st)

    # ---- consumer API -------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[OutputBatch | RunEnd]:
        """Every batch in order, then the RunEnd. Only one consumer may iterate."""
        if self._consumed:
            raise RuntimeError("events() may be iterated only once")
        self._consumed = True
        while True:
            while self._batches:
                batch = self._batches.popleft()
                self._consumer_took(len(batch.data))
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
        self._last_activity = time.monotonic()
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
        self._kill_task = self._loop.create_task(self._kill(with_leader=True))
        return True

    async def _kill(self, with_leader: bool) -> None:
        pids = tree.snapshot(self.pid if with_leader else None, self.pgid, self.run_id)
        if with_leader and self._proc.returncode is None:
            pids.add(self.pid)
        if not pids and not tree.group_alive(self.pgid):
            return
        self._killed += len(pids)
        await tree.kill_tree(pids, self.pgid, self.spec.kill_grace, keep=frozenset({self.pid}))

    # ---- timers -----------------------------------------------------------------------------

    def _on_watchdog(self) -> None:
        """Check the timeout and the stall limit, then re-arm for the nearest deadline.

        A timer, not a task: arming and cancelling a TimerHandle costs far less than a task
        waiting on the exit, and every run pays it on its way to `process.completed`."""
        self._watchdog_handle = None
        if self._exit_fut.done() or self._end_request is not None:
            return
        spec = self.spec
        stall = spec.stall_timeout if spec.capture else None
        now = time.monotonic()
        deadlines = []
        if spec.timeout is not None:
            if now - self._t0 >= spec.timeout:
                self._request_end(EndReason.TIMEOUT)
                return
            deadlines.append(self._t0 + spec.timeout)
        if stall is not None:
            if self.paused or self._held_back:
                self._last_activity = now
            elif now - self._last_activity >= stall:
                self._request_end(EndReason.STALLED)
                return
            deadlines.append(self._last_activity + stall)
        delay = max(0.005, min(deadlines) - now) if deadlines else 1.0
        if stall is not None:
            delay = min(delay, max(0.05, stall / 4))
        self._watchdog_handle = self._loop.call_later(delay, self._on_watchdog)

    # ---- the one end --------------------------------------------------------------------------

    async def _lifecycle(self) -> None:
        try:
            rc = await self._exit_fut
            if self._kill_task is not None:
                await self._kill_task
            elif tree.group_alive(self.pgid):
                # The leader is gone but left work in its group: end it, it is an orphan now.
                await self._kill(with_leader=False)
            self._close_stdin()
            await self._drain()
            if tree.is_subreaper():
                await self._sweep_adopted()
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
        if not self._streams:
            return
        if self._streams[0].is_file:
            await self._end_marked()
            self._writers_done = True
            while self._poll_once():  # stops at the end, or when back-pressure holds reading
                pass
            await self._eof_event.wait()
            return
        if await self._read_to_eof(self.spec.kill_grace):
            return
        # Someone outside the group holds a pipe: find it by marker and end it.
        if await self._end_marked() and await self._read_to_eof(1.0):
            return
        self._leftover_pipe = True
        for st in self._streams:
            if not st.eof:
                self._stop_reading(st)
                st.eof = True
                self._cut(st, "final")

    async def _read_to_eof(self, limit: float) -> bool:
        """Read the pipes to their end: `_DRAIN_ALLOWANCE` more bytes at most, past
        back-pressure if need be. False when the end did not come within `limit` s, or when
        more than that came (a live writer: found out at once, whatever the consumer's pace)."""
        self._drain_budget = _DRAIN_ALLOWANCE
        self._buffer_limit = max(self.spec.max_buffer, self._queued + _DRAIN_ALLOWANCE)
        self._drain_overflow.clear()
        self._held_back = False
        for st in self._streams:
            self._start_reading(st)
        if self._eof_event.is_set():
            return True
        eof = asyncio.ensure_future(self._eof_event.wait())
        overflow = asyncio.ensure_future(self._drain_overflow.wait())
        try:
            await asyncio.wait((eof, overflow), timeout=limit,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            eof.cancel()
            overflow.cancel()
        return self._eof_event.is_set()

    async def _end_marked(self) -> bool:
        """End the run's processes that left both its group and its parent chain (found by the
        marker in their environment). Returns whether there were any."""
        # A full /proc scan (environ of every process): in a thread, never on the loop.
        pids = await asyncio.to_thread(tree.marked, self.run_id)
        if pids:
            self._killed += len(pids)
            await tree.kill_tree(pids, None, self.spec.kill_grace)
        return bool(pids)

    async def _sweep_adopted(self) -> None:
        """As subreaper we inherit orphans: end the ones that belong to this run."""
        mine = tree.marked(self.run_id, tree.own_children())
        if mine:
            self._killed += len(mine)
            await tree.kill_tree(mine, None, self.spec.kill_grace)

    def _finish(self, rc: int | None) -> None:
        if self._end is not None:
            return
        if self._watchdog_handle is not None:
            self._watchdog_handle.cancel()
            self._watchdog_handle = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        for st in self._streams:
            self._stop_reading(st)
            if st.pending:
                self._cut(st, "final")
        for f in (self._proc.stdout, self._proc.stderr) if self._proc else ():
            if f is not None:
                f.close()
        for st in self._streams:
            if st.is_file and st.fd >= 0:
                os.close(st.fd)
                st.fd = -1
        if self._pidfd >= 0:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        rc = -1 if rc is None else rc
        if self._end_request is not None:
            reason = self._end_request
        elif rc < 0:
            reason = EndReason.SIGNALLED
        else:
            reason = EndReason.EXITED
        by_name = {s.name: s.total for s in self._streams}
        self._end = RunEnd(
            reason=reason,
            exit_code=rc,
            signal=-rc if rc < 0 else None,
            duration=time.monotonic() - self._t0,
            stdout_bytes=by_name.get("stdout", 0),
            stderr_bytes=by_name.get("stderr", 0),
            batches=self._seq,
            killed=self._killed,
            leftover_pipe=getattr(self, "_leftover_pipe", False),
        )
        for t in self._tasks:
            if t is not asyncio.current_task() and not t.done():
                t.cancel()
        self._end_fut.set_result(self._end)
        self._wakeup.set()
        if self._registry is not None:
            # Queued behind the consumer's wake-up, off the path to its completion message: the
            # record only matters if we die with the process running, and it is not running.
            self._loop.call_soon(self._registry.remove, self.run_id)


async def start(spec: RunSpec, registry: Registry | None = None) -> Run:
    """Start `spec` and return its `Run`. Raises SpawnError when it cannot start."""
    run = Run(spec, registry)
    run._spawn()
    if registry is not None:
        await asyncio.sleep(0)  # the registry record is written on the next loop turn
    return run


def split_command(command: str) -> list[str]:
    """shlex split with a clear error, for callers that take a command string."""
    try:
        argv = shlex.split(command)
    except ValueError as e:
        raise ValueError(f"cannot split command: {e}") from None
    if not argv:
        raise ValueError("command is empty")
    return argv


class ProcessRunner:
    """All runs of one owner (the service, a harness), with a shared registry and shutdown."""

    def __init__(self, run_dir: str | os.PathLike[str] | None = None, *, reap_stale: bool = True):
        self.registry = Registry(run_dir) if run_dir else None
        self.runs: dict[str, Run] = {}
        self.reaped: list[dict] = []
        if self.registry is not None and reap_stale:
            self.reaped = self.registry.reap_stale()

    async def start(self, spec: RunSpec) -> Run:
        run = self.start_nowait(spec)
        await asyncio.sleep(0)  # let the registry record be written before returning
        return run

    def start_nowait(self, spec: RunSpec) -> Run:
        """Spawn now (the spawn itself is synchronous); must be called with a running loop."""
        run = Run(spec, self.registry)
        run._spawn()
        self.runs[run.run_id] = run
        run._end_fut.add_done_callback(lambda _f, rid=run.run_id: self.runs.pop(rid, None))
        return run

    async def shutdown(self, timeout: float | None = None) -> None:
        """End every live run (reason shutdown) and wait for their ends."""
        runs = list(self.runs.values())
        for run in runs:
            run.shutdown()
        if runs:
            await asyncio.wait([asyncio.ensure_future(r.wait()) for r in runs], timeout=timeout)


__all__ = [
    "EndReason", "OutputBatch", "ProcessRunner", "Run", "RunEnd", "RunSpec", "SpawnError",
    "build_env", "split_command", "start", "utf8_cut",
]

_ = errno  # reserved for finer spawn errors
