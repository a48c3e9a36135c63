"""`wait_for` that never loses a cancellation.

On Python 3.11, `asyncio.wait_for` returns the result when a cancellation arrives in the same
loop turn as the awaited thing finishes (CPython gh-86296, fixed in 3.12 by reimplementing it on
`asyncio.timeout`). The cancel is then gone: a sampler loop cancelled by `stop()` samples on
forever, and `stop()`'s `await task` never returns. That hung the service's shutdown about once
in twenty stops taken right as a load sample finished. Every timed wait in this project goes
through here, so a `task.cancel()` always ends the task.

`asyncio.timeout` itself needs 3.11.3 or later to nest correctly inside a task that is already
being cancelled (CPython gh-102780); hence the project's `requires-python`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_for(aw: Awaitable[T], timeout: float | None) -> T:
    """Await `aw` for at most `timeout` seconds (None: no limit); TimeoutError after that.

    Unlike 3.11's `asyncio.wait_for`, the awaitable runs in the calling task (a coroutine is not
    wrapped in a task of its own), so a cancellation of the caller reaches it directly."""
    if timeout is None:
        return await aw
    async with asyncio.timeout(timeout):
        return await aw


__all__ = ["wait_for"]
