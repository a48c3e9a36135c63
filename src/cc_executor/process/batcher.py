"""Output batching without I/O: bytes in, `OutputBatch`es out, and the back-pressure arithmetic.

Sans-I/O, in the manner of python-websockets' protocol objects: the runner feeds in what it read
(`ingest`), asks for cuts on its timer and at a stream's end (`flush`, `cut`), hands the ready
batches to its consumer (`take`), and acts on the answers (stop reading, read again). No file
descriptor, no event loop, no clock: every rule here can be tested with plain bytes, and the
runner is left with reading, timers and the process's lifecycle.

The rules:

* A batch holds at most `batch_bytes`. A cut never ends inside a UTF-8 character that may still
  be completed (`utf8_cut`): such a tail waits for its next bytes. Invalid bytes pass as they are:
  batches are `bytes`, nothing is lost or altered.
* Every batch carries its stream, a run-wide sequence number (0, 1, 2... across both streams) and
  its byte offset within its stream.
* `queued` counts bytes ingested and not yet taken by the consumer, cut or not. Past the limit
  (`max_buffer`) reading must stop (`held_back`); it may start again once the consumer has brought
  `queued` down to half of `max_buffer`. Memory is thus bounded by `max_buffer` plus one read.
* The final drain (`start_drain`) may read past `max_buffer`, by its allowance at most: more than
  that comes from a live writer (`drain_overflowed`), which the runner must find and end.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

from .spec import OutputBatch, Stream

CutMode = Literal["full", "flush", "final"]


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


class _Lane:
    """One stream's bytes not yet cut, and the offset its next batch starts at."""

    __slots__ = ("stream", "pending", "offset")

    def __init__(self, stream: Stream):
        self.stream = stream
        self.pending = bytearray()
        self.offset = 0


class OutputBatcher:
    """Both streams of one run: pending bytes, ready batches, and whether to read on."""

    __slots__ = ("batch_bytes", "max_buffer", "ready", "queued", "held_back", "drain_overflowed",
                 "_limit", "_drain_budget", "_lanes", "_seq")

    def __init__(self, batch_bytes: int, max_buffer: int):
        self.batch_bytes = batch_bytes
        self.max_buffer = max_buffer
        self.ready: deque[OutputBatch] = deque()
        """Batches cut and not yet taken, oldest first."""
        self.queued = 0
        """Bytes ingested and not yet taken (pending or ready): what back-pressure bounds."""
        self.held_back = False
        """Reading must stay stopped until `may_resume` (or a drain starts)."""
        self.drain_overflowed = False
        """The drain read more than its allowance: a writer is alive."""
        self._limit = max_buffer
        # While draining: bytes dead writers may still have left behind. None when not draining.
        self._drain_budget: int | None = None
        self._lanes = {"stdout": _Lane("stdout"), "stderr": _Lane("stderr")}
        self._seq = 0

    # ---- reading side -------------------------------------------------------------------------

    def ingest(self, stream: Stream, data: bytes) -> bool:
        """Take bytes read from `stream`, cutting whole batches. Returns True when reading must
        stop now (the backlog passed its limit, or the drain its allowance); then `held_back`."""
        lane = self._lanes[stream]
        pending = lane.pending
        pending += data
        n = len(data)
        self.queued += n
        if len(pending) >= self.batch_bytes:
            self._cut(lane, "full")
        if self._drain_budget is not None:
            self._drain_budget -= n
            if self._drain_budget < 0:  # more than dead writers can have left: one is alive
                self.drain_overflowed = True
                self.held_back = True
                return True
        if self.queued > self._limit:
            self.held_back = True
            return True
        return False

    def cut(self, stream: Stream, mode: CutMode) -> None:
        """Move batches from `stream`'s pending bytes to `ready`.

        full: only whole `batch_bytes` batches; flush: all but an incomplete UTF-8 tail;
        final: everything (the stream ended, so an incomplete tail is just invalid bytes).
        """
        self._cut(self._lanes[stream], mode)

    def flush(self) -> bool:
        """Cut what both streams hold (a slow producer's timer ran out). Returns whether bytes
        are still pending: only incomplete UTF-8 tails, worth another look later."""
        left = False
        for lane in self._lanes.values():
            if lane.pending:
                self._cut(lane, "flush")
                left = left or bool(lane.pending)
        return left

    def pending(self, stream: Stream) -> int:
        """Bytes of `stream` ingested but not yet cut."""
        return len(self._lanes[stream].pending)

    def start_drain(self, allowance: int) -> None:
        """The writers should be dead: read on past `max_buffer`, by `allowance` bytes at most."""
        self._drain_budget = allowance
        self._limit = max(self.max_buffer, self.queued + allowance)
        self.drain_overflowed = False
        self.held_back = False

    # ---- consumer side ------------------------------------------------------------------------

    def take(self) -> OutputBatch:
        """The oldest ready batch, now the consumer's: its bytes no longer count as queued."""
        batch = self.ready.popleft()
        self.queued -= len(batch.data)
        return batch

    @property
    def may_resume(self) -> bool:
        """Held back, and the consumer has taken enough: down to half of `max_buffer`."""
        return self.held_back and self.queued <= self.max_buffer // 2

    def resume(self) -> None:
        self.held_back = False

    @property
    def batches_made(self) -> int:
        return self._seq

    # ---- the cut ------------------------------------------------------------------------------

    def _cut(self, lane: _Lane, mode: CutMode) -> None:
        size = self.batch_bytes
        pending = lane.pending
        ready = self.ready
        while pending:
            n = min(len(pending), size)
            if mode == "full" and n < size:
                break
            if mode != "final" or n < len(pending):
                whole = utf8_cut(pending, n)
                if whole > 0:
                    n = whole
                elif n < size:  # only an unfinished character, which may yet complete: wait
                    break
                # else: a batch smaller than the character (batch_bytes < 4): split it, as bytes
            if n <= 0:
                break
            data = bytes(pending[:n])
            del pending[:n]
            ready.append(OutputBatch(lane.stream, self._seq, lane.offset, data))
            self._seq += 1
            lane.offset += n
