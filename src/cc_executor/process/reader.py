"""Reading the child's output into the batcher: the I/O half of the output path.

Pipes are read with `loop.add_reader` on the raw, non-blocking descriptors (never
`connect_read_pipe`, which double-closes descriptors under uvloop: MagicStack/uvloop#763); capture
files are tailed with `pread`. What is read goes to the `OutputBatcher`, which says when to stop
reading (back-pressure) and when the drain has read more than dead writers can have left. Here
live the descriptors, the flush timer and the waits; the arithmetic lives in the batcher.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from collections.abc import Callable

from .batcher import CutMode, OutputBatcher
from .spec import Stream

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


class _Source:
    """One output descriptor of the child (a pipe or a capture file) and how far it was read."""

    __slots__ = ("name", "fd", "is_file", "total", "eof", "reading", "read_size", "_batcher")

    def __init__(self, name: Stream, fd: int, batcher: OutputBatcher, is_file: bool = False):
        self.name = name
        self.fd = fd
        self.is_file = is_file
        self.total = 0
        """Bytes read so far; for a capture file, also where the next pread starts."""
        self.eof = False
        self.reading = False
        self.read_size = _FIRST_READ_SIZE
        self._batcher = batcher

    @property
    def pending(self) -> int:
        """Bytes read and not yet cut into a batch."""
        return self._batcher.pending(self.name)


class OutputReader:
    """Moves the child's stdout and stderr into the batcher, at the pace back-pressure allows."""

    def __init__(self, loop: asyncio.AbstractEventLoop, batcher: OutputBatcher,
                 batch_interval: float, wakeup: asyncio.Event):
        self.streams: list[_Source] = []
        self.active_at = 0.0
        """When output last arrived or reading resumed: the stall clock's start."""
        self.writers_done = False
        """The writers are gone: an empty read of a capture file is its end."""
        self.eof = asyncio.Event()
        """Every stream has ended."""
        self.drain_overflow = asyncio.Event()
        self._loop = loop
        self._batcher = batcher
        self._interval = batch_interval
        self._wakeup = wakeup  # set when batches are ready for the consumer
        self._flush_handle: asyncio.TimerHandle | None = None
        self.output_limit: int | None = None
        """Bytes (stdout and stderr together) the run may write; past it, `on_limit`."""
        self.on_limit: Callable[[], None] | None = None
        self.limited = False

    @property
    def tails_files(self) -> bool:
        return bool(self.streams) and self.streams[0].is_file

    def read_pipes(self, fds: tuple[int, int]) -> None:
        for name, fd in zip(("stdout", "stderr"), fds):
            os.set_blocking(fd, False)
            st = _Source(name, fd, self._batcher)  # type: ignore[arg-type]
            self.streams.append(st)
            self._start_reading(st)

    def tail_files(self, fds: tuple[int, int]) -> asyncio.Task:
        """Take over the capture files (closed by `close`); returns the polling task."""
        for name, fd in zip(("stdout", "stderr"), fds):
            st = _Source(name, fd, self._batcher, is_file=True)  # type: ignore[arg-type]
            st.reading = True
            self.streams.append(st)
        return self._loop.create_task(self._poll_files())

    def totals(self) -> dict[str, int]:
        return {s.name: s.total for s in self.streams}

    # ---- reading on and off -------------------------------------------------------------------

    def _start_reading(self, st: _Source) -> None:
        if not st.eof and not st.reading:
            if not st.is_file:
                self._loop.add_reader(st.fd, self._on_readable, st)
            st.reading = True

    def _stop_reading(self, st: _Source) -> None:
        if st.reading:
            if not st.is_file:
                self._loop.remove_reader(st.fd)
            st.reading = False

    def _hold_back(self) -> None:
        for st in self.streams:
            self._stop_reading(st)

    def resume(self) -> None:
        """The consumer took enough (`OutputBatcher.may_resume`): read again."""
        self._batcher.resume()
        # Time spent held back is the consumer's, not a stall of the child.
        self.active_at = time.monotonic()
        for st in self.streams:
            self._start_reading(st)

    # ---- reading ------------------------------------------------------------------------------

    async def _poll_files(self) -> None:
        """Tail the capture files: every batch_interval while they grow, backing off to 50 ms
        when quiet. Once the writers are gone (`writers_done`), an empty read is the end."""
        delay = self._interval
        while True:
            got = self.poll_once()
            if all(st.eof for st in self.streams):
                return
            if got:
                delay = self._interval
                await asyncio.sleep(0 if self.writers_done else delay)
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)

    def poll_once(self) -> bool:
        got = False
        for st in self.streams:
            if st.eof or not st.reading:
                continue
            try:
                data = os.pread(st.fd, _READ_SIZE, st.total)
            except OSError:
                data = b""
            if data:
                self._ingest(st, data)
                got = True
            elif self.writers_done:
                self._stream_ended(st)
        return got

    def _on_readable(self, st: _Source) -> None:
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

    def _ingest(self, st: _Source, data: bytes) -> None:
        if self.output_limit is not None:
            room = self.output_limit - sum(s.total for s in self.streams)
            if len(data) > room:
                self._cut_at_limit(st, data[:max(room, 0)])
                return
        self.active_at = time.monotonic()
        st.total += len(data)
        batcher = self._batcher
        hold = batcher.ingest(st.name, data)
        if batcher.ready:
            self._wakeup.set()
        if self._flush_handle is None and batcher.pending(st.name):
            self._flush_handle = self._loop.call_later(self._interval, self._on_flush)
        if hold:
            if batcher.drain_overflowed:
                self.drain_overflow.set()
            self._hold_back()

    def _cut_at_limit(self, st: _Source, head: bytes) -> None:
        """The run wrote past its output limit: keep exactly the bytes up to it (all of them go
        out, in order), end every stream here and tell the run, which ends the job."""
        if head:
            st.total += len(head)
            self._batcher.ingest(st.name, head)
        self.limited = True
        for s in self.streams:
            self._stop_reading(s)
            s.eof = True
            self._cut(s, "final")
        self.eof.set()
        self._wakeup.set()
        if self.on_limit is not None:
            self.on_limit()

    def _on_flush(self) -> None:
        self._flush_handle = None
        left = self._batcher.flush()
        if self._batcher.ready:
            self._wakeup.set()
        if left:
            # Only an incomplete UTF-8 tail is left: look again after the next interval.
            self._flush_handle = self._loop.call_later(self._interval, self._on_flush)

    def _cut(self, st: _Source, mode: CutMode) -> None:
        self._batcher.cut(st.name, mode)
        if self._batcher.ready:
            self._wakeup.set()

    def _stream_ended(self, st: _Source) -> None:
        self._stop_reading(st)
        st.eof = True
        self._cut(st, "final")
        if all(s.eof for s in self.streams):
            self.eof.set()

    # ---- the drain ----------------------------------------------------------------------------

    async def read_to_eof(self, limit: float) -> bool:
        """Read the pipes to their end: `_DRAIN_ALLOWANCE` more bytes at most, past
        back-pressure if need be. False when the end did not come within `limit` s, or when
        more than that came (a live writer: found out at once, whatever the consumer's pace)."""
        self._batcher.start_drain(_DRAIN_ALLOWANCE)
        self.drain_overflow.clear()
        for st in self.streams:
            self._start_reading(st)
        if self.eof.is_set():
            return True
        eof = asyncio.ensure_future(self.eof.wait())
        overflow = asyncio.ensure_future(self.drain_overflow.wait())
        try:
            await asyncio.wait((eof, overflow), timeout=limit,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            eof.cancel()
            overflow.cancel()
        return self.eof.is_set()

    async def read_files_to_end(self) -> None:
        """The writers are gone: read the capture files to their end, at the consumer's pace
        (the backlog waits on disk, not in memory)."""
        self.writers_done = True
        while self.poll_once():  # stops at the end, or when back-pressure holds reading
            pass
        await self.eof.wait()

    def abandon(self) -> None:
        """Give up on pipes somebody out of reach keeps open: what was read goes out, as is."""
        for st in self.streams:
            if not st.eof:
                self._stop_reading(st)
                st.eof = True
                self._cut(st, "final")

    def close(self) -> None:
        """Stop reading, cut what is left, close the capture files (pipes belong to the Popen)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        for st in self.streams:
            self._stop_reading(st)
            if st.pending:
                self._cut(st, "final")
        for st in self.streams:
            if st.is_file and st.fd >= 0:
                os.close(st.fd)
                st.fd = -1
