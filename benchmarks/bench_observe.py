"""What watching the jobs costs: the /metrics and /dashboard observer on the job event log.

Every job records `started` and `completed` through the `cc_executor.events` logger, on the loop
turn after the reply it follows; `observe.Activity` is a handler there that feeds the Prometheus
counters and histograms. This measures, in one process and one run, a job's two events through a
logger without the observer (the baseline: building and dispatching the records) and with it,
and prints the time per job and the ratio. No service is started: the figure is the observer's
own cost on the event loop, which an echo job's ~1.5 ms round trip carries once.

    .venv/bin/python benchmarks/bench_observe.py [--jobs 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from cc_executor.observe.activity import Activity  # noqa: E402
from cc_executor.observe.metrics import Metrics  # noqa: E402


def one_round(logger: logging.Logger, jobs: int) -> float:
    """Seconds per job for `jobs` jobs' started + completed events."""
    t0 = time.perf_counter()
    for i in range(jobs):
        job_id = f"job{i}"
        logger.info("started", extra={"job_event": {
            "event": "started", "job_id": job_id, "pid": 1, "pgid": 1, "argv0": "/bin/echo"}})
        logger.info("completed", extra={"job_event": {
            "event": "completed", "job_id": job_id, "reason": "exited", "exit_code": 0,
            "duration": 0.002, "stdout_bytes": 6, "stderr_bytes": 0}})
    return (time.perf_counter() - t0) / jobs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    ns = parser.parse_args()
    logger = logging.getLogger("bench_observe")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(logging.NullHandler())  # the baseline: records built and dispatched
    activity = Activity()
    activity.observers.append(Metrics(SimpleNamespace()).on_event)
    base, watched = [], []
    for _ in range(ns.rounds):  # interleaved, so a busy moment of the host hits both
        base.append(one_round(logger, ns.jobs))
        logger.addHandler(activity)
        watched.append(one_round(logger, ns.jobs))
        logger.removeHandler(activity)
    b, w = statistics.median(base), statistics.median(watched)
    print(f"per job (median of {ns.rounds} rounds of {ns.jobs}): events only {b * 1e6:.1f} us, "
          f"with the observer {w * 1e6:.1f} us; observer adds {(w - b) * 1e6:.1f} us "
          f"({w / b:.2f}x the events' own cost)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
