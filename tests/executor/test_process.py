"""The process runner's output path: lossless bytes, batching rules, end reasons, stdin, env.

Every producer here is a real child process writing a deterministic pseudo-random stream; the test
computes what it must have written by itself and compares length and sha256, so a lost, duplicated,
reordered or altered byte anywhere in the path fails the test.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import random
import signal
import sys
import termios
import time

import psutil
import pytest

from cc_executor import tree
from cc_executor.process import (
    EndReason,
    OutputBatch,
    ProcessRunner,
    RunEnd,
    RunSpec,
    SpawnError,
    start,
    utf8_cut,
)

pytestmark = pytest.mark.anyio

PY = sys.executable
MiB = 1 << 20
BLOCK = 1 << 20

# Both event loops the runner meets: plain asyncio (tests, harness) and uvloop (uvicorn's default).
BOTH_LOOPS = pytest.mark.parametrize(
    "anyio_backend",
    [pytest.param("asyncio", id="asyncio"),
     pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop")],
)

# Writes `total` bytes to fd `fd`: 1 MiB pieces of one seeded random block, each rotated by a
# different amount, so every piece differs and a misplaced piece changes the digest.
# mode "letters" maps bytes to A-Z (a line with no newline inside) and ends with one newline.
PRODUCER = r"""
import os, random, sys
seed, total, fd, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
block = random.Random(seed).randbytes(1 << 20)
if mode == "letters":
    block = block.translate(bytes(65 + i % 26 for i in range(256)))
i = sent = 0
while sent < total:
    k = (i * 7919) % len(block)
    piece = memoryview((block[k:] + block[:k])[: min(len(block), total - sent)])
    while piece:
        piece = piece[os.write(fd, piece):]
    sent += min(len(block), total - sent)
    i += 1
if mode == "letters":
    os.write(fd, b"\n")
