"""Fleet runs on Dask: makespan and fairness with and without work stealing, and the recovery
after a worker is SIGKILLed, each against a baseline measured in the same run.

Every run is `python -m stress.local SUITE --cluster local:3` as a user runs it: a scheduler in
the harness and three `python -m stress.worker --start-executor` processes, each with its own
executor on default settings (slots from the hardware rule). Runs alternate (on, off, off, on...)
so a busy neighbour hurts both sides alike. Figures come from each run's report.json (`servers`:
makespan from the first submit to the last end, fairness = coefficient of variation of the
workers' completion times).

Skewed suite: 36 `sleep` tests, every third one long (1.5 s), the rest 0.1 s, all with the same
declared duration (their timeout), so the scheduler deals them evenly by count and one worker
tends to get the long ones: stealing is what corrects that.

Recovery: 6 tests of `sleep 2` with a side-effect marker (fewer than the fleet's slots, so a
rerun finds a free slot at once and the figure is Dask's detection and rescheduling, not a queue);
1 s after one worker started its jobs (half-way through them), its whole process group is
SIGKILLed. Recovery = from the kill to the
last rerun of its tests starting on another worker (report.json attempts' `started_at`); the
run's makespan against the same run without a kill.

A run whose executors held a job in their admission queue (longest `queue_wait` >= 0.5 s: the
host was busy with other work) is printed but left out of the medians, and counted.

    .venv/bin/python benchmarks/bench_fleet.py [--rounds 2]

The executors run on their default settings, admission included: on a busy host they hold jobs
in their queue, which lengthens a run whatever the scheduler does; each run's longest admission
wait is printed beside its figures so such a run can be told apart.

Prints a table and exits 0 whatever the figures (they are measurements, not tests); 1 when a run
lost or failed a test, or a test's side effect ran twice.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
RUN_TIMEOUT = 300
HELD = 0.5
KILL_AFTER = 1.0
"""Seconds after the victim's first job started before it is killed (half of the job)."""
"""Seconds of admission wait from which a run is left out of the medians (a busy host)."""


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO / "tests"), e.get("PYTHONPATH", "")])
    return e


def write_suite(path: Path, tests: list[dict]) -> Path:
    path.write_text(json.dumps({"name": path.stem, "tests": tests}))
    return path


def skewed(folder: Path) -> Path:
    tests = [{"id": f"s{i:02d}", "timeout": 60, "expected_patterns": [f"ok-{i}"],
              "command": f"sleep {1.5 if i % 3 == 0 else 0.1}; echo ok-{i}"} for i in range(36)]
    return write_suite(folder / "skewed.json", tests)


def marked(folder: Path, marks: Path) -> Path:
    marks.mkdir(parents=True, exist_ok=True)
    tests = [{"id": f"m{i:02d}", "timeout": 60, "expected_patterns": [f"ok-{i}"],
              "command": f"sleep 2; echo end >> {marks}/m{i:02d}; echo ok-{i}"} for i in range(6)]
    return write_suite(folder / "marked.json", tests)


def argv(suite: Path, out: Path, *extra: str) -> list[str]:
    return [PY, "-m", "stress.local", str(suite), "--cluster", "local:3", "--out", str(out),
            "--no-history", "--quiet", *extra]


def report(out: Path) -> dict:
    folders = sorted(d for d in out.iterdir() if d.is_dir())
    return json.loads((folders[-1] / "report.json").read_text())


def run(suite: Path, out: Path, *extra: str) -> dict:
    done = subprocess.run(argv(suite, out, *extra), cwd=REPO, env=env(), capture_output=True,
                          text=True, timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL)
    doc = report(out)
    doc["_rc"] = done.returncode
    return doc


def workers_of(harness: psutil.Process) -> list[psutil.Process]:
    try:
        return [p for p in harness.children() if "stress.worker" in " ".join(p.cmdline())]
    except psutil.Error:
        return []


