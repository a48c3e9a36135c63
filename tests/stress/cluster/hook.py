"""The session's entry for `--cluster`: reach or start the cluster, run the plan, report.

Why a separate path rather than a kind of service: a cluster run talks to no executor itself
(each worker reaches its own), so the single-host phases (start the service, check its token and
allow-list, the Claude preflight through it) become: reach the scheduler (one line naming the
address and exit 3 when it cannot), learn the workers and route each test to those that can run
it, then submit. The report's `service` names the scheduler and its dashboard, `servers` has one
row per worker (mode `cluster`).
"""

from __future__ import annotations

import sys
from typing import Any

from stress.cluster.connect import (
    CONNECT_TIMEOUT,
    parse_cluster,
    start_local,
    wait_for_workers,
)
from stress.cluster.fleet_run import WORKER_WAIT
from stress.cluster.security import ClusterError, tls_files
from stress.exits import EarlyStop
from stress.report.progress import Progress
from stress.run.plan import count_runs, executables, unmet_requirement
from stress.run.runner import CLAUDE_CAPABILITY, Runner, RunOptions
from stress.service.modelmode import plan_needs


async def run_cluster(s: Any, model: Any) -> None:
    """Run the session's plan on the cluster named by --cluster (s is a stress.session.Session)."""
    from dataclasses import replace

    from stress.cluster.fleet_run import HARDWARE_WORDS, FleetRun

    ns = s.ns
    fleet = await _open(s)
    s.service = fleet
    caps = set(model.provides) | {CLAUDE_CAPABILITY, *HARDWARE_WORDS}
    s.plan = [replace(p, skip=unmet_requirement(p, caps, model.label, "")) for p in s.plan]
    s.run.environment["capabilities"] = sorted(set(model.provides) | {CLAUDE_CAPABILITY})
    s.run.environment["claude"] = ("checked by each worker's allow-list (no preflight on a cluster)"
                                   if any(p.uses_claude for p in s.plan) else "not used")
    s.run.service.update({"kind": "cluster", "url": fleet.address, "pid": None, "argv": [],
                          "version": None, "allow": None, "scheduler": fleet.address,
                          "dashboard": fleet.dashboard, "cluster": fleet.spec.text})
    s.progress = Progress(count_runs(s.plan), quiet=ns.quiet,
                          listener=s.live.state if getattr(s, "live", None) else None)
    if getattr(s, "live", None):
        s.live.state.set_phase("running tests", count_runs(s.plan))
    for p in s.plan:  # counted now, as the summary counts them (stress.report.progress)
        if p.skip is not None:
            s.progress.skipped(p.test.id, p.skip, p.repeat)
    s.runner = Runner("", None, s.plan, s.report_dir,
                      RunOptions(concurrency=1, fail_fast=ns.fail_fast, model_env=model.env,
                                 halt=s.halt, resume=False), progress=s.progress)
    if fleet.dashboard and not ns.quiet:
        print(f"{s.tool}: Dask dashboard: {fleet.dashboard}", flush=True)
    run = FleetRun(s.runner, fleet, s.run.run_id, s.progress,
                   worker_wait=ns.worker_wait or WORKER_WAIT)
    await s.phase(run.run())
    s.plan = s.runner.plan
    s.run.outcomes = s.runner.outcomes()
    s.runner.fleet_stats = await run.stats()
    retried = s.runner.fleet_stats.get("retried") or []
    if retried and not ns.quiet:
        print(f"{s.tool}: retried after a worker was lost: {', '.join(retried)}", flush=True)


async def _open(s: Any) -> Any:
    """The cluster: an external scheduler (exit 3 when unreachable or without workers) or
    local:N started here (exit 1 when it cannot start)."""
    ns = s.ns
    try:
        spec = parse_cluster(ns.cluster)
        tls = tls_files(ns)
        if spec.local is not None:
            env = {"CC_EXECUTOR_ALLOW": ",".join(executables(s.plan))}
            if plan_needs(s.plan)["skip_permissions"]:
                env["CC_EXECUTOR_IS_SANDBOX"] = "1"
            return await s.phase(start_local(spec, steal=not ns.no_steal, retries=ns.retries,
                                             report_dir=s.report_dir, worker_env=env))
        from stress.cluster.connect import connect

        fleet = await s.phase(connect(spec, tls, timeout=ns.cluster_timeout or CONNECT_TIMEOUT))
        s.service = fleet
        await s.phase(wait_for_workers(fleet, 1, ns.worker_wait or WORKER_WAIT))
        return fleet
    except ClusterError as e:
        print(f"{s.tool}: {e}", file=sys.stderr, flush=True)
        kind = EarlyStop.SERVICE if ns.cluster.startswith("local:") else EarlyStop.PREFLIGHT
        s.stop_early(kind, f"cluster: {e}")
