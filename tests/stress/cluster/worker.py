"""`python -m stress.worker SCHEDULER`: one fleet worker = a Dask worker beside an executor.

Order of work, and why: check the address (TLS off loopback) before anything starts; start or
reach the executor; read its hardware (`/health`) and allow-list (`connected`) to decide the
slots, GPUs and executables this worker advertises as Dask resources (`claude=slots`, `gpu=N`,
`allow.<program>=slots`), so the scheduler never sends a test to a worker that cannot run it;
then join the scheduler and run tasks until told to stop.

A started executor (`--start-executor`) runs in its own session (so a signal to the worker's
process group does not reach its job trees directly) with the kernel's parent-death signal set
to SIGTERM: if this worker dies, even by SIGKILL, the executor is told at once, ends every job
tree it runs and exits. Its jobs end even sooner on their own: each job's WebSocket closes with
the worker, and the executor ends a job whose client is gone.

Exit status: 0 stopped by SIGTERM/SIGINT or the scheduler closing; 2 usage (one line naming the
option); 3 the scheduler or the executor cannot be reached, the executor cannot be started, or
it went away while the worker ran (one line naming the address).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import re
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from cc_executor import aio
from cc_executor.client import ExecutorClient
from stress.cluster import capacity
from stress.cluster.security import (
    ClusterError,
    check_address,
    is_loopback,
    security,
    split_address,
    tls_files,
)
from stress.cluster.task import WorkerSetup, configure

EXIT_USAGE, EXIT_UNREACHABLE = 2, 3
PR_SET_PDEATHSIG = 1
CONNECT_TIMEOUT = 30.0
"""Seconds to reach the scheduler before giving up (exit 3)."""
EXECUTOR_POLL = 0.1
"""Seconds between checks that a started executor still runs (a process poll: cheap)."""
EXECUTOR_PROBE, EXECUTOR_MISSES = 2.0, 3
"""A given executor (`--executor`) is probed on `/health` this often; this many failures in a
row (~6 s: rides out a busy moment, not a restart) and the worker leaves."""


def die_with_parent() -> None:
    """preexec_fn: the kernel sends SIGTERM to the child when this worker exits (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stress.worker",
                                description="A Dask worker that runs stress tests through this "
                                            "host's cc_executor (see docs/scale.md).")
    p.add_argument("scheduler", metavar="SCHEDULER", help="tcp://HOST:PORT or tls://HOST:PORT")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--executor", metavar="URL", default="ws://127.0.0.1:8004/ws",
                     help="the executor on this host (default ws://127.0.0.1:8004/ws)")
    src.add_argument("--start-executor", action="store_true",
                     help="start and supervise a local executor (configured by CC_EXECUTOR_* and .env)")
    p.add_argument("--token", default=os.environ.get("CC_EXECUTOR_TOKEN"),
                   help="the --executor's token (default $CC_EXECUTOR_TOKEN)")
    p.add_argument("--slots", type=int, metavar="N", help="tests at once (default: from hardware)")
    p.add_argument("--gpus", type=int, metavar="N", help="GPUs to advertise (default: nvidia-smi)")
    p.add_argument("--gpu-weight", type=float, metavar="W", help="GPU weight (default: model table)")
    p.add_argument("--name", default=None, help="worker name (default: hostname-pid)")
    p.add_argument("--log-dir", default=None, help="the started executor's logs (default: a temp dir)")
    p.add_argument("--tls-ca-file", help="the fleet's CA (TLS; required off loopback)")
    p.add_argument("--tls-cert", help="this worker's certificate (TLS)")
    p.add_argument("--tls-key", help="this worker's private key (TLS)")
    return p


async def start_executor(log_dir: Path) -> Any:
    """A local executor on an ephemeral loopback port, ending with this process."""
    from stress.service.managed import ManagedService

    svc = ManagedService(allow=[], log_dir=log_dir, preexec_fn=die_with_parent)
    await svc.start()
    return svc


async def executor_setup(name: str, url: str, token: str | None, ns: argparse.Namespace,
                         pid: int | None) -> WorkerSetup:
    """Read the executor's hardware and allow-list; derive what this worker advertises."""
    from stress.service.managed import fetch_json, health_url

    status, body = await fetch_json(health_url(url), timeout=10.0)
    if status != 200 or not isinstance(body, dict):
        raise OSError(f"{health_url(url)} answered HTTP {status}")
    hw = body.get("hardware") or {"cores": os.cpu_count() or 1, "memory_available": 0}
    async with await ExecutorClient.connect(url, token, open_timeout=10.0) as client:
        allow = list((client.session.get("capabilities") or {}).get("allow") or [])
    cap = capacity.derive(hw, slots=ns.slots, gpus=ns.gpus, weight=ns.gpu_weight)
    return WorkerSetup(name, url, token, allow, hw, cap.to_json(), pid)


def resources(setup: WorkerSetup) -> dict[str, float]:
    """Dask resources: slots, GPUs, and one `allow.<program>` per executable it may run."""
    slots = setup.capacity["slots"]
    res: dict[str, float] = {"claude": slots}
    if setup.capacity["gpus"]:
        res["gpu"] = setup.capacity["gpus"]
    for exe in setup.allow:
        res[f"allow.{os.path.basename(exe)}"] = slots
    return res


