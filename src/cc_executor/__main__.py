"""`python -m cc_executor`: serve the executor on 127.0.0.1:8004 and print its WebSocket URL.

Every setting is a flag (generated from `settings` by `settings_cli`), which overrides the
environment, which overrides `.env`. A non-loopback `--host` without a token stops here, before
anything is bound. SIGTERM/SIGINT end every job's tree, tell connected clients
(`process.completed`, reason `shutdown`), then exit 0; a second SIGINT forces the exit.

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
import errno
import faulthandler
import ipaddress
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable

import uvicorn

from . import aio
from .policy.limits import preflight as containment_preflight
from .settings import Settings
from .settings_cli import build_parser, build_settings, explain


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_listener(host: str, port: int) -> list[socket.socket] | str:
    """The service's listening sockets, bound and listening (SO_REUSEADDR, as uvicorn would),
    one per address `host` resolves to (`localhost`: `::1` and `127.0.0.1` where both exist),
    all on one port; or one line saying why they cannot be (in use, not allowed) naming the
    flag to change, rather than a traceback from inside the server's start-up.

    Bound here, not by `loop.create_server(host=...)`: uvloop resolves the host on libuv's
    thread pool, whose four threads then stay in the service for good, and every thread makes
    each job's spawn dearer (the service steps into the job's cgroup for it, and a process
    moves between cgroups with all its threads: ~7 us a thread, twice a job). Listening at
    once also makes a port taken meanwhile fail here (two sockets may bind one port with
    SO_REUSEADDR; only one may listen)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as e:
        return f"cannot resolve --host {host!r}: {e}"
    socks: list[socket.socket] = []
    seen = set()
    try:
        for family, kind, proto, _, addr in infos:
            if (family, addr[0]) in seen:
                continue
            seen.add((family, addr[0]))
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # this address only, as asyncio's create_server does
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if len(socks) > 1:  # port 0: every address on the port the first one got
                addr = (addr[0], socks[0].getsockname()[1], *addr[2:])
            sock.bind(addr)
            sock.listen(2048)
    except OSError as e:
        for sock in socks:
            sock.close()
        if e.errno == errno.EADDRINUSE:
            return (f"port {port} on {host} is already in use: choose another with "
                    f"--port N (or CC_EXECUTOR_PORT); --port 0 picks a free one")
        if e.errno == errno.EACCES:
            return (f"not allowed to listen on port {port} on {host}: choose a port "
                    f"above 1023 with --port N")
        return f"cannot listen on {host}:{port} (--host, --port): {e.strerror}"
    return socks


def setup_console_log(level: str) -> None:
    """The service's own log lines (refused upgrades, runs ended at start, bugs) on stderr at
    `--log-level`; uvicorn's stay at warning unless debug is asked for."""
    logger = logging.getLogger("cc_executor")
    logger.setLevel(level.upper())
    if not any(getattr(h, "_cc_console", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("cc_executor: %(levelname)s %(message)s"))
        handler._cc_console = True
        logger.addHandler(handler)
    logger.propagate = False


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags: one per setting, generated from `Settings` (see `settings_cli`)."""
    return build_parser(description=__doc__.splitlines()[0]).parse_args(argv)


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
            print(f"cc_executor: SIGHUP: settings not reloaded: {explain(e)}", file=sys.stderr,
                  flush=True)
            return
        changed = service.apply_throttle(new)
        shown = ", ".join(f"{k} {v['from']} -> {v['to']}" for k, v in changed.items())
        print(f"cc_executor: SIGHUP: {shown or 'no throttle setting changed'}",
              file=sys.stderr, flush=True)

    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, on_hup)


async def serve(settings: Settings, listeners: list[socket.socket],
                reload: Callable[[], Settings] | None = None) -> int:
    from .server import create_app  # noqa: PLC0415 - keep `--help` fast

    app = create_app(settings)
    reload_on_sighup(app, reload or (lambda: settings))
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="debug" if settings.log_level == "debug" else "warning",
        lifespan="on",
        ws_max_size=settings.max_frame * 4,
        ws_ping_interval=settings.ping_interval,
        ws_ping_timeout=settings.ping_timeout,
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=settings.kill_grace + 15,
    )
    server = _Server(config, app)
    task = asyncio.ensure_future(server.serve(sockets=listeners))
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
        print(f"cc_executor: invalid setting: {explain(e)}", file=sys.stderr)
        return 2
    if not is_loopback(settings.host) and not settings.token:
        print(f"cc_executor: refusing to listen on non-loopback host {settings.host!r} without a "
              "token; set --token or CC_EXECUTOR_TOKEN", file=sys.stderr)
        return 2
    listeners = bind_listener(settings.host, settings.port)
    if isinstance(listeners, str):
        print(f"cc_executor: {listeners}", file=sys.stderr)
        return 2
    problem = containment_preflight(settings)
    if problem:
        for sock in listeners:
            sock.close()
        print(f"cc_executor: refusing to start: {problem}", file=sys.stderr)
        return 2
    setup_console_log(settings.log_level)
    if not _stderr_faulthandler(faulthandler.register, signal.SIGUSR1):
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # nowhere to print: still not fatal
    try:
        import uvloop  # noqa: PLC0415
        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    return runner(serve(settings, listeners, lambda: build_settings(ns)))


if __name__ == "__main__":
    sys.exit(main())
