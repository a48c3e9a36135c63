"""`python -m cc_executor`: serve the executor on 127.0.0.1:8004 and print its WebSocket URL.

Flags override the environment and `.env` (see `settings`). A non-loopback `--host` without a
token stops here, before anything is bound. SIGTERM/SIGINT end every job's tree, tell connected
clients (`process.completed`, reason `shutdown`), then exit 0; a second SIGINT forces the exit.

SIGHUP reloads the admission settings without a restart: the settings are resolved again exactly
as at start (flags, then the environment, then the `--env-file` file, which is re-read), and the
throttle fields (`max_load`, `min_free_mem`, `throttle`, `queue_timeout`) are applied to the
running service, which then re-checks its queue at once. Everything else (host, port, token,
allow-list, limits) needs a restart. The change is written to the event log (`event: reload`,
old and new values; no secrets among them). An invalid file leaves the settings as they were and
says why on stderr. So an operator can queue work behind `CC_EXECUTOR_MAX_LOAD` in `.env`, edit
the file, `kill -HUP <pid>`, and the queue drains.

SIGUSR1 prints every thread's stack on stderr (faulthandler) and changes nothing: a supervisor
sends it before a SIGKILL, so that a service that would not stop leaves a trace of why.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import ipaddress
import os
import signal
import sys
from collections.abc import Callable

import uvicorn

from . import aio
from .settings import Settings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m cc_executor", description=__doc__.splitlines()[0])
    p.add_argument("--host", help="address to bind (CC_EXECUTOR_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port; 0 picks a free one (CC_EXECUTOR_PORT, 8004)")
    p.add_argument("--token", help="bearer token required to connect (CC_EXECUTOR_TOKEN)")
    p.add_argument("--allow", action="append", metavar="CMD",
                   help="allow this executable too; repeatable (CC_EXECUTOR_ALLOW, default claude)")
    p.add_argument("--shell", action="store_true", default=None,
                   help="run `command` strings through sh -c: UNSAFE (CC_EXECUTOR_SHELL=1)")
    p.add_argument("--allow-origin", action="append", metavar="ORIGIN",
                   help="accept WebSocket upgrades from this browser Origin; repeatable")
    p.add_argument("--log-dir", help="job event logs (CC_EXECUTOR_LOG_DIR, default logs)")
    p.add_argument("--run-dir", help="live-run registry (CC_EXECUTOR_RUN_DIR)")
    p.add_argument("--max-load", help="queue jobs above this 1-min load: 8 or 2/core")
    p.add_argument("--min-free-mem", help="queue jobs below this free memory, e.g. 512M")
    p.add_argument("--no-throttle", action="store_true", help="never queue for host load")
    p.add_argument("--kill-grace", type=float, help="seconds between SIGTERM and SIGKILL")
    p.add_argument("--progress-interval", type=float, metavar="SECONDS",
                   help="send process.progress after this long without a frame for a job; "
                   "0 disables (CC_EXECUTOR_PROGRESS_INTERVAL, default 5)")
    p.add_argument("--env-file", default=".env", help="dotenv file to read (default .env)")
    return p.parse_args(argv)


def build_settings(ns: argparse.Namespace) -> Settings:
    overrides = {
        "host": ns.host, "port": ns.port, "token": ns.token, "shell": ns.shell,
        "log_dir": ns.log_dir, "run_dir": ns.run_dir, "max_load": ns.max_load,
        "min_free_mem": ns.min_free_mem, "kill_grace": ns.kill_grace,
        "progress_interval": ns.progress_interval,
    }
    if ns.no_throttle:
        overrides["throttle"] = False
    base = Settings.from_env(dotenv_path=ns.env_file)
    if ns.allow:
        overrides["allow"] = [*base.allow, *ns.allow]
    if ns.allow_origin:
        overrides["allow_origin"] = [*base.allow_origin, *ns.allow_origin]
    return Settings.from_env(dotenv_path=ns.env_file, **overrides)


class _Server(uvicorn.Server):
    """First SIGTERM/SIGINT: end the jobs and tell their clients, then stop serving."""

    def __init__(self, config: uvicorn.Config, app):
        super().__init__(config)
        self._app = app
        self._ending = False
        self._graceful_task: asyncio.Task | None = None

    def handle_exit(self, sig: int, frame) -> None:
        if self._ending:
            if sig == signal.SIGINT:
                self.force_exit = True
            return
        self._ending = True
        loop = asyncio.get_event_loop()
        loop.call_soon_threadsafe(self._start_graceful, loop)

    def _start_graceful(self, loop: asyncio.AbstractEventLoop) -> None:
        # Keep a reference: the loop holds tasks only weakly, and a collected task would never
        # set should_exit (the server would then ignore SIGTERM).
        self._graceful_task = loop.create_task(self._graceful())

    async def _graceful(self) -> None:
        grace = self._app.state.service.settings.kill_grace
        try:
            # A shutdown that should take about the kill grace and is still going well after it
            # says where it is stuck, on stderr, before a supervisor's SIGKILL erases the
            # evidence: the tasks' await chains if the loop still turns, every thread's stack
            # in any case.
            asyncio.get_running_loop().call_later(grace + 8, dump_tasks, "shutdown")
            _stderr_faulthandler(faulthandler.dump_traceback_later, grace + 9)
            await aio.wait_for(self._app.state.service.stop(), grace + 20)
        except asyncio.TimeoutError:
            print("cc_executor: shutdown took too long; exiting anyway", file=sys.stderr)
        finally:
            self.should_exit = True


def _stderr_faulthandler(arm: Callable[..., None], *args) -> bool:
    """Point a faulthandler dump at stderr, if stderr is a real file (it may be closed, or a
    stream without a descriptor); a diagnostic never stops the service from serving."""
    try:
        arm(*args, file=sys.stderr)
    except (AttributeError, OSError, RuntimeError, ValueError):
        return False
    return True


def await_chain(task: asyncio.Task) -> list[str]:
    """Where a task is suspended, outermost frame first, following each `await` down to the
    innermost coroutine (Task.print_stack shows only the outermost one). The future it waits
    on is in the task's repr."""
    lines: list[str] = []
    coro = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        code = frame.f_code
        lines.append(f"  {code.co_filename}:{frame.f_lineno} in {code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return lines


def dump_tasks(why: str) -> None:
    """Every asyncio task's await chain, to stderr."""
    if sys.stderr is None:  # started without one; print(file=None) would write to stdout
        return
    try:
        print(f"cc_executor: {why} is slow; its tasks:", file=sys.stderr)
        for task in asyncio.all_tasks():
            print(f"--- {task!r}", file=sys.stderr)
            print("\n".join(await_chain(task)), file=sys.stderr)
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):  # no usable stderr
        pass


