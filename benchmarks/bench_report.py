"""What report.html costs a run, against the text reports written from the same record.

    .venv/bin/python benchmarks/bench_report.py [--sizes 30,500,5000] [--rounds 3]

Three figures, measured in this run:

* writing the reports for a run of N attempts: report.md + report.json + junit.xml (the
  baseline) and report.html (matplotlib charts as inline SVG), interleaved round by round, the
  median of `--rounds`; the ratio html / text, and the page's size;
* the one-time cost of the charts' import (`matplotlib` on Agg), in a fresh interpreter, against
  importing the report package alone (which does not import matplotlib: the import is lazy);
* one host-trace reading (stress.report.host_trace: load, PSI, the service's CPU and RSS), the
  sampler every run now has, against `read_load()` alone.

The records are synthetic (seeded), shaped like a load run: N attempts over 10 tests and 6
connections. Exits 0 whatever the figures: a measurement, not a test.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time

from stress.report.host_trace import HostTrace
from stress.report.html import render_html
from stress.report.json_file import render_json
from stress.report.junit import render_junit
from stress.report.markdown import render_markdown
from stress.report.results import Attempt, Outcome, RunResult

from cc_executor.load import read_load


def record(n: int, seed: int = 1) -> RunResult:
    rnd = random.Random(seed)
    run = RunResult(run_id=f"bench-{n}", tool="bench", argv=["bench"], started_at=1000.0,
                    finished_at=1000.0 + n / 5, environment={"cores": 2, "hostname": "bench"})
    per = max(1, n // 10)
    for t in range(10):
        o = Outcome("bench", f"test_{t}", f"test {t}", [], "bench.json", "command", "echo",
                    [], 30.0, None, per, status="passed", passes=per, runs=per, required=per)
        for k in range(per):
            o.attempts.append(Attempt(
                k + 1, "passed", "passed", "", "exited", exit_code=0,
                started_at=1000.0 + rnd.uniform(0, n / 5), duration=rnd.uniform(0.05, 3.0),
                timeout=30.0, stdout_bytes=rnd.randint(10, 100_000), preview="x" * 200,
                stdout_path=f"outputs/test_{t}.{k + 1}.stdout", queue_wait=rnd.choice((None, 0.2))))
        run.outcomes.append(o)
    return run


def text_reports(run: RunResult) -> int:
    return len(render_markdown(run)) + len(render_json(run)) + len(render_junit(run))


def timed(fn, *args) -> tuple[float, int]:
    t0 = time.perf_counter()
    size = fn(*args) if fn is text_reports else len(fn(*args).encode())
    return time.perf_counter() - t0, size


def import_cost(code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="30,500,5000")
    ap.add_argument("--rounds", type=int, default=3)
    ns = ap.parse_args()
    print(f"load at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
    render_html(record(10))  # the first chart pays matplotlib's import: not a per-run figure
    print(f"{'attempts':>8} {'text reports':>13} {'report.html':>12} {'ratio':>6} {'page':>9}")
    for n in (int(x) for x in ns.sizes.split(",")):
        run = record(n)
        text, html, size = [], [], 0
        for r in range(ns.rounds):
            order = (text_reports, render_html) if r % 2 == 0 else (render_html, text_reports)
            for fn in order:
                dt, sz = timed(fn, run)
                (text if fn is text_reports else html).append(dt)
                if fn is render_html:
                    size = sz
        t, h = statistics.median(text), statistics.median(html)
        print(f"{n:>8} {t * 1000:>10.0f} ms {h * 1000:>9.0f} ms {h / t:>5.1f}x {size / 1024:>6.0f} KiB")
    base = min(import_cost("import stress.report") for _ in range(3))
    mpl = min(import_cost("import stress.report; from stress.report.html.svg import pyplot; pyplot()")
              for _ in range(3))
    print(f"import: stress.report {base * 1000:.0f} ms; with matplotlib (first chart) "
          f"{mpl * 1000:.0f} ms: +{(mpl - base) * 1000:.0f} ms once per run, {mpl / base:.1f}x")
    trace = HostTrace([os.getpid()])
    trace.start()
    trace.stop()
    reads = []
    loads = []
    for _ in range(200):
        t0 = time.perf_counter()
        trace.sample()
        reads.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        read_load()
        loads.append(time.perf_counter() - t0)
    r, lo = statistics.median(reads), statistics.median(loads)
    print(f"host trace reading: {r * 1e6:.0f} us (read_load alone {lo * 1e6:.0f} us, {r / lo:.1f}x); "
          "one per second")
    print(f"load at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
