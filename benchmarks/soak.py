"""Soak: many jobs of random sizes through one service, with cancels, pauses and dropped links.

    .venv/bin/python benchmarks/soak.py [--jobs N] [--concurrency C] [--max-mib M] [--seed S]

N jobs (default 1000, at most 10000) of random sizes 0..M MiB (default 8): binary and text with
invalid UTF-8 and split multi-byte characters, written in random chunks to stdout and stderr
interleaved. At random: a CANCEL mid-stream, a PAUSE then RESUME, or the transport aborted
(the client, `resume=True`, reconnects and re-attaches). C clients (default 8) each run one job
at a time. The service runs with its default settings. Printed:

* lost bytes: what the service counted (`stdout_bytes`/`stderr_bytes`) minus what the client
  received, plus received bytes that differ from what the job wrote (goal 0);
* jobs without exactly one completion, counted on the client and in the service's event log
  (goal 0); seq gaps or duplicates seen by the caller (goal 0);
* leftover processes: the service's descendants and any process carrying this soak's token
  once every job is done (goal 0);
* the service's peak RSS, and its RSS and open file descriptors before and after.

Not a timed test: exits 0 whatever the figures, 1 only when it could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakRss, service  # noqa: E402

from cc_executor.client import ExecutorClient, ExecutorError  # noqa: E402

MAX_JOBS = 10_000
TEXT_UNIT = "päivää ✓ 🙂 line\n".encode() + b"\xff\xfe\xc3("

# The job: the same plan as `expected` below, written with a loop that retries short writes (a
# SIGSTOP can cut a write(2) short). argv: size seed mode token (the token is only a marker).
CHILD = f"""
import os, random, sys
size, seed, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rnd = random.Random(seed)
unit = {TEXT_UNIT!r}
data = rnd.randbytes(size) if mode == "bin" else (unit * (size // len(unit) + 1))[:size]
view, pos = memoryview(data), 0
while pos < size:
    chunk = view[pos:pos + rnd.randint(1, 65536)]
    pos += len(chunk)
    fd = 1 if rnd.random() < 0.5 else 2
    while chunk:
        chunk = chunk[os.write(fd, chunk):]
"""


def expected(size: int, seed: int, mode: str) -> tuple[bytes, bytes]:
    """What the job writes to stdout and stderr: CHILD's plan, computed here."""
    rnd = random.Random(seed)
    data = rnd.randbytes(size) if mode == "bin" else (TEXT_UNIT * (size // len(TEXT_UNIT) + 1))[:size]
    out, err, pos = bytearray(), bytearray(), 0
    while pos < size:
        chunk = data[pos:pos + rnd.randint(1, 65536)]
        pos += len(chunk)
        (out if rnd.random() < 0.5 else err).extend(chunk)
    return bytes(out), bytes(err)


@dataclass
class Spec:
    index: int
    size: int
    seed: int
    mode: str
    action: str  # none, cancel, pause, abort
    at: int  # bytes received before the action


@dataclass
class Outcome:
    spec: Spec
    job_id: str = ""
    completions: int = 0
    reason: str = ""
    lost: int = 0
    wrong: int = 0
    seq_faults: int = 0
    short_child: int = 0
    error: str = ""
    received: dict = field(default_factory=lambda: {"stdout": 0, "stderr": 0})


def plan(n: int, max_mib: float, seed: int) -> list[Spec]:
    rnd = random.Random(seed)
    specs = []
    for i in range(n):
        size = int(rnd.random() * max_mib * 1024 * 1024)
        action = rnd.choices(["none", "cancel", "pause", "abort"], [55, 15, 15, 15])[0]
        specs.append(Spec(i, size, rnd.randrange(2**31), rnd.choice(["bin", "text"]), action,
                          rnd.randrange(max(1, size))))
    return specs


async def run_job(client: ExecutorClient, spec: Spec, token: str) -> Outcome:
    o = Outcome(spec)
    job = await client.start(args=["python3", "-c", CHILD, str(spec.size), str(spec.seed),
                                   spec.mode, token], timeout=600)
    o.job_id = job.job_id
    got = {"stdout": bytearray(), "stderr": bytearray()}
    next_seq, acted, resumes = 0, False, []
    async for ev in job:
        if ev.kind == "completed":
            o.completions += 1
            end = ev.params
            continue
        if ev.kind != "output":
            continue
        o.seq_faults += ev.params["seq"] != next_seq
        next_seq = ev.params["seq"] + 1
        got[ev.stream] += ev.data
        if acted or len(got["stdout"]) + len(got["stderr"]) < spec.at:
            continue
        acted = True
        try:
            if spec.action == "cancel":
                await job.cancel()
            elif spec.action == "pause":
                await job.control("PAUSE")
                resumes.append(asyncio.ensure_future(_resume_later(job)))
            elif spec.action == "abort":
                client.ws.transport.abort()  # a network blip: the client resumes by itself
        except ExecutorError:  # the job was already ending: nothing to act on
            pass
    for t in resumes:
        await t
    o.reason = end["reason"]
    want = expected(spec.size, spec.seed, spec.mode)
    for stream, full in zip(("stdout", "stderr"), want):
        mine, counted = bytes(got[stream]), end[f"{stream}_bytes"]
        o.received[stream] = len(mine)
        o.lost += max(0, counted - len(mine))
        if mine != full[:len(mine)]:
            o.wrong += sum(a != b for a, b in zip(mine, full)) + max(0, len(mine) - len(full))
        if o.reason == "exited":
            o.short_child += len(full) - counted
    return o


async def _resume_later(job) -> None:
    await asyncio.sleep(random.uniform(0.02, 0.3))
    try:
        await job.control("RESUME")
    except ExecutorError:
        pass


async def worker(url: str, specs: collections.deque, token: str, out: list[Outcome]) -> None:
    client = await ExecutorClient.connect(url, resume=True, detach_timeout=60,
                                          resume_timeout=60, ping_timeout=None)
    async with client:
        while specs:
            spec = specs.popleft()
            try:
                out.append(await asyncio.wait_for(run_job(client, spec, token), 900))
            except Exception as e:  # noqa: BLE001 - one broken job is a figure, not the end
                out.append(Outcome(spec, error=f"{type(e).__name__}: {e}"))
                if not client.is_open:
                    client = await ExecutorClient.connect(url, resume=True, ping_timeout=None)


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def leftovers(server_pid: int, token: str) -> int:
    mine = set()
    try:
        mine = {p.pid for p in psutil.Process(server_pid).children(recursive=True)}
    except psutil.Error:
        pass
    for p in psutil.process_iter(["cmdline"]):
        if token in (p.info["cmdline"] or []):
            mine.add(p.pid)
    return len(mine)


def completions_in_log(path: Path) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    if path.exists():
        for line in path.read_text().splitlines():
            e = json.loads(line)
            if e.get("event") in ("completed", "queued"):
                counts[(e["event"], e["job_id"])] += 1
    return counts


async def soak(args, work: Path) -> None:
    token = "soak-" + secrets.token_hex(8)
    specs = plan(args.jobs, args.max_mib, args.seed)
    with service(["python3"], work) as srv:
        proc = psutil.Process(srv.pid)
        fd0, rss0 = fds(srv.pid), proc.memory_info().rss
        outcomes: list[Outcome] = []
        queue = collections.deque(specs)
        t0 = time.monotonic()
        with PeakRss(srv.pid, 0.05) as peak:
            await asyncio.gather(*(worker(srv.url, queue, token, outcomes)
                                   for _ in range(args.concurrency)))
        wall = time.monotonic() - t0
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and leftovers(srv.pid, token):
            await asyncio.sleep(0.1)
        left = leftovers(srv.pid, token)
        while time.monotonic() < deadline and fds(srv.pid) > fd0:
            await asyncio.sleep(0.1)
        fd1, rss1 = fds(srv.pid), proc.memory_info().rss
        logged = completions_in_log(work / "logs" / "cc_executor.jsonl")
    report(args, outcomes, logged, left, wall, (fd0, fd1), (rss0, rss1, peak.peak))


def report(args, outcomes: list[Outcome], logged, left: int, wall: float, fd, rss) -> None:
    mib = 1024 * 1024
    moved = sum(sum(o.received.values()) for o in outcomes)
    not_once = [o for o in outcomes
                if o.completions != 1 or logged.get(("completed", o.job_id), 0) != 1]
    held = sum(1 for (event, _) in logged if event == "queued")
    reasons = collections.Counter(o.reason or "error" for o in outcomes)
    actions = collections.Counter(o.spec.action for o in outcomes)
    print(f"soak: {len(outcomes)} jobs (--jobs {args.jobs}), concurrency {args.concurrency}, "
          f"sizes 0-{args.max_mib:g} MiB, seed {args.seed}; {wall:.1f} s, "
          f"{moved / mib:.0f} MiB delivered ({moved / mib / max(wall, 1e-9):.1f} MiB/s)")
    print(f"  actions: {dict(actions)}; ends: {dict(reasons)}; "
          f"held in the admission queue: {held}")
    print(f"  lost bytes: {sum(o.lost for o in outcomes)}   differing bytes: "
          f"{sum(o.wrong for o in outcomes)}   seq gaps/duplicates: "
          f"{sum(o.seq_faults for o in outcomes)}")
    print(f"  jobs without exactly one completion: {len(not_once)} "
          f"(client or event log); jobs failed in the client: "
          f"{sum(1 for o in outcomes if o.error)}")
    print(f"  bytes an exited job wrote but the service never counted: "
          f"{sum(o.short_child for o in outcomes)}")
    print(f"  leftover processes: {left}")
    print(f"  service RSS: {rss[0] / mib:.1f} MiB before, peak {rss[2] / mib:.1f} MiB, "
          f"{rss[1] / mib:.1f} MiB after; open fds: {fd[0]} before, {fd[1]} after")
    for o in [o for o in outcomes if o.error][:5]:
        print(f"  error (job {o.spec.index}, action {o.spec.action}): {o.error}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=1000, help=f"jobs to run (at most {MAX_JOBS})")
    ap.add_argument("--concurrency", type=int, default=8, help="clients, one job each at a time")
    ap.add_argument("--max-mib", type=float, default=8.0, help="largest job output, MiB")
    ap.add_argument("--seed", type=int, default=20261205)
    args = ap.parse_args()
    if not 1 <= args.jobs <= MAX_JOBS or not 1 <= args.concurrency <= 256:
        ap.error(f"--jobs must be 1..{MAX_JOBS} and --concurrency 1..256")
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(soak(args, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
