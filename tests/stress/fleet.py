"""The services of one run: which ones (from the options), starting, checking and stopping them.

Owns: turning `--server URL[@W[:C]]` / `--token` / `--server-token` and `--servers N` /
`--weights` into `stress.dispatch.ServerSpec`s, `ServiceFleet` (one managed or remote service,
or several, handled alike), `build_fleet`, the rejoin probe of a lost server, and the report's
description of each service.

Why apart from the session: the session must start, signal and stop every service the same
way whatever their number, and the option parsing here is also what `stress.cli` checks before
anything starts (a bad --server is a usage error, exit 2).

Must not import `stress.cli` or `stress.session` (they import this module).
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

from stress.argtypes import UsageError, parse_weight, split_server
from stress.dispatch import ServerSpec, server_allows, unfit_servers
from stress.run.plan import executables
from stress.run.runner import Planned
from stress.service.managed import (
    ManagedService,
    RemoteService,
    ServiceError,
    fetch_json,
    health_url,
)
from stress.service.modelmode import plan_needs
from stress.service.preflight import AccessCheck, access_refusal, check_access


def concurrencies(weights: list[float], given: list[int | None], base: int) -> list[int]:
    """A server without an explicit concurrency runs `base` x its weight / the smallest weight
    tests at once (rounded, at least 1), so throughput follows the weights on similar hosts."""
    lightest = min(weights)
    return [c if c is not None else max(1, round(base * w / lightest)) for w, c in zip(weights, given)]


def server_specs(ns: argparse.Namespace) -> list[ServerSpec]:
    """--server URL[@W[:C]] (repeatable) with --token / --server-token URL=TOKEN."""
    parsed = [split_server(t) for t in ns.server]
    urls = [u for u, _, _ in parsed]
    dup = sorted({u for u in urls if urls.count(u) > 1})
    if dup:
        raise UsageError(f"--server given twice: {', '.join(dup)}")
    tokens: dict[str, str] = {}
    for item in ns.server_token:
        url = next((u for u in sorted(urls, key=len, reverse=True) if item.startswith(u + "=")), None)
        if url is None:
            shown = item.split("=", 1)[0]
            raise UsageError(f"--server-token: {shown!r} is not one of the --server URLs "
                             f"({', '.join(urls) or 'none given'}); expected URL=TOKEN")
        tokens[url] = item[len(url) + 1:]
    weights = [w if w is not None else 1.0 for _, w, _ in parsed]
    conc = concurrencies(weights, [c for _, _, c in parsed], ns.concurrency or 1)
    return [ServerSpec(u, tokens.get(u, ns.token), w, c, name=u)
            for (u, _, _), w, c in zip(parsed, weights, conc)]


def local_weights(ns: argparse.Namespace) -> list[tuple[float, int]]:
    """--servers N [--weights W[:C],...] -> (weight, concurrency) per local service."""
    n = ns.servers or 1
    if ns.weights is None:
        return [(1.0, ns.concurrency or 1)] * n
    parts = [p for p in ns.weights.split(",")]
    if len(parts) != n:
        raise UsageError(f"--weights: {len(parts)} weights for --servers {n}; give one per server")
    pairs = [parse_weight(p, "--weights") for p in parts]
    weights = [w for w, _ in pairs]
    return list(zip(weights, concurrencies(weights, [c for _, c in pairs], ns.concurrency or 1)))


class ServiceFleet:
    """The services of one run: one (managed or remote, as before) or several.

    Why a fleet object: the session must start, signal and stop every service the same way
    whatever their number; a remote service that cannot be reached at the start, or refuses its
    token while another accepts, is left out of the rotation (and reported) rather than failing
    the whole run, while a managed one that does not start is our own fault and stops the run.
    """

    def __init__(self, specs: list[ServerSpec], services: list[Any]) -> None:
        self.specs = specs
        self.services = services
        self.errors: list[str | None] = [None] * len(services)

    @property
    def managed(self) -> bool:
        return bool(self.services) and self.services[0].managed

    def live(self) -> list[tuple[ServerSpec, Any]]:
        return [(sp, sv) for sp, sv, err in zip(self.specs, self.services, self.errors) if err is None]

    async def start(self) -> None:
        results = await asyncio.gather(*(sv.start() for sv in self.services), return_exceptions=True)
        for i, r in enumerate(results):
            if isinstance(r, BaseException):
                if not isinstance(r, ServiceError | OSError):
                    await self.stop()
                    raise r
                self.errors[i] = str(r)
        failed = [f"{sp.name}: {err}" for sp, err in zip(self.specs, self.errors) if err]
        if failed and (self.managed or not self.live()):
            await self.stop()
            raise ServiceError("; ".join(failed))
        # Tokens of managed services are only known now.
        self.specs = [replace(sp, url=sv.url or sp.url, token=sv.token)
                      if sv.managed else sp for sp, sv in zip(self.specs, self.services)]

    async def check_access(self) -> list[AccessCheck] | None:
        """Remote servers: one authenticated connection each (a wrong token would otherwise fail
        every test alike, "HTTP 401"). A server that refuses it is left out while another server
        accepts, as an unreachable one is; None then. When none accepts, the failed checks (the
        run stops with one message, exit 3) and nobody is marked left out."""
        if self.managed:
            return None
        live = [(i, sp) for i, (sp, err) in enumerate(zip(self.specs, self.errors)) if err is None]
        checks = await asyncio.gather(*(check_access(sp.url, sp.token) for _, sp in live))
        if not any(c.ok for c in checks):
            return list(checks)
        for (i, _), c in zip(live, checks):
            if not c.ok:
                self.errors[i] = access_refusal(c)
        return None

    async def leave_out_unfit(self, needed: list[str]) -> None:
        """Several remote servers: leave out one whose allow-list lacks an executable the plan
        needs while another server allows them all (one message, instead of a refusal per test
        it would steal). Managed services allow what the plan needs by construction."""
        live = [(i, sp) for i, (sp, err) in enumerate(zip(self.specs, self.errors)) if err is None]
        if self.managed or len(live) < 2:
            return
        allows = await asyncio.gather(*(server_allows(sp) for _, sp in live))
        unfit = unfit_servers({sp.name: a for (_, sp), a in zip(live, allows)}, needed)
        for i, sp in live:
            if sp.name in unfit:
                self.errors[i] = f"cannot run this plan: {unfit[sp.name]}"

    def note_job(self, pid: int | None) -> None:
        for sv in self.services:
            sv.note_job(pid)

    def kill_now(self) -> None:
        for sv in self.services:
            sv.kill_now()

    async def stop(self) -> list[Any]:
        return list(await asyncio.gather(*(sv.stop() for sv in self.services)))


def build_fleet(ns: argparse.Namespace, plan: list[Planned], report_dir: Path) -> ServiceFleet:
    """The remote services of --server, or the managed ones to start (one, or --servers N),
    each allowed exactly the executables the plan needs."""
    if ns.server:
        specs = server_specs(ns)
        return ServiceFleet(specs, [RemoteService(sp.url, sp.token) for sp in specs])
    pairs = local_weights(ns)
    multi = len(pairs) > 1
    # IS_SANDBOX is the service's decision, never a job's (it lets the CLI skip permissions as
    # root): a plan that skips permissions as root gets services configured for it.
    service_env = {"CC_EXECUTOR_IS_SANDBOX": "1"} if plan_needs(plan)["skip_permissions"] else None
    services, specs = [], []
    for k, (w, c) in enumerate(pairs, 1):
        log_dir = report_dir / "logs" / f"server-{k}" if multi else report_dir / "logs"
        services.append(ManagedService(allow=executables(plan), log_dir=log_dir, max_load=ns.max_load,
                                       env=service_env))
        # A placeholder URL until the service prints its own (ServiceFleet.start fills it in).
        specs.append(ServerSpec("ws://127.0.0.1:0/ws", None, w, c, name=f"server-{k}"))
    return ServiceFleet(specs, services)


async def health_probe(spec: ServerSpec) -> bool:
    """Whether a lost server answers /health again (the dispatcher's rejoin probe)."""
    status, body = await fetch_json(health_url(spec.url), timeout=5.0)
    return status == 200 and isinstance(body, dict) and body.get("status") == "ok"


def service_json(spec: ServerSpec, svc: Any, plan: list[Planned], err: str | None) -> dict[str, Any]:
    """One service as report.json's `service.servers[]` shows it (left out: `error` says why)."""
    return {"name": spec.name, "kind": "managed" if svc.managed else "remote", "url": svc.url,
            "pid": svc.pid, "argv": svc.describe_argv(), "version": svc.health.get("version"),
            "allow": executables(plan) if svc.managed else None, "weight": spec.weight,
            "concurrency": spec.concurrency, "error": err}


def describe_services(fleet: ServiceFleet, plan: list[Planned]) -> dict[str, Any]:
    """report.json's `service`: the one service, or a summary of several with `servers[]`."""
    svc = fleet.live()[0][1]
    if len(fleet.services) > 1:
        return {
            "kind": "managed" if fleet.managed else "remote", "url": None, "pid": None,
            "argv": [], "version": svc.health.get("version"),
            "allow": executables(plan) if fleet.managed else None,
            "servers": [service_json(sp, sv, plan, err) for sp, sv, err
                        in zip(fleet.specs, fleet.services, fleet.errors)],
        }
    return {
        "kind": "managed" if svc.managed else "remote", "url": svc.url, "pid": svc.pid,
        "argv": svc.describe_argv(), "version": svc.health.get("version"),
        "allow": executables(plan) if svc.managed else None,
    }


def stop_json(info: Any) -> dict[str, Any]:
    """How one service stopped, for report.json's `service.stop` / `servers[].stop`."""
    return {"how": info.how, "exit_code": info.exit_code, "seconds": info.seconds,
            "leftovers_killed": info.leftovers_killed,
            **({"stderr_tail": info.stderr_tail} if info.stderr_tail is not None else {})}
