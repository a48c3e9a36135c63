"""What per-job containment costs a run, measured in the same run against the fallback.

    .venv/bin/python benchmarks/bench_containment.py [--rounds N]

Spawn-to-end latency of `echo hi` through the process runner, interleaved A/B so a noisy
neighbour hurts every side alike:

* fallback - no cgroup (process group, marker, subreaper): the baseline;
* cgroup   - the service's default (`containment=auto`): on a host with a writable v2 tree, a
             cgroup per job joined by the `/bin/sh` wrapper before exec, removed at the end;
* limits   - the same with `memory_mb` and `processes` (v1 or v2 controllers) and `cpu_seconds`.

Then the two ways to place a child before it execs, measured alone with plain `Popen` from a
process of the service's size (~100 MiB touched): a Python `preexec_fn` writing to
cgroup.procs (forces fork instead of vfork) against the shell wrapper. Prints p50s and ratios to
the baseline; exits 0 whatever the figures (a measurement, not a test).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time

from cc_executor.containment import Containment, Limits
from cc_executor.process import ProcessRunner, RunSpec


async def one(runner: ProcessRunner, limits: Limits | None) -> float:
    t0 = time.perf_counter()
    run = runner.start_nowait(RunSpec(argv=["echo", "hi"], limits=limits))
    out, _, end = await run.collect()
    assert out == b"hi\n" and end.exit_code == 0, (out, end)
    return time.perf_counter() - t0


async def runner_figures(rounds: int) -> dict[str, list[float]]:
    auto = Containment("auto")
    sides = {"fallback": (ProcessRunner(None, containment=Containment("fallback")), None),
             "cgroup": (ProcessRunner(None, containment=auto), None)}
    enf = auto.enforcers()
    if "memory_mb" in enf and "processes" in enf:
        sides["limits"] = (sides["cgroup"][0], Limits(memory_mb=256, processes=64,
                                                       cpu_seconds=60))
    times: dict[str, list[float]] = {k: [] for k in sides}
    order = list(sides)
    for i in range(rounds):
        for name in order if i % 2 == 0 else reversed(order):
            runner, limits = sides[name]
            times[name].append(await one(runner, limits))
    print(f"containment here: {auto.mechanism}; limits enforced by {enf}")
    auto.close()
    return times


def placement_figures(rounds: int) -> dict[str, list[float]]:
    auto = Containment("auto")
    if auto.v2 is None:
        auto.close()
        return {}
    d = os.path.join(auto.v2, "bench")
    os.makedirs(d, exist_ok=True)
    procs = os.path.join(d, "cgroup.procs")
    ballast = bytearray(100 << 20)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1

    def plain() -> None:
        subprocess.Popen(["/bin/true"], start_new_session=True).wait()

    def preexec() -> None:
        fd = os.open(procs, os.O_WRONLY | os.O_CLOEXEC)
        try:
            subprocess.Popen(["/bin/true"], start_new_session=True,
                             preexec_fn=lambda: os.write(fd, b"0")).wait()
        finally:
            os.close(fd)

    def wrapper() -> None:
        subprocess.Popen(["/bin/sh", "-c", f'echo 0 >{procs} && exec "$0" "$@"', "/bin/true"],
                         start_new_session=True).wait()

    ways = {"popen": plain, "preexec_fn": preexec, "sh wrapper": wrapper}
    times: dict[str, list[float]] = {k: [] for k in ways}
    for i in range(rounds):
        for name in ways if i % 2 == 0 else reversed(list(ways)):
            t0 = time.perf_counter()
            ways[name]()
            times[name].append(time.perf_counter() - t0)
    del ballast
    os.rmdir(d)
    auto.close()
    return times


def report(title: str, times: dict[str, list[float]], base: str) -> None:
    if not times:
        print(f"{title}: no writable cgroup v2 tree here, skipped")
        return
    print(title)
    p50 = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    for name, ms in p50.items():
        print(f"  {name:12s} p50 {ms:6.3f} ms   ratio {ms / p50[base]:5.2f}x {base}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=300)
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores, python "
          f"{sys.version.split()[0]}")
    report("echo hi, spawn to RunEnd (process runner):",
           asyncio.run(runner_figures(args.rounds)), "fallback")
    report("placing a child before exec (Popen of /bin/true, 100 MiB parent):",
           placement_figures(args.rounds), "popen")
    return 0


if __name__ == "__main__":
    sys.exit(main())
