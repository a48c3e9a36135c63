"""`aio.wait_for` keeps a cancellation that arrives as the awaited thing finishes.

On 3.11, `asyncio.wait_for` returns the result instead (CPython gh-86296); a sampler or probe
loop cancelled at that moment would then run on, and whoever awaits it would wait forever.
"""

from __future__ import annotations

import asyncio
import re
import sys

import pytest

from cc_executor import aio
from conftest import REPO

pytestmark = pytest.mark.anyio


async def _race(wait_for) -> object:
    """The awaited future gets its result and the waiting task its cancel in the same turn."""
    fut = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(wait_for(fut, 10))
    await asyncio.sleep(0)  # the task now waits
    fut.set_result("finished")
    task.cancel()
    try:
        return await task
    except asyncio.CancelledError:
        return "cancelled"


async def test_a_cancel_racing_the_result_is_kept():
    assert await _race(aio.wait_for) == "cancelled"


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12 fixed asyncio.wait_for")
async def test_the_standard_wait_for_loses_that_cancel_on_311():
    """Why aio exists: this is the race the service's shutdown hung on."""
    assert await _race(asyncio.wait_for) == "finished"


async def test_timeouts_and_results():
    assert await aio.wait_for(asyncio.sleep(0, "r"), 1) == "r"
    assert await aio.wait_for(asyncio.sleep(0, "r"), None) == "r"
    with pytest.raises(TimeoutError):
        await aio.wait_for(asyncio.sleep(5), 0.05)
    with pytest.raises(asyncio.TimeoutError):  # the same class since 3.11
        await aio.wait_for(asyncio.Event().wait(), 0)


def test_no_product_code_uses_asyncio_wait_for():
    used = [f"{p.relative_to(REPO)}:{n}"
            for root in ("src", "tests/stress")
            for p in sorted((REPO / root).rglob("*.py"))
            for n, line in enumerate(p.read_text().splitlines(), 1)
            if re.search(r"\basyncio\.wait_for\(", line)]
    assert used == [], "use cc_executor.aio.wait_for: " + ", ".join(used)
