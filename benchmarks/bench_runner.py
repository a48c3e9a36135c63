"""The process runner against a plain asyncio subprocess, measured in the same run.

    .venv/bin/python benchmarks/bench_runner.py [--loop asyncio|uvloop] [--rounds N] [--mib N]

Two figures, each taken for both sides interleaved (A/B, B/A, ...) so that a noisy neighbour
on this shared machine hurts both alike:

* spawn-to-exit latency of `echo hi`: from asking for the process to having its output and
  its exit (runner: RunEnd; plain: EOF and wait()), p50 and p90 over `--rounds` each;
* throughput: `base64 -w 76` of a seeded random file (256 MiB of 76-character lines by
  default), read to the end; both sides count and sha256 every byte and must agree with the
  digest computed here with `base64.encodebytes` (which also wraps at 76).

Targets printed against: runner throughput >= 70% of plain, runner p50 <= 1.3x plain.
Exits 0 whatever the figures (it is a measurement, not a test); exits 1 only if a checksum
or byte count is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import random
import statistics
import sys
import tempfile
import time

from cc_executor.process import EndReason, RunEnd, RunSpec, start

READ_CHUNK = 64 * 1024


async def runner_echo() -> float:
    t0 = time.perf_counter()
    run = await start(RunSpec(argv=["echo", "hi"]))
    out = b""
    async for ev in run.events():
        if isinstance(ev, RunEnd):
            assert ev.reason is EndReason.EXITED and ev.exit_code == 0, ev
        else:
            out += ev.data
    dt = time.perf_counter() - t0
    assert out == b"hi\n", out
    return dt


async def plain_echo() -> float:
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        "echo", "hi", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE)
    out = b""
    while chunk := await proc.stdout.read(READ_CHUNK):
        out += chunk
    rc = await proc.wait()
    dt = time.perf_counter() - t0
    assert out == b"hi\n" and rc == 0
    return dt


async def runner_stream(argv: list[str]) -> tuple[float, int, str]:
    h = hashlib.sha256()
    n = 0
    t0 = time.perf_counter()
    run = await start(RunSpec(argv=argv))
    async for ev in run.events():
        if isinstance(ev, RunEnd):
            assert ev.exit_code == 0, ev
        else:
            h.update(ev.data)
            n += len(ev.data)
    return time.perf_counter() - t0, n, h.hexdigest()


async def plain_stream(argv: list[str]) -> tuple[float, int, str]:
    h = hashlib.sha256()
    n = 0
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE)
    while chunk := await proc.stdout.read(READ_CHUNK):
        h.update(chunk)
        n += len(chunk)
    assert await proc.wait() == 0
    return time.perf_counter() - t0, n, h.hexdigest()


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def bench(rounds: int, mib: int, stream_rounds: int) -> int:
    # Warm both paths (imports, first fork of a big process, page cache for `echo`).
    for _ in range(5):
        await runner_echo()
        await plain_echo()
    lat: dict[str, list[float]] = {"runner": [], "plain": []}
    for i in range(rounds):
        pair = [("runner", runner_echo), ("plain", plain_echo)]
        for name, fn in pair if i % 2 == 0 else pair[::-1]:
            lat[name].append(await fn())

    raw_size = mib * 1024 * 1024 * 3 // 4 // 3 * 3  # base64 output ~ mib MiB plus newlines
    with tempfile.TemporaryDirectory(prefix="cc_exec_bench_") as tmp:
        path = os.path.join(tmp, "random.bin")
        rng = random.Random(20240501)
        with open(path, "wb") as f:
            left = raw_size
            while left:
                n = min(left, 1 << 22)
                f.write(rng.randbytes(n))
                left -= n
        with open(path, "rb") as f:
            encoded = base64.encodebytes(f.read())
        want = (len(encoded), hashlib.sha256(encoded).hexdigest())
        del encoded
        argv = ["base64", "-w", "76", path]
        thr: dict[str, list[float]] = {"runner": [], "plain": []}
        bad = 0
        for i in range(stream_rounds):
            pair = [("runner", runner_stream), ("plain", plain_stream)]
            for name, fn in pair if i % 2 == 0 else pair[::-1]:
                dt, n, digest = await fn(argv)
                if (n, digest) != want:
                    print(f"{name}: WRONG OUTPUT: {n} bytes {digest[:16]} != {want}",
                          file=sys.stderr)
                    bad += 1
                thr[name].append(n / dt / (1 << 20))

    size_mib = want[0] / (1 << 20)
    rows = [
        ("echo hi p50 (ms)", pct(lat["runner"], 0.5) * 1e3, pct(lat["plain"], 0.5) * 1e3),
        ("echo hi p90 (ms)", pct(lat["runner"], 0.9) * 1e3, pct(lat["plain"], 0.9) * 1e3),
        (f"{size_mib:.0f} MiB base64 lines (MiB/s, median)",
         statistics.median(thr["runner"]), statistics.median(thr["plain"])),
    ]
    print(f"loop: {type(asyncio.get_running_loop()).__module__}; {rounds} echo rounds per side, "
          f"{stream_rounds} stream rounds per side, interleaved")
    print(f"{'figure':<40} {'runner':>10} {'plain':>10} {'ratio':>8}")
    for name, a, b in rows:
        print(f"{name:<40} {a:>10.2f} {b:>10.2f} {a / b:>8.2f}")
    # Each runner sample against the plain sample taken right next to it: robust to a neighbour's
    # load drifting during the run, which moves both percentiles but not the paired ratio.
    paired = statistics.median(a / b for a, b in zip(lat["runner"], lat["plain"]))
    print(f"{'echo hi median of paired ratios':<40} {'':>10} {'':>10} {paired:>8.2f}")
    p50_ratio = rows[0][1] / rows[0][2]
    thr_ratio = rows[2][1] / rows[2][2]
    print(f"target p50 <= 1.3x plain: {'met' if p50_ratio <= 1.3 else 'MISSED'} ({p50_ratio:.2f}x)")
    print(f"target throughput >= 70% of plain: {'met' if thr_ratio >= 0.7 else 'MISSED'} "
          f"({thr_ratio:.0%})")
    print(f"checksums: {'all match' if not bad else f'{bad} WRONG'} "
          f"({want[0]} bytes, sha256 {want[1][:16]}...)")
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    ap.add_argument("--rounds", type=int, default=200, help="echo runs per side")
    ap.add_argument("--mib", type=int, default=256, help="approximate stream size")
    ap.add_argument("--stream-rounds", type=int, default=3, help="stream runs per side")
    args = ap.parse_args()
    coro = bench(args.rounds, args.mib, args.stream_rounds)
    if args.loop == "uvloop":
        import uvloop
        return uvloop.run(coro)
    return asyncio.run(coro)


if __name__ == "__main__":
    sys.exit(main())