def run_with_kill(suite: Path, out: Path) -> tuple[dict, float]:
    """The run, with one worker's process group SIGKILLed once its executor runs jobs."""
    proc = subprocess.Popen(argv(suite, out), cwd=REPO, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    harness = psutil.Process(proc.pid)
    killed_at = 0.0
    deadline = time.monotonic() + 120
    try:
        while not killed_at and time.monotonic() < deadline:
            for w in workers_of(harness):
                try:
                    busy = any(c.children() for c in w.children())
                except psutil.Error:
                    busy = False
                if busy:
                    time.sleep(KILL_AFTER)  # mid-job: the rerun must redo real work
                    killed_at = time.time()
                    os.killpg(w.pid, signal.SIGKILL)
                    break
            time.sleep(0.02)
        proc.wait(RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    doc = report(out)
    doc["_rc"] = proc.returncode
    return doc, killed_at


def recovery(doc: dict, killed_at: float) -> float | None:
    """Seconds from the kill to the last rerun of the killed worker's tests starting elsewhere."""
    starts = [a["started_at"] for t in doc["tests"] for a in t["attempts"]
              if a.get("tries") and len(a["tries"]) > 1 and a.get("started_at")]
    return max(starts) - killed_at if starts and killed_at else None


def queue_wait(doc: dict) -> float:
    """Longest time a job of the run waited in its executor's admission queue (a busy host)."""
    return max((a.get("queue_wait") or 0.0) for t in doc["tests"] for a in t["attempts"])


def ok(doc: dict) -> bool:
    return doc["_rc"] == 0 and all(t["status"] == "passed" for t in doc["tests"])


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ns = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench_fleet_"))
    suite = skewed(home)
    figures: dict[str, list[tuple[float, float]]] = {"on": [], "off": []}
    bad = False
    held = 0
    order = ["on", "off"]
    for r in range(ns.rounds):
        for side in (order if r % 2 == 0 else order[::-1]):
            doc = run(suite, home / f"skew-{side}-{r}", *(["--no-steal"] if side == "off" else []))
            bad |= not ok(doc)
            sv = doc["servers"]
            steals = sum(w["steals_in"] for w in sv["servers"])
            if queue_wait(doc) < HELD:
                figures[side].append((sv["makespan"], sv["fairness_cv"] or 0.0))
            else:
                held += 1
            print(f"stealing {side:3}: makespan {sv['makespan']:.2f} s, fairness CV "
                  f"{sv['fairness_cv']:.3f}, steals {steals}, tests per worker "
                  f"{[w['tests_run'] for w in sv['servers']]}, longest admission wait "
                  f"{queue_wait(doc):.1f} s", flush=True)
    kills, plain, rec = [], [], []
    for r in range(ns.rounds):
        marks = home / f"marks-{r}"
        (home / f"k{r}").mkdir()
        mark_suite = marked(home / f"k{r}", marks)
        doc = run(mark_suite, home / f"plain-{r}")
        bad |= not ok(doc)
        plain_makespan = doc["servers"]["makespan"]
        if queue_wait(doc) < HELD:
            plain.append(plain_makespan)
        else:
            held += 1
        for f in marks.iterdir():
            f.unlink()
        doc, killed_at = run_with_kill(mark_suite, home / f"kill-{r}")
        ends = [f.read_text().split().count("end") for f in marks.iterdir()]
        bad |= not ok(doc) or len(ends) != 6 or set(ends) != {1}
        rec_s = recovery(doc, killed_at)
        if queue_wait(doc) >= HELD:
            held += 1
        else:
            kills.append(doc["servers"]["makespan"])
            if rec_s is not None:
                rec.append(rec_s)
        print(f"kill round {r}: makespan {doc['servers']['makespan']:.2f} s (no kill "
              f"{plain_makespan:.2f} s), retried {doc['servers']['retried']}, recovery "
              f"{'-' if rec_s is None else f'{rec_s:.2f} s'}, side effects {sorted(set(ends))}, "
              f"longest admission wait {queue_wait(doc):.1f} s",
              flush=True)
    on_m, off_m = med([m for m, _ in figures["on"]]), med([m for m, _ in figures["off"]])
    on_f, off_f = med([f for _, f in figures["on"]]), med([f for _, f in figures["off"]])
    print()
    print("| figure | stealing off (baseline) | stealing on | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| makespan, skewed suite (median) | {off_m:.2f} s | {on_m:.2f} s | "
          f"{on_m / off_m:.2f}x |")
    print(f"| fairness CV | {off_f:.3f} | {on_f:.3f} | - |")
    print()
    print("| figure | no kill (baseline) | one worker SIGKILLed | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| makespan, 6 x sleep 2 (median) | {med(plain):.2f} s | "
          f"{med(kills):.2f} s | {med(kills) / med(plain):.2f}x |")
    print(f"| kill -> its tests rerun elsewhere (median) | - | {med(rec):.2f} s | - |")
    print(f"\nruns left out of the medians (held in an executor's admission queue): {held}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
