"""Feeding `RunSpec.input` to the child without ever blocking the event loop."""

from __future__ import annotations

import asyncio
import os
from typing import BinaryIO


class StdinFeeder:
    """Writes the input as the pipe accepts it, then closes the pipe: the child sees its end."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pipe: BinaryIO, data: bytes):
        self._loop = loop
        self._pipe = pipe
        self._fd = pipe.fileno()
        self._data = memoryview(data)
        os.set_blocking(self._fd, False)
        loop.add_writer(self._fd, self._on_writable)

    def _on_writable(self) -> None:
        try:
            n = os.write(self._fd, self._data[: 1 << 16])
            self._data = self._data[n:]
        except BlockingIOError:
            return
        except OSError:  # the child closed its stdin (EPIPE): it does not want the rest
            self._data = memoryview(b"")
        if not self._data:
            self.close()

    def close(self) -> None:
        """Stop feeding (all written, or the leader is gone) and close our end."""
        if self._fd >= 0:
            self._loop.remove_writer(self._fd)
            self._pipe.close()
            self._fd = -1
