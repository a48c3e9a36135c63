"""Run `python -m stress.model` as a child process, for tests of the real command and for harnesses
that want the model server outside their own event loop or GIL."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time


class ModelServerProcess:
    """`with ModelServerProcess(["--latency", "5ms"]) as server: server.url`.

    Reads the first stdout line (the URL) with a deadline, so a server that never comes up fails
    the caller in `start_timeout` seconds instead of hanging it. Stops with SIGTERM, then SIGKILL.
    """

    def __init__(self, args: list[str] | None = None, *, python: str = sys.executable,
                 start_timeout: float = 15.0, stderr=subprocess.DEVNULL, env: dict[str, str] | None = None):
        self.args = list(args or [])
        self.python = python
        self.start_timeout = start_timeout
        self.stderr = stderr
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.url = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self) -> "ModelServerProcess":
        self.proc = subprocess.Popen(
            [self.python, "-m", "stress.model", *self.args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.stderr,
            env=self.env, start_new_session=True,
        )
        deadline = time.monotonic() + self.start_timeout
        line = b""
        fd = self.proc.stdout.fileno()
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                self.stop()
                raise TimeoutError(f"model server printed no URL within {self.start_timeout} s")
            data = os.read(fd, 1)
            if not data:
                code = self.proc.wait(5)
                raise RuntimeError(f"model server exited with {code} before printing its URL")
            line += data
        self.url = line.decode().strip()
        if not self.url.startswith("http://"):
            self.stop()
            raise RuntimeError(f"model server printed {self.url!r}, not a URL")
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait, then SIGKILL the process group; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self) -> "ModelServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
