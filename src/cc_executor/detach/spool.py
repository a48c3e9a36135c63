"""`Spool`: one resumable job's output, kept for replay, in memory up to a limit, then on disk.

No sockets, no event loop, no clock: bytes in (`append`), records out (`after`), and the books
that say when the job must wait (`unsent`). The job's delivery (`relay`) and the job manager act
on those answers; every rule here is tested with plain bytes.

The rules:

* Records keep their `seq`, stream and stream offset, exactly as the runner cut them; nothing
  is ever altered or dropped before it was handed to a connection (`mark_sent`).
* Record data stays in memory while the spool's memory holds less than `memory_limit` bytes;
  past that it goes to one unlinked temporary file under `directory` (nothing to clean up if
  we die; the space is freed when the file is closed, or reset once no record uses it).
* Sent records are kept for a replay after a dropped connection (the client may not have read
  what the server wrote), `window` bytes of them at most, oldest dropped first.
* `unsent` counts bytes not yet handed to a connection: what the caller bounds (pausing the job
  when a detached job's spool is full, so output is held back, never truncated).
"""

from __future__ import annotations

import collections
import itertools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO


@dataclass(frozen=True, slots=True)
class Record:
    seq: int
    stream: str
    offset: int
    data: bytes


@dataclass(slots=True)
class _Slot:
    """Where one record's bytes are: `data` in memory, or `length` bytes at `pos` on disk."""

    seq: int
    stream: str
    offset: int
    length: int
    data: bytes | None
    pos: int = -1


class Spool:
    def __init__(self, memory_limit: int, window: int, directory: str | os.PathLike | None):
        self.memory_limit = memory_limit
        self.window = window
        self.directory = Path(directory) if directory is not None else None
        self._slots: collections.deque[_Slot] = collections.deque()
        self._file: BinaryIO | None = None
        self._file_end = 0
        self._on_disk = 0  # slots stored in the file
        self.memory = 0  # bytes held in memory
        self.disk = 0  # bytes of live records in the file
        self.sent_upto = -1  # highest seq handed to a connection
        self.unsent = 0  # bytes of records with seq > sent_upto
        self._sent_kept = 0  # bytes of records with seq <= sent_upto still kept
        self.next_seq = 0  # the seq the next record must carry
        self.closed = False

    # ---- in ------------------------------------------------------------------------------

    def append(self, seq: int, stream: str, offset: int, data: bytes) -> None:
        """Keep one batch. `seq` must be the next one: the runner numbers batches 0, 1, 2..."""
        if self.closed:
            return
        if seq != self.next_seq:
            raise ValueError(f"spool: seq {seq} out of order (expected {self.next_seq})")
        self.next_seq = seq + 1
        n = len(data)
        if self.memory + n <= self.memory_limit or self.directory is None:
            slot = _Slot(seq, stream, offset, n, bytes(data))
            self.memory += n
        else:
            f = self._open()
            f.seek(self._file_end)
            f.write(data)
            slot = _Slot(seq, stream, offset, n, None, self._file_end)
            self._file_end += n
            self._on_disk += 1
            self.disk += n
        self._slots.append(slot)
        self.unsent += n

    def _open(self) -> BinaryIO:
        if self._file is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._file = tempfile.TemporaryFile(dir=self.directory, prefix="spool-")
        return self._file

    # ---- out -----------------------------------------------------------------------------

    def after(self, seq: int, max_bytes: int) -> list[Record]:
        """The kept records with a seq above `seq`, in order, about `max_bytes` of them (at
        least one when there is one)."""
        out: list[Record] = []
        total = 0
        start = max(0, seq + 1 - self.first_seq)  # seqs are consecutive: index, not search
        for slot in itertools.islice(self._slots, start, None):
            if out and total + slot.length > max_bytes:
                break
            out.append(Record(slot.seq, slot.stream, slot.offset, self._read(slot)))
            total += slot.length
        return out

    def _read(self, slot: _Slot) -> bytes:
        if slot.data is not None:
            return slot.data
        self._file.seek(slot.pos)
        return self._file.read(slot.length)

    @property
    def first_seq(self) -> int:
        """The oldest seq still kept (`next_seq` when none is)."""
        return self._slots[0].seq if self._slots else self.next_seq

    def mark_sent(self, seq: int) -> None:
        """Records up to `seq` were handed to a connection: keep `window` bytes of them."""
        if seq > self.sent_upto:
            for slot in self._slots:
                if slot.seq > seq:
                    break
                if slot.seq > self.sent_upto:
                    self.unsent -= slot.length
                    self._sent_kept += slot.length
            self.sent_upto = seq
        self._trim()

    def rewind(self, seq: int) -> None:
        """A new connection holds output up to `seq` only: what follows counts as unsent
        again (it is replayed)."""
        seq = max(seq, self.first_seq - 1)
        if seq >= self.sent_upto:
            self.mark_sent(seq)
            return
        for slot in self._slots:
            if seq < slot.seq <= self.sent_upto:
                self.unsent += slot.length
                self._sent_kept -= slot.length
        self.sent_upto = seq

    def _trim(self) -> None:
        while self._slots and self._sent_kept > self.window:
            slot = self._slots[0]
            if slot.seq > self.sent_upto:
                break
            self._slots.popleft()
            self._sent_kept -= slot.length
            if slot.data is not None:
                self.memory -= slot.length
            else:
                self._on_disk -= 1
                self.disk -= slot.length
        if self._on_disk == 0 and self._file is not None and self._file_end:
            self._file.truncate(0)  # nothing on disk is used any more: give the space back
            self._file_end = 0

    def close(self) -> None:
        """Drop everything (the job was dropped)."""
        self.closed = True
        self._slots.clear()
        self.memory = self.disk = self.unsent = self._sent_kept = 0
        if self._file is not None:
            self._file.close()
            self._file = None
