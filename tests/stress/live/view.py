"""`--dashboard [PORT]`: the option, its check, and the live view's life within a run.

The session calls `LiveView.start` before anything else (so the page shows the preflight too),
hands `view.state` to the progress display and the host trace, marks the phases, and calls
`stop` with the finished run (the capacity found, then "finished", which the page shows and
after which it closes its feed). A dashboard that cannot start costs the run nothing: one line
on stderr, and the run goes on.

Imports stress.live.state / server and stress.argtypes.
"""

from __future__ import annotations

import argparse
import socket
import sys
from typing import Any

from stress.argtypes import UsageError
from stress.live.server import HOST, DashboardError, DashboardServer
from stress.live.state import LiveState


def add_dashboard_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dashboard", nargs="?", const=0, default=None, type=int, metavar="PORT",
                   help="serve a live page of the run on http://127.0.0.1:PORT/ (no PORT: any "
                        "free port; the URL is printed): progress, running tests, the timeline, "
                        "the capacity curve")


def check_dashboard(ns: argparse.Namespace) -> None:
    """A port out of range or already taken is a usage error, found before anything starts."""
    port = getattr(ns, "dashboard", None)
    if port is None or port == 0:
        return
    if not 0 < port < 65536:
        raise UsageError(f"--dashboard: not a port: {port} (1-65535, or no value for any free port)")
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError as e:
            raise UsageError(f"--dashboard: port {port} on {HOST} is not free ({e.strerror}); "
                             "pick another, or give no port for any free one") from None


class LiveView:
    """The dashboard of one run: its state (fed by the run) and its server."""

    def __init__(self, state: LiveState, server: DashboardServer) -> None:
        self.state = state
        self.server = server

    @classmethod
    async def start(cls, port: int, title: str, tool: str) -> LiveView | None:
        state = LiveState(title)
        server = DashboardServer(state, port)
        try:
            await server.start()
        except DashboardError as e:
            print(f"{tool}: {e}; running without it", file=sys.stderr, flush=True)
            return None
        print(f"{tool}: dashboard: {server.url}", flush=True)
        return cls(state, server)

    async def stop(self, run: Any) -> None:
        """Show how the run ended, give open pages a moment to receive it, stop serving."""
        c = getattr(run, "capacity", None)
        if c is not None:
            self.state.capacity(c.max_sustainable_concurrency, c.limited_by)
        self.state.set_phase("finished")
        await self.server.stop()


__all__ = ["LiveView", "add_dashboard_option", "check_dashboard"]