"""


def expected_stream(seed: int, total: int, mode: str = "raw") -> tuple[int, str]:
    """Length and sha256 of what PRODUCER writes, computed here independently."""
    block = random.Random(seed).randbytes(BLOCK)
    if mode == "letters":
        block = block.translate(bytes(65 + i % 26 for i in range(256)))
    h = hashlib.sha256()
    i = sent = 0
    while sent < total:
        k = (i * 7919) % BLOCK
        n = min(BLOCK, total - sent)
        h.update((block[k:] + block[:k])[:n])
        sent += n
        i += 1
    if mode == "letters":
        h.update(b"\n")
        sent += 1
    return sent, h.hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def producer(seed: int, total: int, fd: int = 1, mode: str = "raw") -> list[str]:
    return [PY, "-c", PRODUCER, str(seed), str(total), str(fd), mode]


def unread_in_pipe(fd: int) -> int:
    """Bytes waiting in a pipe (FIONREAD)."""
    buf = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return int.from_bytes(buf, sys.byteorder)


class Reader:
    """Consumes a run's events in a task and checks the stream invariants as they arrive.

    Checked for every batch: non-empty, at most batch_bytes, seq strictly increasing, offsets
    contiguous per stream. Checked at the end: exactly one RunEnd, nothing after it, and its byte
    and batch counts agree with what was delivered.
    """

    def __init__(self, run, *, keep: bool = True, pace=None, on_batch=None):
        self.run = run
        self.keep = keep
        self.pace = pace
        self.on_batch = on_batch
        self.data = {"stdout": bytearray(), "stderr": bytearray()}
        self.size = {"stdout": 0, "stderr": 0}
        self.sha = {"stdout": hashlib.sha256(), "stderr": hashlib.sha256()}
        self.batches: list[OutputBatch] = []
        self.count = 0
        self.end: RunEnd | None = None
        self.changed = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._consume())

    @property
    def out(self) -> bytes:
        return bytes(self.data["stdout"])

    @property
    def err(self) -> bytes:
        return bytes(self.data["stderr"])

    async def _consume(self) -> None:
        last_seq = -1
        ends = 0
        async for ev in self.run.events():
            assert self.end is None, f"event after the RunEnd: {ev!r}"
            if isinstance(ev, RunEnd):
                ends += 1
                self.end = ev
            else:
                assert isinstance(ev, OutputBatch)
                assert ev.seq > last_seq, f"seq {ev.seq} after {last_seq}"
                last_seq = ev.seq
                assert ev.offset == self.size[ev.stream], (
                    f"{ev.stream} offset {ev.offset}, expected {self.size[ev.stream]}")
                assert 0 < len(ev.data) <= self.run.spec.batch_bytes, len(ev.data)
                self.size[ev.stream] += len(ev.data)
                self.sha[ev.stream].update(ev.data)
                self.count += 1
                if self.keep:
                    self.data[ev.stream] += ev.data
                    self.batches.append(ev)
                if self.on_batch is not None:
                    self.on_batch(ev)
            self.changed.set()
            if self.pace is not None and self.end is None:
                await self.pace(self.count)
        assert ends == 1
        end = self.end
        assert end.stdout_bytes == self.size["stdout"], (end, self.size)
        assert end.stderr_bytes == self.size["stderr"], (end, self.size)
        assert end.batches == self.count
        assert self.run.done
        assert await self.run.wait() is end

    async def until(self, predicate, timeout: float, what: str) -> None:
        """Poll `predicate` after every event, up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.task.done():
                self.task.result()  # raise what went wrong in the consumer
                raise AssertionError(f"run ended before {what}: {self.end}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), min(left, 0.05))
            except asyncio.TimeoutError:
                pass

    async def finish(self, timeout: float = 30.0) -> RunEnd:
        await asyncio.wait_for(self.task, timeout)
        assert self.end is not None
        return self.end


async def run_all(spec: RunSpec, timeout: float = 30.0, **kw) -> Reader:
    reader = Reader(await start(spec), **kw)
    await reader.finish(timeout)
    return reader


def assert_gone(pids) -> None:
    """No pid in `pids` is running (zombies waiting for a parent run nothing and count as gone)."""
    for pid in pids:
        assert not tree.is_alive(pid), f"pid {pid} survived: {tree.stat_fields(pid)}"
        try:
            assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, f"pid {pid} survived"
        except psutil.NoSuchProcess:
            pass


# ---- byte-exact output ---------------------------------------------------------------------

@pytest.mark.slow
async def test_256_mib_on_stdout_byte_exact():
    total = 256 * MiB
    r = await run_all(RunSpec(argv=producer(11, total)), timeout=60, keep=False)
    assert (r.size["stdout"], r.sha["stdout"].hexdigest()) == expected_stream(11, total)
    assert r.size["stderr"] == 0
    assert r.end.reason is EndReason.EXITED and r.end.exit_code == 0
    # Full batches for almost everything: the runner does not emit a batch per read.
    assert r.count <= total // r.run.spec.batch_bytes + 4100


async def test_one_16_mib_line_arrives_whole():
    total = 16 * MiB
    r = await run_all(RunSpec(argv=producer(12, total, mode="letters")), keep=True)
    assert (r.size["stdout"], r.sha["stdout"].hexdigest()) == expected_stream(12, total, "letters")
    assert r.out.count(b"\n") == 1 and r.out.endswith(b"\n")
    assert r.end.exit_code == 0


async def test_64_mib_on_stderr_only():
    total = 64 * MiB
    r = await run_all(RunSpec(argv=producer(13, total, fd=2)), keep=False)
    assert (r.size["stderr"], r.sha["stderr"].hexdigest()) == expected_stream(13, total)
    assert r.size["stdout"] == 0
    assert r.end.stdout_bytes == 0 and r.end.exit_code == 0


INTERLEAVED = r"""
import os, random, sys
rng = random.Random(int(sys.argv[1]))
block = rng.randbytes(1 << 16)
for i in range(int(sys.argv[2])):
    n = rng.randint(1, 3000)
    k = rng.randrange(len(block) - n)
    data = memoryview(block[k:k + n])
    fd = 1 if rng.random() < 0.5 else 2
    while data:
        data = data[os.write(fd, data):]
"""


def expected_interleaved(seed: int, writes: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    block = rng.randbytes(1 << 16)
    out = {"stdout": bytearray(), "stderr": bytearray()}
    for _ in range(writes):
        n = rng.randint(1, 3000)
        k = rng.randrange(len(block) - n)
        data = block[k:k + n]
        out["stdout" if rng.random() < 0.5 else "stderr"] += data
    return {k: bytes(v) for k, v in out.items()}


@BOTH_LOOPS
async def test_10000_interleaved_writes_each_stream_complete_and_in_order():
    r = await run_all(RunSpec(argv=[PY, "-c", INTERLEAVED, "21", "10000"], batch_bytes=4096))
    want = expected_interleaved(21, 10000)
    assert r.out == want["stdout"]
    assert r.err == want["stderr"]
    streams = {b.stream for b in r.batches}
    assert streams == {"stdout", "stderr"}
    # seq is run-wide: strictly increasing (checked per batch) and without gaps.
    assert [b.seq for b in r.batches] == list(range(len(r.batches)))


async def test_invalid_utf8_bytes_delivered_exactly():
    payload = (bytes(range(256)) * 3 + b"\xc3(\xa0\xa1\xe2(\xa1\xf0\x90(\xbc\xed\xa0\x80"
               + b"\xf8\x88\x80\x80\x80\xc0\xaf\xff\xfe" + "ok é €".encode() + b"\xe2\x82")
    # Written in odd pieces with a pause after a lone invalid byte, then ending mid-sequence.
    script = ("import os,sys,time; p=bytes.fromhex(sys.argv[1]); i=p.index(b'\\xff')+1\n"
              "os.write(1,p[:i]); time.sleep(0.1); os.write(1,p[i:]); os.write(2,p)")
    r = await run_all(RunSpec(argv=[PY, "-c", script, payload.hex()], batch_bytes=97))
    assert r.out == payload
    assert r.err == payload


UTF8_HALVES = r"""
import os, sys, time
for text in sys.argv[1:]:
    b = text.encode()
    cut = int(text[0])                    # first char: how many bytes of the last char go first
    lead = len(b) - len(text[-1].encode())
    os.write(1, b[: lead + cut])
    time.sleep(0.12)                      # many batch_intervals: the runner flushes meanwhile
    os.write(1, b[lead + cut:])
"""


@BOTH_LOOPS
async def test_multibyte_char_written_in_halves_never_split():
    # Each item: "<bytes of the last char written before the pause><text><multi-byte char>".
    items = ["1xé", "1ab€", "2c€", "1d😀", "2e😀", "3f😀"]
    r = await run_all(RunSpec(argv=[PY, "-c", UTF8_HALVES, *items]))
    assert r.out == "".join(items).encode()
    for b in r.batches:
        b.data.decode("utf-8")  # strict: raises if a batch ends or starts inside a character
    # The complete part before each pause was flushed on its own, not held back with the half.
    assert len(r.batches) >= len(items)


@pytest.mark.parametrize("batch_bytes", [4096, 1000, 7])
async def test_batches_respect_batch_bytes_and_utf8_boundaries(batch_bytes):
    rng = random.Random(batch_bytes)
    text = "".join(rng.choice("aé€😀\n") for _ in range(200_000 if batch_bytes > 7 else 20_000))
    data = text.encode()
    script = ("import os,sys; d=open(sys.argv[1],'rb').read()\n"
              "for i in range(0, len(d), 4093): os.write(1, d[i:i+4093])")
    path = f"/tmp/cc_exec_utf8_{os.getpid()}_{batch_bytes}.txt"
    with open(path, "wb") as f:
        f.write(data)
    try:
        r = await run_all(RunSpec(argv=[PY, "-c", script, path], batch_bytes=batch_bytes))
    finally:
        os.unlink(path)
    assert r.out == data
    assert max(len(b.data) for b in r.batches) <= batch_bytes
    for b in r.batches:
        b.data.decode("utf-8")


def test_utf8_cut_rules():
    euro = "€".encode()
    assert utf8_cut(b"ab" + euro[:2], 4) == 2      # incomplete 3-byte char waits
    assert utf8_cut(b"ab" + euro, 5) == 5          # complete char goes
    assert utf8_cut(b"ab" + euro, 4) == 2          # a cut inside a char moves before it
    assert utf8_cut(b"\xf0\x9f\x98", 3) == 0       # only a tail: nothing to cut yet
    assert utf8_cut(b"a\xff", 2) == 2              # never-valid bytes are not held back
    assert utf8_cut(b"a\x80\x80\x80\x80", 5) == 5  # stray continuation bytes pass through


async def test_slow_producer_line_arrives_within_bounded_latency():
    # The producer stamps each line with CLOCK_MONOTONIC (system-wide), then pauses.
    script = ("import time\nfor i in range(5):\n"
              "    print(i, time.monotonic(), flush=True); time.sleep(0.15)")
    arrivals: list[tuple[float, bytes]] = []
    r = await run_all(RunSpec(argv=[PY, "-c", script]),
                      on_batch=lambda b: arrivals.append((time.monotonic(), b.data)))
    lines = r.out.decode().splitlines()
    assert [int(line.split()[0]) for line in lines] == list(range(5))
    for line in lines:
        stamp = float(line.split()[1])
        got = next(t for t, data in arrivals if line.encode() in data)
        assert got - stamp < 1.0, f"line {line!r} took {got - stamp:.3f}s"
    # One line per pause: each was flushed by the interval, not held for the next.
    assert len(arrivals) >= 5


# ---- end reasons -----------------------------------------------------------------------------

@pytest.mark.parametrize("code", [0, 3])
async def test_exited_with_code_and_output(code):
    r = await run_all(RunSpec(shell=f"echo out; echo err >&2; exit {code}"))
    assert (r.out, r.err) == (b"out\n", b"err\n")
    assert r.end.reason is EndReason.EXITED
    assert r.end.exit_code == code and r.end.signal is None and r.end.killed == 0


async def test_signalled_when_child_kills_itself():
    script = "import os,signal; print('partial', flush=True); os.kill(os.getpid(), signal.SIGKILL)"
    r = await run_all(RunSpec(argv=[PY, "-c", script]))
    assert r.out == b"partial\n"
    assert r.end.reason is EndReason.SIGNALLED
    assert r.end.exit_code == -9 and r.end.signal == signal.SIGKILL


async def test_timeout_keeps_partial_output():
    r = await run_all(RunSpec(shell="echo started; exec sleep 30", timeout=1.0), timeout=10)
    assert r.out == b"started\n"
    assert r.end.reason is EndReason.TIMEOUT
    assert r.end.exit_code == -signal.SIGTERM
    assert 1.0 <= r.end.duration < 6
    assert_gone([r.run.pid])


async def test_timeout_is_total_time_not_idle_time():
    # Output every 50 ms never looks idle, yet the run must end at its timeout.
    # (Timing tests use `sh`: under load a Python child can take longer to start than a short
    # stall_timeout, and that silence would rightly count as a stall.)
    r = await run_all(RunSpec(shell="while :; do echo tick; sleep 0.05; done",
                              timeout=1.0, stall_timeout=0.5), timeout=10)
    assert r.end.reason is EndReason.TIMEOUT
    assert r.out.count(b"tick\n") >= 3 and r.out.endswith(b"tick\n")
    assert 1.0 <= r.end.duration < 6


async def test_stalled_after_output_keeps_partial_output():
    r = await run_all(RunSpec(shell="echo partial; exec sleep 30", stall_timeout=0.5), timeout=10)
    assert r.out == b"partial\n"
    assert r.end.reason is EndReason.STALLED
    assert 0.5 <= r.end.duration < 6
    assert_gone([r.run.pid])


async def test_cancelled_keeps_partial_output():
    run = await start(RunSpec(shell="echo ready; echo e >&2; exec sleep 30"))
    r = Reader(run)
    await r.until(lambda: r.out == b"ready\n" and r.err == b"e\n", 5, "ready")
    assert run.cancel() is True
    assert run.cancel() is False  # already ending
    end = await r.finish(10)
    assert end.reason is EndReason.CANCELLED
    assert end.exit_code == -signal.SIGTERM and end.killed == 1
    assert r.out == b"ready\n"
    assert_gone([run.pid])


async def test_shutdown_ends_every_live_run():
    runner = ProcessRunner()
    runs = [await runner.start(RunSpec(shell=f"echo run{i}; exec sleep 30")) for i in range(3)]
    readers = [Reader(run) for run in runs]
    for i, r in enumerate(readers):
        await r.until(lambda r=r, i=i: r.out == f"run{i}\n".encode(), 5, f"run{i} output")
    assert set(runner.runs) == {run.run_id for run in runs}
    await runner.shutdown(timeout=10)
    for i, r in enumerate(readers):
        end = await r.finish(5)
        assert end.reason is EndReason.SHUTDOWN
        assert r.out == f"run{i}\n".encode()
    assert runner.runs == {}
    assert_gone([run.pid for run in runs])


async def test_end_after_exit_is_not_rewritten_by_late_cancel():
    run = await start(RunSpec(argv=["true"]))
    end = await asyncio.wait_for(run.wait(), 5)
    assert run.cancel() is False and run.pause() is False and run.resume() is False
    assert end.reason is EndReason.EXITED and end.exit_code == 0
    # Nobody consumed: events() still yields the end exactly once.
    r = Reader(run)
    assert await r.finish(5) is end


# ---- pause / resume --------------------------------------------------------------------------

async def test_pause_stops_output_without_stall_and_resume_continues():
    script = "i=0; while [ $i -lt 40 ]; do echo $i; i=$((i+1)); sleep 0.02; done"
    run = await start(RunSpec(shell=script, stall_timeout=0.5))
    r = Reader(run)
    await r.until(lambda: r.out.count(b"\n") >= 3, 5, "first lines")
    assert run.pause() is True and run.pause() is False
    deadline = time.monotonic() + 5
    while tree.stat_fields(run.pid)[0] != "T":
        assert time.monotonic() < deadline, "leader never stopped"
        await asyncio.sleep(0.01)
    # Everything written before the stop is delivered: nothing left in the pipe, in a pending
    # batch or in the queue. Only then is the count the paused group's final one.
    st = next(s for s in run._streams if s.name == "stdout")
    await r.until(lambda: unread_in_pipe(st.fd) == 0 and not st.pending and not run._batches,
                  5, "output written before the stop delivered")
    held = len(r.out)
    await asyncio.sleep(1.2)  # longer than stall_timeout: a paused run must not be "stalled"
    assert len(r.out) == held, "a paused group produced output"
    assert not run.done
    assert run.resume() is True and run.resume() is False
    end = await r.finish(10)
    assert end.reason is EndReason.EXITED and end.exit_code == 0
    assert r.out == b"".join(b"%d\n" % i for i in range(40))


async def test_cancel_while_paused_ends_promptly():
    run = await start(RunSpec(shell="echo ready; exec sleep 30", kill_grace=5))
    r = Reader(run)
    await r.until(lambda: r.out == b"ready\n", 5, "ready")
    assert run.pause()
    run.cancel()
    end = await r.finish(10)
    # SIGCONT follows SIGTERM, so the stopped sleeper acts on it without waiting for SIGKILL.
    assert end.reason is EndReason.CANCELLED and end.exit_code == -signal.SIGTERM
    assert end.duration < 4


# ---- back-pressure ---------------------------------------------------------------------------

@pytest.mark.slow
async def test_back_pressure_bounds_memory_and_is_not_a_stall():
    total = 1024 * MiB
    max_buffer = 4 * MiB
    proc = psutil.Process()
    spec = RunSpec(argv=producer(31, total), stall_timeout=1.0, max_buffer=max_buffer)
    run = await start(spec)
    rss0 = proc.memory_info().rss
    peak = {"queued": 0, "rss": rss0, "held": False, "read_ahead": 0}
    consumed = [0]

    def sample() -> None:
        peak["queued"] = max(peak["queued"], run._queued)
        peak["held"] |= run._held_back
        read = sum(st.total for st in run._streams)
        peak["read_ahead"] = max(peak["read_ahead"], read - consumed[0])

    async def sampler():
        while not run.done:
            sample()
            peak["rss"] = max(peak["rss"], proc.memory_info().rss)
            await asyncio.sleep(0.02)

    async def pace(count: int):
        # Slow twice: one long hold (3 stall timeouts), then a stretch of slow batches.
        if count == 1:
            await asyncio.sleep(2.5)
        elif 2000 <= count < 2100:
            await asyncio.sleep(0.01)

    def on_batch(b):
        consumed[0] += len(b.data)
        sample()

    s = asyncio.get_running_loop().create_task(sampler())
    r = Reader(run, keep=False, pace=pace, on_batch=on_batch)
    end = await r.finish(60)
    await s
    assert end.reason is EndReason.EXITED, end  # held-back time is not a stall
    assert (r.size["stdout"], r.sha["stdout"].hexdigest()) == expected_stream(31, total)
    assert peak["held"], "the slow consumer never held the reader back"
    assert peak["queued"] <= max_buffer + MiB, peak
    assert peak["read_ahead"] <= max_buffer + MiB, peak
    assert peak["rss"] - rss0 < 64 * MiB, f"RSS grew by {(peak['rss'] - rss0) / MiB:.1f} MiB"


@BOTH_LOOPS
async def test_without_a_consumer_the_child_is_held_not_buffered(tmp_path):
    data = random.Random(32).randbytes(16 * MiB)
    (tmp_path / "data").write_bytes(data)
    run = await start(RunSpec(argv=["cat", str(tmp_path / "data")], max_buffer=2 * MiB,
                              stall_timeout=0.3))
    deadline = time.monotonic() + 10
    while not run._held_back:
        assert time.monotonic() < deadline, "never held back"
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.6)  # two stall timeouts: being held back is not stalling
    assert run._queued <= 3 * MiB and not run.done
    assert tree.is_alive(run.pid)  # blocked in write(), not finished
    r = Reader(run, keep=False)
    end = await r.finish(30)
    assert end.reason is EndReason.EXITED
    assert (r.size["stdout"], r.sha["stdout"].hexdigest()) == (len(data), sha256(data))


# ---- stdin -----------------------------------------------------------------------------------

@BOTH_LOOPS
async def test_input_delivered_to_cat_exactly():
    data = random.Random(41).randbytes(6 * MiB + 123)
    r = await run_all(RunSpec(argv=["cat"], input=data), keep=False)
    assert r.size["stdout"] == len(data)
    assert r.sha["stdout"].hexdigest() == hashlib.sha256(data).hexdigest()
    assert r.end.exit_code == 0


async def test_input_not_read_by_child_does_not_hang():
    r = await run_all(RunSpec(argv=["true"], input=b"x" * (8 * MiB)), timeout=10)
    assert r.end.reason is EndReason.EXITED and r.end.exit_code == 0


async def test_stdin_is_dev_null_without_input():
    r = await run_all(RunSpec(shell="readlink /proc/self/fd/0; cat; echo rc=$?"), timeout=10)
    assert r.out == b"/dev/null\nrc=0\n"
    r = await run_all(RunSpec(argv=["cat"]), timeout=10)
    assert r.out == b"" and r.end.exit_code == 0 and r.end.duration < 2


async def test_capture_false_leaves_output_on_our_descriptors(capfd):
    r = await run_all(RunSpec(shell="echo to-our-stdout; echo to-our-stderr >&2", capture=False))
    assert r.count == 0 and r.end.stdout_bytes == 0 and r.end.exit_code == 0
    out, err = capfd.readouterr()
    assert "to-our-stdout" in out and "to-our-stderr" in err


# ---- environment, cwd, spawn errors ------------------------------------------------------------

ENV_DUMP = "import json,os; print(json.dumps(dict(os.environ)))"


async def test_env_overrides_marker_and_claudecode(monkeypatch, tmp_path):
    monkeypatch.setenv("CLAUDECODE", "1")
    monkeypatch.setenv("CC_EXEC_TEST_REMOVE_ME", "x")
    spec = RunSpec(argv=[PY, "-c", ENV_DUMP], cwd=str(tmp_path),
                   env={"CC_EXEC_TEST_SET": "a b=c", "CC_EXEC_TEST_REMOVE_ME": None,
                        "CC_EXEC_TEST_NEVER_SET": None})
    r = await run_all(spec)
    env = json.loads(r.out)
    assert env["CC_EXEC_TEST_SET"] == "a b=c"
    assert "CC_EXEC_TEST_REMOVE_ME" not in env and "CC_EXEC_TEST_NEVER_SET" not in env
    assert "CLAUDECODE" not in env
    assert env[tree.MARKER_VAR] == r.run.run_id
    assert env["PATH"] == os.environ["PATH"]  # the rest is inherited
    # An explicit CLAUDECODE override is removed too, and inherit_env=False starts empty.
    # (`env` rather than python, which adds LC_CTYPE to an environment without a locale.)
    r = await run_all(RunSpec(argv=["/usr/bin/env", "-0"], inherit_env=False,
                              env={"CLAUDECODE": "1", "ONLY": "me"}))
    assert sorted(r.out.split(b"\0")) == sorted(
        [b"", b"ONLY=me", f"{tree.MARKER_VAR}={r.run.run_id}".encode()])


async def test_cwd(tmp_path):
    r = await run_all(RunSpec(argv=["pwd"], cwd=str(tmp_path)))
    assert r.out == f"{tmp_path}\n".encode()


async def test_spawn_errors_are_clear(tmp_path):
    plain = tmp_path / "not-executable.sh"
    plain.write_text("#!/bin/sh\necho hi\n")
    plain.chmod(0o644)
    cases = [
        (RunSpec(argv=["cc-exec-no-such-command"]), "executable not found: cc-exec-no-such-command"),
        (RunSpec(argv=[str(tmp_path / "missing")]), f"executable not found: {tmp_path}/missing"),
        (RunSpec(argv=[str(plain)]), f"permission denied: {plain}"),
        (RunSpec(argv=["true"], cwd=str(tmp_path / "nope")),
         f"working directory not found: {tmp_path}/nope"),
        (RunSpec(argv=["true"], cwd=str(plain)), f"not a directory: {plain}"),
    ]
    runner = ProcessRunner(tmp_path / "state")
    for spec, message in cases:
        with pytest.raises(SpawnError) as info:
            await runner.start(spec)
        assert str(info.value) == message
    assert runner.runs == {} and runner.registry.records() == []
    with pytest.raises(ValueError, match="exactly one of argv and shell"):
        await start(RunSpec(argv=["true"], shell="true"))
    with pytest.raises(ValueError, match="non-empty"):
        await start(RunSpec(argv=[]))
