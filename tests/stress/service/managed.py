"""The service under test: started as a subprocess on a free loopback port, or one already running.

Why a subprocess and not an in-process app: the harness must test what users run
(`python -m cc_executor`), talk to it only through the public WebSocket client, and be able to
kill it. The service gets its own session (so a Ctrl-C in the terminal reaches the harness, which
then stops the service in order) and its own random token.

Stopping never hangs and leaves nothing behind: SIGTERM (the service ends every job tree and
exits), a bounded wait, then SIGKILL of its process group; processes that descended from it (job
trees live in their own sessions) are remembered before the kill and ended by pid if they
survive it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from cc_executor import aio
from cc_executor.claude_cli import child_env

START_TIMEOUT = 30.0
"""Seconds for the service to print its URL and answer /health ok."""
STOP_TIMEOUT = 20.0
"""Seconds between SIGTERM and SIGKILL: the service's own kill grace (3 s) plus shutdown work."""


STDERR_TAIL = 16384
"""Bytes of a service's stderr kept in the report when it had to be SIGKILLed."""


class ServiceError(RuntimeError):
    """The service could not be started or reached; the message says why."""


def health_url(ws_url: str) -> str:
    """ws://host:port/ws -> http://host:port/health."""
    parts = urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return f"{scheme}://{parts.netloc}/health"


async def fetch_json(url: str, timeout: float = 2.0) -> tuple[int, Any]:
    """GET `url` (plain HTTP, loopback) -> (status, parsed JSON or text). Bounded by `timeout`."""
    import json

    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ServiceError(f"only http:// health checks are supported, got {url}")
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80

    async def go() -> tuple[int, Any]:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                         "Connection: close\r\nAccept: application/json\r\n\r\n".encode())
            await writer.drain()
            data = await reader.read(1 << 20)
            while True:
                more = await reader.read(1 << 20)
                if not more:
                    break
                data += more
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if b"transfer-encoding: chunked" in head.lower():
            body = _dechunk(body)
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode("utf-8", "replace")

    return await aio.wait_for(go(), timeout)


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2:]
    return out


async def wait_healthy(ws_url: str, timeout: float, alive=lambda: True) -> dict:
    """Poll /health until it answers 200 with status ok; ServiceError after `timeout` seconds."""
    url = health_url(ws_url)
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        if not alive():
            raise ServiceError(f"the service exited while waiting for {url}")
        try:
            status, body = await fetch_json(url, timeout=min(2.0, max(0.1, deadline - time.monotonic())))
            if status == 200 and isinstance(body, dict) and body.get("status") == "ok":
                return body
            last = f"HTTP {status}: {str(body)[:200]}"
        except (OSError, asyncio.TimeoutError, ValueError, IndexError) as e:
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() >= deadline:
            raise ServiceError(f"{url} not healthy after {timeout:g} s ({last})")
        await asyncio.sleep(0.05)


@dataclass
class StopInfo:
    """How the service ended, for the report."""

    how: str  # "sigterm" | "sigkill" | "already exited" | "not started" | "remote"
    exit_code: int | None
    seconds: float
    leftovers_killed: int = 0
    stderr_tail: str | None = None
    """When SIGTERM was not enough: the end of the service's stderr, with the stacks it printed
    on the SIGUSR1 sent before the SIGKILL (the evidence of why it did not stop)."""