async def serve(ns: argparse.Namespace) -> int:
    tls = tls_files(ns)
    check_address(ns.scheduler, tls)
    name = ns.name or f"{socket.gethostname()}-{os.getpid()}"
    svc = None
    try:
        if ns.start_executor:
            import tempfile

            from stress.service.managed import ServiceError

            log_dir = Path(ns.log_dir or tempfile.mkdtemp(prefix="stress_worker_"))
            try:
                svc = await start_executor(log_dir)
            except (ServiceError, OSError) as e:
                print(f"stress.worker: cannot start an executor: {str(e).splitlines()[0]} "
                      f"(logs: {log_dir})", file=sys.stderr)
                return EXIT_UNREACHABLE
            url, token, pid = svc.url, svc.token, svc.pid
        else:
            url, token, pid = ns.executor, ns.token, None
        try:
            setup = await executor_setup(name, url, token, ns, pid)
        except (OSError, asyncio.TimeoutError, Exception) as e:  # noqa: BLE001 - one line, exit 3
            print(f"stress.worker: cannot use the executor at {url}: {e}", file=sys.stderr)
            return EXIT_UNREACHABLE
        configure(setup)
        return await join(ns, setup, tls, svc)
    finally:
        if svc is not None:
            await svc.stop()


async def executor_gone(svc: Any, url: str) -> str:
    """Returns (why) once this worker's executor is gone: a started one exited, or a given one's
    `/health` failed EXECUTOR_MISSES times in a row. Runs for the worker's life (cancelled)."""
    from stress.service.managed import fetch_json, health_url

    misses = 0
    while True:
        if svc is not None:
            await asyncio.sleep(EXECUTOR_POLL)
            code = svc.proc.poll()
            if code is not None:
                return f"the executor it started ({url}) exited with code {code}"
            continue
        await asyncio.sleep(EXECUTOR_PROBE)
        try:
            status, _ = await fetch_json(health_url(url), timeout=EXECUTOR_PROBE)
            misses = 0 if status == 200 else misses + 1
        except Exception:  # noqa: BLE001 - any failure to answer is a miss
            misses += 1
        if misses >= EXECUTOR_MISSES:
            return f"the executor at {url} has not answered /health {misses} times in a row"


def join_failure(address: str, name: str, exc: BaseException) -> str:
    """One line for a worker that could not join. Dask wraps what went wrong in "Worker failed
    to start."; a refusal by the scheduler (a name already taken) is a dict's text in there."""
    cause = exc.__cause__ if isinstance(exc, RuntimeError) and exc.__cause__ else exc
    if isinstance(cause, (OSError, asyncio.TimeoutError)):
        return f"cannot reach the scheduler at {address}: {cause}"
    said = re.search(r"'message': '([^']*)'", str(cause))
    return f"the scheduler at {address} refused worker {name}: {said.group(1) if said else cause}"


async def join(ns: argparse.Namespace, setup: WorkerSetup, tls: Any, svc: Any = None) -> int:
    """Run a Dask worker with this setup until a signal, the scheduler, or the loss of its
    executor ends it. A worker without its executor would fail every test sent to it at once,
    and finishing fastest it would draw ever more of them: it leaves the cluster instead, so
    the scheduler places its tests on the others."""
    from distributed import Worker

    _, host, _ = split_address(ns.scheduler)
    listen = "127.0.0.1" if is_loopback(host) else None
    try:
        worker = Worker(ns.scheduler, nthreads=setup.capacity["slots"], resources=resources(setup),
                        name=setup.name, security=security(tls, "worker"), host=listen,
                        dashboard=False, memory_limit=0, death_timeout=CONNECT_TIMEOUT,
                        validate=False)
        await aio.wait_for(worker.start(), CONNECT_TIMEOUT + 5)
    except (OSError, asyncio.TimeoutError, RuntimeError) as e:
        print(f"stress.worker: {join_failure(ns.scheduler, setup.name, e)}", file=sys.stderr)
        return EXIT_UNREACHABLE
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Not waiting for running tests: their jobs end with the executor (stopped next).
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(
            worker.close(reason="signal", executor_wait=False)))
    print(f"stress.worker: {setup.name} joined {ns.scheduler} as {worker.address} with "
          f"{resources(setup)} ({setup.capacity['slots_source']})", flush=True)
    watch = asyncio.ensure_future(executor_gone(svc, setup.url))
    finished = asyncio.ensure_future(worker.finished())
    try:
        await asyncio.wait({watch, finished}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if finished.done():
        return 0
    print(f"stress.worker: {setup.name} leaves the cluster: {watch.result()}", file=sys.stderr,
          flush=True)
    await worker.close(reason="executor gone", executor_wait=False)
    return EXIT_UNREACHABLE


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    bad = ("--slots must be at least 1" if ns.slots is not None and ns.slots < 1 else
           "--gpus must be 0 or more" if ns.gpus is not None and ns.gpus < 0 else
           "--gpu-weight must be a number above 0"
           if ns.gpu_weight is not None and not ns.gpu_weight > 0 else None)
    if bad:
        # A negative count would be advertised as a Dask resource and no test could ever match.
        print(f"stress.worker: {bad}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(serve(ns))
    except ClusterError as e:
        print(f"stress.worker: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 0
