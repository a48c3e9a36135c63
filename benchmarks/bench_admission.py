"""Admission with default settings: how many jobs run at once, and is a CPU burst held back?

Two figures, each from one real service started as a user starts it (`python -m cc_executor
--port 0`, default settings, so admission is on):

1. 60 jobs of `sleep 3` sent at once: they wait on nothing the host lacks, so they should all
   run together (target: peak >= 57) and end in about 3 s, not 8 at a time (24 s).
2. 24 jobs that each burn a CPU for 4 s (CPU time, not wall time) sent at once: on 2 cores they
   must not all run together (target: never more than 8 at once) and must all finish.

Peak concurrency is counted from the service's own events (`process.started` ->
`process.completed`) as the client receives them, and "last start" is when the last job started,
seconds after the batch was sent: the delay admission added. Prints a table; exits 0 whatever the figures
(they are measurements), 1 only when a job did not end normally.

    .venv/bin/python benchmarks/bench_admission.py [--sleepers 60] [--burners 24]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import service  # noqa: E402

from cc_executor.client import ExecutorClient  # noqa: E402

BURN = ("import time\nend = time.process_time() + {s}\n"
        "while time.process_time() < end:\n    pass\n")


async def run_batch(url: str, argv: list[str], n: int, limit: float) -> dict:
    """Send `n` executes at once; return peak running, wall time, queued count, reasons."""
    running = 0
    peak = 0
    queued = 0
    signals: dict[str, int] = {}
    bad = 0
    last_start = 0.0

    def on_event(ev) -> None:
        nonlocal running, peak, queued, last_start
        if ev.kind == "started":
            running += 1
            peak = max(peak, running)
            last_start = time.monotonic() - t0
        elif ev.kind == "queued":
            queued += 1
            sig = ev.params.get("signal") or "-"
            signals[sig] = signals.get(sig, 0) + 1
        elif ev.kind == "completed":
            running -= 1

    t0 = time.monotonic()
    async with await ExecutorClient.connect(url) as client:
        results = await asyncio.wait_for(asyncio.gather(*(
            client.execute(args=argv, on_event=on_event) for _ in range(n))), limit)
    for r in results:
        if not r.ok:
            bad += 1
    return {"peak": peak, "wall": time.monotonic() - t0, "last_start": last_start,
            "queued": queued,
            "signals": signals, "bad": bad}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sleepers", type=int, default=60)
    p.add_argument("--sleep", type=float, default=3.0)
    p.add_argument("--burners", type=int, default=24)
    p.add_argument("--burn", type=float, default=4.0)
    ns = p.parse_args()
    print(f"host: {os.cpu_count()} cores; service with its default settings")
    rows = []
    failed = 0
    with tempfile.TemporaryDirectory() as tmp, service(["sleep", sys.executable], Path(tmp)) as srv:
        s = asyncio.run(run_batch(srv.url, ["sleep", f"{ns.sleep:g}"], ns.sleepers, 120))
        rows.append((f"{ns.sleepers} x sleep {ns.sleep:g} at once", s,
                     f"peak >= {ns.sleepers - 3}", s["peak"] >= ns.sleepers - 3))
        b = asyncio.run(run_batch(srv.url, [sys.executable, "-c", BURN.format(s=ns.burn)],
                                  ns.burners, 600))
        rows.append((f"{ns.burners} x burn a CPU {ns.burn:g} s at once", b, "peak <= 8",
                     b["peak"] <= 8))
        failed = s["bad"] + b["bad"]
    print(f"{'figure':<36} {'peak':>5} {'wall s':>7} {'last start s':>12} {'queued':>7}  "
          f"{'held by':<28} "
          f"{'target':<14} result")
    for name, r, target, ok in rows:
        held = ", ".join(f"{k} {v}" for k, v in sorted(r["signals"].items())) or "-"
        print(f"{name:<36} {r['peak']:>5} {r['wall']:>7.1f} {r['last_start']:>12.2f} "
              f"{r['queued']:>7}  {held:<28} "
              f"{target:<14} {'PASS' if ok else 'MISS'}")
    if failed:
        print(f"{failed} job(s) did not end normally", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
