"""Capture to files (RunSpec.capture_to="file"): the mode used for the Claude CLI, which can exit
with output still unflushed to a pipe. Same guarantees as pipes: byte-exact, ordered batches,
one end after all output, bounded memory with a slow consumer, whole-tree endings."""

from __future__ import annotations

import asyncio
import hashlib
import sys

import pytest

from cc_executor import tree
from cc_executor.process import EndReason, OutputBatch, RunEnd, RunSpec, start

pytestmark = pytest.mark.anyio
MiB = 1 << 20

PRODUCER = r"""
import hashlib, os, sys
n, stream = int(sys.argv[1]), sys.argv[2]
out = sys.stdout.buffer if stream == "stdout" else sys.stderr.buffer
block = hashlib.sha256(b"seed").digest() * 2048  # 64 KiB of fixed bytes
left = n
while left:
    chunk = block[: min(left, len(block))]
    out.write(chunk)
    left -= len(chunk)
out.flush()
os._exit(0)  # no interpreter clean-up: the file must still have every byte
"""


def expected(n: int) -> tuple[int, str]:
    block = hashlib.sha256(b"seed").digest() * 2048
    h = hashlib.sha256()
    left = n
    while left:
        chunk = block[: min(left, len(block))]
        h.update(chunk)
        left -= len(chunk)
    return n, h.hexdigest()


async def consume(run, delay_first: int = 0, delay: float = 0.0):
    digests = {"stdout": hashlib.sha256(), "stderr": hashlib.sha256()}
    sizes = {"stdout": 0, "stderr": 0}
    offsets = {"stdout": 0, "stderr": 0}
    last_seq = -1
    end = None
    peak = 0
    n = 0
    async for ev in run.events():
        if isinstance(ev, OutputBatch):
            assert ev.seq > last_seq and ev.offset == offsets[ev.stream]
            last_seq = ev.seq
            offsets[ev.stream] += len(ev.data)
            digests[ev.stream].update(ev.data)
            sizes[ev.stream] += len(ev.data)
            peak = max(peak, run._queued)
            n += 1
            if n <= delay_first:
                await asyncio.sleep(delay)
        else:
            assert end is None
            end = ev
    assert isinstance(end, RunEnd)
    return sizes, {k: v.hexdigest() for k, v in digests.items()}, end, peak


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
async def test_file_capture_is_byte_exact(stream):
    run = await start(RunSpec(argv=[sys.executable, "-c", PRODUCER, str(48 * MiB), stream],
                              capture_to="file"))
    sizes, digests, end, _ = await consume(run)
    n, digest = expected(48 * MiB)
    assert (sizes[stream], digests[stream]) == (n, digest)
    assert end.reason is EndReason.EXITED and end.exit_code == 0
    assert getattr(end, f"{stream}_bytes") == n


async def test_file_capture_slow_consumer_keeps_memory_bounded():
    spec = RunSpec(argv=[sys.executable, "-c", PRODUCER, str(64 * MiB), "stdout"],
                   capture_to="file", max_buffer=2 * MiB)
    run = await start(spec)
    sizes, digests, end, peak = await consume(run, delay_first=40, delay=0.01)
    assert (sizes["stdout"], digests["stdout"]) == expected(64 * MiB)
    assert peak <= spec.max_buffer + MiB  # the backlog waited on disk, not in memory
    assert end.reason is EndReason.EXITED


async def test_file_capture_stall_keeps_partial_output_and_kills_tree():
    run = await start(RunSpec(shell="echo partial; sleep 30 & sleep 30", capture_to="file",
                              stall_timeout=0.5, kill_grace=1.0))
    pid = run.pid
    sizes, _, end, _ = await consume(run)
    assert end.reason is EndReason.STALLED
    assert sizes["stdout"] == len(b"partial\n")
    assert not tree.is_alive(pid) and not tree.group_members(pid)  # zombies run nothing


async def test_file_capture_leader_exit_ends_background_child():
    run = await start(RunSpec(shell="sleep 30 & echo $!", capture_to="file"))
    out, err, end = await run.collect()
    assert end.reason is EndReason.EXITED and end.killed == 1
    assert not tree.is_alive(int(out.split()[0]))


async def test_file_capture_timeout():
    run = await start(RunSpec(shell="echo a; exec sleep 30", capture_to="file", timeout=0.5))
    out, err, end = await run.collect()
    assert (out, end.reason, end.exit_code) == (b"a\n", EndReason.TIMEOUT, -15)