class ManagedService:
    """`python -m cc_executor` on 127.0.0.1:<free port> with a random token, as an async context."""

    def __init__(
        self,
        *,
        allow: list[str],
        log_dir: Path,
        max_load: str | None = None,
        env: dict[str, str | None] | None = None,
        extra_args: list[str] | None = None,
        start_timeout: float = START_TIMEOUT,
        stop_timeout: float = STOP_TIMEOUT,
        python: str = sys.executable,
        preexec_fn: Any = None,
    ) -> None:
        self.allow = list(dict.fromkeys(allow))
        self.log_dir = Path(log_dir)
        self.max_load = max_load
        self.env_overrides = dict(env or {})
        self.extra_args = list(extra_args or [])
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.python = python
        self.preexec_fn = preexec_fn
        """Run in the child before exec (a fleet worker's executor: die with the worker)."""
        # Hex, not token_urlsafe: a token starting with '-' is read by argparse as an option
        # (`--token -x...`), and the service would not start (1 time in 64).
        self.token = secrets.token_hex(24)
        self.url: str | None = None
        self.health: dict = {}
        self.proc: psutil.Popen | None = None
        self.run_dir: Path | None = None
        self.stop_info: StopInfo | None = None
        self._known: dict[int, float] = {}  # pid -> create_time of descendants seen

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def managed(self) -> bool:
        return True

    def argv(self) -> list[str]:
        assert self.run_dir is not None
        argv = [self.python, "-m", "cc_executor", "--host", "127.0.0.1", "--port", "0",
                "--token", self.token, "--run-dir", str(self.run_dir), "--log-dir", str(self.log_dir)]
        for name in self.allow:
            argv += ["--allow", name]
        if self.max_load is not None:
            argv += ["--max-load", self.max_load]
        return argv + self.extra_args

    def describe_argv(self) -> list[str]:
        """The command line with the token hidden, for reports."""
        return [("<token>" if a == self.token else a) for a in self.argv()]

    async def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir = Path(tempfile.mkdtemp(prefix="cc_stress_run_"))
        # A harness started from inside Claude Code must not pass that marker to the CLI it tests.
        env = child_env()
        for k, v in self.env_overrides.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        src = Path(__file__).resolve().parents[3] / "src"
        if (src / "cc_executor").is_dir():
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src), env.get("PYTHONPATH")) if p)
        out_path = self.log_dir / "service.stdout"
        with open(out_path, "wb") as out, open(self.log_dir / "service.stderr", "wb") as err:
            self.proc = psutil.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=err, env=env, start_new_session=True,
                                     preexec_fn=self.preexec_fn)
        try:
            self.url = await self._wait_for_url(out_path)
            self.health = await wait_healthy(
                self.url, max(1.0, self.start_timeout), alive=lambda: self.proc.poll() is None)
        except BaseException:
            await self.stop()
            raise

    async def _wait_for_url(self, out_path: Path) -> str:
        deadline = time.monotonic() + self.start_timeout
        while True:
            text = out_path.read_text(errors="replace")
            for line in text.splitlines():
                if line.startswith("ws://"):
                    return line.strip()
            code = self.proc.poll()
            if code is not None:
                err = (self.log_dir / "service.stderr").read_text(errors="replace").strip()
                raise ServiceError(f"the service exited with code {code} before listening"
                                   + (f": {err[-2000:]}" if err else ""))
            if time.monotonic() >= deadline:
                raise ServiceError(f"the service printed no URL within {self.start_timeout:g} s")
            await asyncio.sleep(0.02)

    def remember_descendants(self) -> None:
        """Note the service's current descendants so a forced stop can end them by pid."""
        if self.proc is None:
            return
        try:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                try:
                    self._known.setdefault(child.pid, child.create_time())
                except psutil.Error:
                    pass
        except psutil.Error:
            pass

    def note_job(self, pid: int | None) -> None:
        """A job the harness started (pid from the public protocol): end it if it outlives us."""
        if pid is None:
            return
        try:
            self._known.setdefault(pid, psutil.Process(pid).create_time())
        except psutil.Error:
            pass

    def kill_now(self) -> None:
        """SIGKILL the service's group at once (a second Ctrl-C); `stop` then cleans up."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.remember_descendants()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    async def stop(self, *, force: bool = False) -> StopInfo:
        """SIGTERM, bounded wait, SIGKILL of the group; then end surviving descendants by pid."""
        if self.stop_info is not None:
            return self.stop_info
        t0 = time.monotonic()
        proc = self.proc
        if proc is None:
            self.stop_info = StopInfo("not started", None, 0.0)
            return self.stop_info
        self.remember_descendants()
        how = "already exited"
        stderr_tail = None
        if proc.poll() is None:
            how = "sigterm"
            if not force:
                try:
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
                deadline = time.monotonic() + self.stop_timeout
                while proc.poll() is None and time.monotonic() < deadline:
                    self.remember_descendants()
                    await asyncio.sleep(0.02)
            if proc.poll() is None:
                how = "sigkill"
                if not force:
                    stderr_tail = await self._ask_for_stacks()
                self.remember_descendants()
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                deadline = time.monotonic() + 5.0
                while proc.poll() is None and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
        killed = await self._end_leftovers()
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        self.stop_info = StopInfo(how, proc.poll(), round(time.monotonic() - t0, 3), killed,
                                  stderr_tail)
        return self.stop_info

    async def _ask_for_stacks(self) -> str:
        """SIGUSR1 (the service prints every thread's stack), a moment for it, then the tail
        of its stderr. Bounded (about 1.1 s) and never raises: the SIGKILL must follow."""
        err_path = self.log_dir / "service.stderr"

        def size() -> int | None:
            try:
                return err_path.stat().st_size
            except OSError:
                return None

        before = size()
        try:
            self.proc.send_signal(signal.SIGUSR1)
        except (OSError, psutil.Error):
            before = None
        if before is not None:
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline and size() == before:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.1)  # the rest of the dump
        try:
            with open(err_path, "rb") as f:
                f.seek(max(0, (size() or 0) - STDERR_TAIL))
                return f.read(STDERR_TAIL).decode(errors="replace")
        except OSError:
            return ""

    async def _end_leftovers(self) -> int:
        """Descendants that outlived the service: SIGKILL each by pid (checked by create time)."""
        alive: list[psutil.Process] = []
        for pid, created in self._known.items():
            try:
                p = psutil.Process(pid)
                if abs(p.create_time() - created) < 0.01 and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.Error:
                continue
        for p in alive:
            try:
                os.killpg(p.pid, signal.SIGKILL) if os.getpgid(p.pid) == p.pid else p.kill()
            except (psutil.Error, OSError):
                try:
                    p.kill()
                except psutil.Error:
                    pass
        if alive:
            await asyncio.to_thread(psutil.wait_procs, alive, 5.0)
        return len(alive)

    async def __aenter__(self) -> "ManagedService":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class RemoteService:
    """A service someone else runs (`--server URL --token T`): checked, never started or stopped."""

    def __init__(self, url: str, token: str | None, *, start_timeout: float = 10.0) -> None:
        if not url.startswith(("ws://", "wss://")):
            raise ServiceError(f"--server must be a ws:// or wss:// URL, got {url!r}")
        self.url = url
        self.token = token
        self.start_timeout = start_timeout
        self.health: dict = {}
        self.stop_info: StopInfo | None = None
        self.pid: int | None = None

    @property
    def managed(self) -> bool:
        return False

    def describe_argv(self) -> list[str]:
        return []

    async def start(self) -> None:
        if self.url.startswith("ws://"):
            try:
                self.health = await wait_healthy(self.url, self.start_timeout)
            except ServiceError:
                raise
        self.pid = find_listening_pid(self.url)

    def note_job(self, pid: int | None) -> None:
        pass

    def kill_now(self) -> None:
        pass

    def remember_descendants(self) -> None:
        pass

    async def stop(self, *, force: bool = False) -> StopInfo:
        self.stop_info = StopInfo("remote", None, 0.0)
        return self.stop_info

    async def __aenter__(self) -> "RemoteService":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def find_listening_pid(ws_url: str) -> int | None:
    """The pid listening on a loopback URL's port, when this user can see it; else None."""
    parts = urlsplit(ws_url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1") or parts.port is None:
        return None
    try:
        for c in psutil.net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == parts.port and c.pid:
                return c.pid
    except (psutil.Error, OSError):
        return None
    return None
