"""The connection's reply queue (`cc_executor.outbox`), without sockets: order, and the inline
path a first reply takes when nothing can be in front of it."""

from __future__ import annotations

import asyncio

import pytest

from cc_executor.outbox import Outbox

pytestmark = pytest.mark.anyio


async def test_inline_runs_at_once_when_idle_and_queues_behind_anything_pending():
    box = Outbox()
    done: list[str] = []
    gate = asyncio.Event()

    async def record(name: str, wait: asyncio.Event | None = None) -> None:
        if wait is not None:
            await wait.wait()
        done.append(name)

    await box.put(lambda: record("first"), inline=True)
    assert done == ["first"]  # ran in the caller, before put returned
    await box.put(lambda: record("slow", gate))  # queued: the task will run it
    await box.put(lambda: record("after"), inline=True)  # must not overtake "slow"
    assert done == ["first"]
    gate.set()
    await box.close(timeout=5.0)
    assert done == ["first", "slow", "after"]


async def test_a_failing_inline_entry_does_not_stop_the_next():
    box = Outbox()
    done: list[str] = []

    async def boom() -> None:
        raise RuntimeError("a bug of ours")

    async def ok() -> None:
        done.append("ok")

    await box.put(boom, inline=True)
    await box.put(ok, inline=True)
    await box.close(timeout=5.0)
    assert done == ["ok"]
