"""Reach the run's Dask scheduler, or start `local:N`: a scheduler in this process and N
`python -m stress.worker --start-executor` processes, each with its own executor.

Why workers are our own processes even on one box: each must supervise its own executor (the
test runs there, through `cc_executor.client`), advertise its resources from that executor's
hardware and allow-list, and be killable as a process group, exactly like a worker on another
host. The scheduler settings the fleet relies on (`dask.yaml` beside this module) are applied
here for `local:N`; an external scheduler is started with that file (docs/scale.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cc_executor import aio
from stress.cluster.security import ClusterError, TlsFiles, check_address, security

CONFIG_FILE = Path(__file__).with_name("dask.yaml")
CONNECT_TIMEOUT = 10.0
"""Seconds to reach an external scheduler (--cluster-timeout) before exit 3."""
WORKER_WAIT = 60.0
"""Seconds for the workers (local:N) or a first worker (external) to join."""
STOP_WAIT = 20.0
MAX_LOCAL = 16


@dataclass(frozen=True)
class ClusterSpec:
    """--cluster as given: an external scheduler's address, or `local:N`."""

    address: str | None = None
    local: int | None = None

    @property
    def text(self) -> str:
        return self.address or f"local:{self.local}"


def parse_cluster(text: str) -> ClusterSpec:
    """`tcp://HOST:PORT`, `tls://HOST:PORT` or `local:N`; ClusterError naming the problem."""
    if text.startswith("local:"):
        n = text[len("local:"):]
        if not n.isdigit() or not 1 <= int(n) <= MAX_LOCAL:
            raise ClusterError(f"--cluster {text!r}: local:N needs N from 1 to {MAX_LOCAL}")
        return ClusterSpec(local=int(n))
    from stress.cluster.security import split_address

    split_address(text)
    return ClusterSpec(address=text)


def scheduler_settings(steal: bool, retries: int | None = None) -> dict[str, Any]:
    """dask.yaml's settings (as dotted keys), with --no-steal and --retries applied."""
    import yaml

    data = yaml.safe_load(CONFIG_FILE.read_text())["distributed"]["scheduler"]
    flat = {f"distributed.scheduler.{k}": v for k, v in data.items()}
    flat["distributed.scheduler.work-stealing"] = steal
    if retries is not None:
        flat["distributed.scheduler.allowed-failures"] = retries
    return flat


