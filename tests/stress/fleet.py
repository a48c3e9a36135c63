"""The service of one run: which one (from the options), starting, checking and stopping it.

Owns: turning `--server URL` / `--token` into a `ServerSpec`, `ServiceFleet` (the one managed or
remote service, handled alike), `build_fleet`, and the report's description of the service.
Several services are a Dask cluster now (`--cluster`, stress.cluster), not a fleet of these.

Why apart from the session: the session must start, signal and stop the service the same way
whichever kind it is, and the option parsing here is also what `stress.cli` checks before
anything starts (a bad --server is a usage error, exit 2).

Must not import `stress.cli` or `stress.session` (they import this module).
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from stress.argtypes import UsageError, split_server
from stress.run.plan import executables
from stress.run.runner import Planned
from stress.service.managed import ManagedService, RemoteService, ServiceError
from stress.service.modelmode import plan_needs
from stress.service.preflight import AccessCheck, access_refusal, check_access


@dataclass(frozen=True)
class ServerSpec:
    """Where the run's service listens, with its token and the name reports give it."""

    url: str
    token: str | None
    name: str


def server_specs(ns: argparse.Namespace) -> list[ServerSpec]:
    """--server URL with --token (one remote service; the multi-server forms are refused by
    stress.cluster.options before this runs)."""
    url, _, _ = split_server(ns.server[0])
    token = ns.token
    for item in ns.server_token:
        if not item.startswith(url + "="):
            raise UsageError(f"--server-token: {item.split('=', 1)[0]!r} is not the --server URL "
                             f"({url}); expected URL=TOKEN")
        token = item[len(url) + 1:]
    return [ServerSpec(url, token, url)]


class ServiceFleet:
    """The service of one run (managed or remote), as a list of one.

    Why an object of its own: the session starts, signals and stops the service the same way
    whichever kind it is; a remote one that cannot be reached, or refuses its token, stops the
    run with one message, as a managed one that does not start does.
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

    def note_job(self, pid: int | None) -> None:
        for sv in self.services:
            sv.note_job(pid)

    def kill_now(self) -> None:
        for sv in self.services:
            sv.kill_now()

    async def stop(self) -> list[Any]:
        return list(await asyncio.gather(*(sv.stop() for sv in self.services)))


def build_fleet(ns: argparse.Namespace, plan: list[Planned], report_dir: Path) -> ServiceFleet:
    """The remote service of --server, or the managed one to start, allowed exactly the
    executables the plan needs."""
    if ns.server:
        specs = server_specs(ns)
        return ServiceFleet(specs, [RemoteService(sp.url, sp.token) for sp in specs])
    # IS_SANDBOX is the service's decision, never a job's (it lets the CLI skip permissions as
    # root): a plan that skips permissions as root gets a service configured for it.
    service_env = {"CC_EXECUTOR_IS_SANDBOX": "1"} if plan_needs(plan)["skip_permissions"] else None
    service = ManagedService(allow=executables(plan), log_dir=report_dir / "logs",
                             max_load=ns.max_load, env=service_env)
    # A placeholder URL until the service prints its own (ServiceFleet.start fills it in).
    return ServiceFleet([ServerSpec("ws://127.0.0.1:0/ws", None, "server-1")], [service])


def describe_services(fleet: ServiceFleet, plan: list[Planned]) -> dict[str, Any]:
    """report.json's `service`: the one service."""
    svc = fleet.live()[0][1]
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