def reload_on_sighup(app, reload: Callable[[], Settings]) -> None:
    """SIGHUP: re-resolve the settings and apply the throttle fields (see the module doc)."""
    service = app.state.service

    def on_hup() -> None:
        try:
            new = reload()
        except ValueError as e:
            print(f"cc_executor: SIGHUP: settings not reloaded: {e}", file=sys.stderr, flush=True)
            return
        changed = service.apply_throttle(new)
        shown = ", ".join(f"{k} {v['from']} -> {v['to']}" for k, v in changed.items())
        print(f"cc_executor: SIGHUP: {shown or 'no throttle setting changed'}",
              file=sys.stderr, flush=True)

    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, on_hup)


async def serve(settings: Settings, reload: Callable[[], Settings] | None = None) -> int:
    from .server import create_app  # noqa: PLC0415 - keep `--help` fast

    app = create_app(settings)
    reload_on_sighup(app, reload or (lambda: settings))
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        lifespan="on",
        ws_max_size=settings.max_frame * 4,
        ws_ping_interval=settings.ping_interval,
        ws_ping_timeout=settings.ping_timeout,
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=settings.kill_grace + 15,
    )
    server = _Server(config, app)
    task = asyncio.ensure_future(server.serve())
    while not server.started and not task.done():
        await asyncio.wait({task}, timeout=0.01)
    if task.done():
        task.result()
        return 1
    sock = server.servers[0].sockets[0]
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"ws://{shown}:{port}/ws", flush=True)
    await task
    return 0


def fill_standard_fds() -> None:
    """Open /dev/null on stdin, stdout or stderr if the service was started with one closed
    (`2>&-`). Otherwise the next socket takes that number, and libuv (uvloop) aborts the whole
    service when it closes a descriptor <= 2 at shutdown, as it deliberately does."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            # The lowest free number is `fd` itself: every lower one is open by now.
            os.open(os.devnull, os.O_RDWR)


def main(argv: list[str] | None = None) -> int:
    fill_standard_fds()
    ns = parse_args(argv)
    try:
        settings = build_settings(ns)
    except ValueError as e:
        print(f"cc_executor: invalid setting: {e}", file=sys.stderr)
        return 2
    if not is_loopback(settings.host) and not settings.token:
        print(f"cc_executor: refusing to listen on non-loopback host {settings.host!r} without a "
              "token; set --token or CC_EXECUTOR_TOKEN", file=sys.stderr)
        return 2
    if not _stderr_faulthandler(faulthandler.register, signal.SIGUSR1):
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # nowhere to print: still not fatal
    try:
        import uvloop  # noqa: PLC0415
        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    return runner(serve(settings, lambda: build_settings(ns)))


if __name__ == "__main__":
    sys.exit(main())