@dataclass
class Fleet:
    """A connected Dask client, and what this run started (local:N) to stop at the end."""

    spec: ClusterSpec
    client: Any
    address: str
    dashboard: str | None = None
    cluster: Any = None
    procs: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def kill_now(self) -> None:
        for p in self.procs:
            _signal_group(p, signal.SIGKILL)

    async def close(self) -> None:
        """Close the client; stop our workers (SIGTERM, bounded wait, SIGKILL of the group)."""
        try:
            await aio.wait_for(self.client.close(), 10)
        except (asyncio.TimeoutError, OSError, Exception):  # noqa: BLE001 - best effort
            pass
        for p in self.procs:
            _signal_group(p, signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT
        while any(p.poll() is None for p in self.procs) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for p in self.procs:
            if p.poll() is None:
                _signal_group(p, signal.SIGKILL)
                p.wait(5)
        if self.cluster is not None:
            try:
                await aio.wait_for(self.cluster.close(), 10)
            except (asyncio.TimeoutError, OSError, Exception):  # noqa: BLE001 - best effort
                pass


def _signal_group(p: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


async def connect(spec: ClusterSpec, tls: TlsFiles | None, *, timeout: float) -> Fleet:
    """A client of the external scheduler; ClusterError (one line naming it) when unreachable."""
    from distributed import Client

    assert spec.address is not None
    check_address(spec.address, tls)
    try:
        client = await aio.wait_for(
            Client(spec.address, asynchronous=True, security=security(tls, "client"),
                   timeout=timeout, set_as_default=False), timeout + 5)
    except (OSError, asyncio.TimeoutError, TimeoutError) as e:
        raise ClusterError(f"cannot reach the Dask scheduler at {spec.address}: "
                           f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return Fleet(spec, client, spec.address, dashboard=await _dashboard(client))


async def _dashboard(client: Any) -> str | None:
    """The scheduler's dashboard page when it serves one (its HTTP port also answers without
    bokeh, for /health and /metrics, so the page itself is asked for)."""
    from stress.cluster.security import split_address
    from stress.service.managed import fetch_json

    try:
        port = (client.scheduler_info().get("services") or {}).get("dashboard")
        if not port:
            return None
        url = f"http://{split_address(client.scheduler.address)[1]}:{port}/status"
        status, _ = await fetch_json(url, timeout=3.0)
    except Exception:  # noqa: BLE001 - the dashboard is optional
        return None
    return url if status == 200 else None


async def start_local(spec: ClusterSpec, *, steal: bool, report_dir: Path,
                      worker_env: dict[str, str], retries: int | None = None) -> Fleet:
    """`local:N`: a scheduler in this process with the fleet's settings, and N workers."""
    import dask
    from distributed import Client, LocalCluster

    dask.config.set(scheduler_settings(steal, retries))
    try:
        import bokeh  # noqa: F401 - the dashboard is optional
        dash: str | None = "127.0.0.1:0"
    except ImportError:
        dash = None
    cluster = await LocalCluster(n_workers=0, processes=False, protocol="tcp://", host="127.0.0.1",
                                 scheduler_port=0,
                                 dashboard_address=dash, asynchronous=True,
                                 silence_logs=logging.ERROR)
    client = await Client(cluster, asynchronous=True, set_as_default=False)
    fleet = Fleet(spec, client, cluster.scheduler_address, cluster=cluster)
    fleet.dashboard = cluster.dashboard_link if dash else None
    try:
        for k in range(1, (spec.local or 1) + 1):
            fleet.procs.append(_spawn_worker(fleet.address, f"local-{k}", report_dir, worker_env, fleet))
        await wait_for_workers(fleet, spec.local or 1, WORKER_WAIT)
    except BaseException:
        await fleet.close()
        raise
    return fleet


def _spawn_worker(address: str, name: str, report_dir: Path, env_extra: dict[str, str],
                  fleet: Fleet) -> subprocess.Popen:
    logs = report_dir / "logs" / name
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, **env_extra)
    here = Path(__file__).resolve().parents[2]  # tests/ (the `stress` package's folder)
    src = here.parent / "src"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src), str(here), env.get("PYTHONPATH")) if p)
    out = logs / "worker.log"
    fleet.logs.append(out)
    with open(out, "wb") as f:
        return subprocess.Popen([sys.executable, "-m", "stress.worker", address, "--start-executor",
                                 "--name", name, "--log-dir", str(logs)],
                                stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)


async def wait_for_workers(fleet: Fleet, n: int, timeout: float) -> int:
    """Poll until `n` workers joined (bounded); ClusterError naming why not."""
    deadline = time.monotonic() + timeout
    while True:
        count = len(await workers_now(fleet.client))
        if count >= n:
            return count
        dead = [p for p in fleet.procs if p.poll() is not None]
        if dead:
            log = fleet.logs[fleet.procs.index(dead[0])]
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
            raise ClusterError(f"a worker exited with code {dead[0].returncode} before joining "
                               f"{fleet.address}: {' '.join(tail) or 'no output'} (log: {log})")
        if time.monotonic() >= deadline:
            raise ClusterError(f"{count} of {n} worker(s) joined the scheduler at {fleet.address} "
                               f"within {timeout:g} s")
        await asyncio.sleep(0.2)


async def workers_now(client: Any) -> dict[str, Any]:
    """The scheduler's workers now (address -> info), asked of the scheduler itself."""
    info = await client.scheduler.identity()
    return dict(info.get("workers") or {})
