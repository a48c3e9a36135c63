"""The resumable job's output path without sockets: `detach.Spool` (plain bytes) and
`detach.Relay` (a real run, a list as the connection)."""

from __future__ import annotations

import asyncio
import json
import os

import pytest
from conftest import wait_until
from service_fixture import pid_state

from cc_executor import protocol
from cc_executor.detach import Relay, ResumeBook, Spool
from cc_executor.process import RunSpec, start

BLOBS = [bytes([i]) * 1000 + b"\xff\xfe\xc3" for i in range(40)]  # invalid UTF-8 on purpose


def filled(memory: int, window: int, tmp_path) -> Spool:
    spool = Spool(memory, window, tmp_path)
    offsets = {"stdout": 0, "stderr": 0}
    for seq, blob in enumerate(BLOBS):
        stream = "stdout" if seq % 3 else "stderr"
        spool.append(seq, stream, offsets[stream], blob)
        offsets[stream] += len(blob)
    return spool


def test_records_come_back_in_order_byte_exact_from_memory_and_from_the_file(tmp_path):
    spool = filled(memory=10_000, window=10**9, tmp_path=tmp_path)
    assert spool.memory <= 10_000 and spool.disk == sum(map(len, BLOBS)) - spool.memory
    assert spool.disk > 0
    assert os.listdir(tmp_path) == []  # the file is unlinked: nothing to clean up after a crash
    got = []
    seq = -1
    for _ in range(100):
        records = spool.after(seq, 5000)
        if not records:
            break
        got += records
        seq = records[-1].seq
    assert [r.seq for r in got] == list(range(len(BLOBS)))
    assert [r.data for r in got] == BLOBS
    assert spool.after(10, 1)[0].seq == 11  # at least one record, even past max_bytes


def test_out_of_order_seq_is_refused(tmp_path):
    spool = Spool(100, 100, tmp_path)
    spool.append(0, "stdout", 0, b"a")
    with pytest.raises(ValueError, match="out of order"):
        spool.append(2, "stdout", 1, b"b")


def test_sent_records_are_kept_up_to_the_window_and_unsent_ones_always(tmp_path):
    total = sum(map(len, BLOBS))
    spool = filled(memory=10_000, window=3000, tmp_path=tmp_path)
    assert spool.unsent == total and spool.first_seq == 0
    spool.mark_sent(19)
    assert spool.unsent == sum(map(len, BLOBS[20:]))
    kept_sent = sum(len(b) for b in BLOBS[spool.first_seq:20])
    assert kept_sent <= 3000 and spool.first_seq > 0  # the oldest sent ones were dropped
    spool.mark_sent(39)
    assert spool.unsent == 0 and spool.memory + spool.disk <= 3000
    # A new connection that holds less than was sent: what follows is unsent (replayed) again.
    spool.rewind(37)
    assert spool.unsent == len(BLOBS[38]) + len(BLOBS[39])
    assert [r.seq for r in spool.after(spool.sent_upto, 10**6)] == [38, 39]


def test_with_no_window_sent_records_go_at_once_and_the_file_is_reset(tmp_path):
    spool = filled(memory=1000, window=0, tmp_path=tmp_path)
    spool.mark_sent(39)
    assert (spool.memory, spool.disk, spool.unsent, spool.first_seq) == (0, 0, 0, 40)
    assert os.fstat(spool._file.fileno()).st_size == 0  # the disk space was given back


def test_close_frees_everything(tmp_path):
    spool = filled(memory=1000, window=10**9, tmp_path=tmp_path)
    spool.close()
    assert (spool.memory, spool.disk, spool.unsent) == (0, 0, 0)
    assert spool.after(-1, 10**6) == []


@pytest.mark.anyio
async def test_a_detached_relay_pauses_the_job_when_full_and_an_attach_resumes_it(tmp_path):
    run = await start(RunSpec(argv=["sleep", "30"]))
    try:
        relay = Relay("j1", Spool(2000, 0, tmp_path), spool_limit=5000, high_water=10**6)
        relay.detach()
        for seq, blob in enumerate(BLOBS[:5]):  # 5015 bytes: over the limit at the 5th
            if seq < 4:
                await relay.output("stdout", seq, seq * 1003, blob, run)
        assert not run.paused
        pump = asyncio.ensure_future(relay.output("stdout", 4, 4 * 1003, BLOBS[4], run))
        assert await asyncio.to_thread(wait_until, lambda: pid_state(run.pid) == "T", 5)
        assert run.paused and not pump.done()

        sent: list[str] = []

        async def sink(text: str) -> None:
            sent.append(text)

        relay.attach(sink, 1)  # the new connection holds seq 0 and 1
        await asyncio.wait_for(pump, 5)
        assert not run.paused and pid_state(run.pid) != "T"
        relay.finish(protocol.notify(protocol.CompletedParams(
            job_id="j1", reason="exited", exit_code=0, duration=1.0,
            stdout_bytes=5015, stderr_bytes=0)))
        await asyncio.to_thread(wait_until, lambda: relay.completion_sent, 5)
        frames = [json.loads(t) for t in sent]
        assert [f["params"].get("seq") for f in frames[:-1]] == [2, 3, 4]
        assert [protocol.output_bytes(f["params"]) for f in frames[:-1]] == BLOBS[2:5]
        assert frames[-1]["method"] == "process.completed"
    finally:
        run.cancel()
        await run.wait()


@pytest.mark.anyio
async def test_the_book_gives_a_job_only_for_its_own_token_and_expires_it_once():
    expired = []
    book = ResumeBook(expired.append)
    token = book.add("j1", "JOB", 0.05)
    other = book.add("j2", "OTHER", 60)
    assert token != other and len(token) >= 32
    assert book.find("j1", token) == "JOB"
    assert book.find("j1", other) is None and book.find("j1", None) is None
    assert book.find("j1", "") is None and book.find("nope", token) is None
    book.detached("j1")
    assert book.count_detached() == 1
    assert await asyncio.to_thread(wait_until, lambda: expired, 5) == ["JOB"]
    assert book.find("j1", token) is None and book.count_detached() == 0
    book.detached("j2")
    book.attached("j2")  # back in time: the clock stops
    assert book.count_detached() == 0 and book.close() == ["OTHER"]
