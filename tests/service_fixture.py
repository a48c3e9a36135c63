"""Start the real service as a user would: `python -m cc_executor --port 0 ...`, read its URL.

Why a subprocess and not an in-process app: the things worth testing at this level (signals,
the printed URL, refusing to bind, the event log file, CLAUDECODE in the server's environment,
process trees outliving a connection) only exist in a real server process.

Every server gets its own run-dir, log-dir and `--env-file` under the test's tmp dir, runs with
its cwd there (so the repository's `.env` is never read), and starts from an environment with
every `CC_EXECUTOR_*` setting removed, so a developer's shell cannot change what a test sees.
Throttling is off unless a test turns it on (other suites may load this 2-core host).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cc_executor.claude_cli import child_env
from cc_executor.settings import ENV_PREFIX, Settings

from conftest import REPO, wait_until

PY = sys.executable
VENV_BIN = str(Path(PY).parent)
SETTING_VARS = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0


@dataclass
class ServiceProcess:
    """One running `python -m cc_executor`."""

    proc: subprocess.Popen
    home: Path
    stdout_path: Path
    stderr_path: Path
    log_dir: Path
    run_dir: Path
    env_file: Path
    url: str = ""
    stopped_rc: int | None = field(default=None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def port(self) -> int:
        return int(self.url.split(":")[2].split("/")[0])

    @property
    def base(self) -> str:
        return self.url.rsplit("/ws", 1)[0]

    @property
    def http(self) -> str:
        return "http" + self.base[2:]

    def ws(self, path: str = "/ws") -> str:
        return self.base + path

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def event_log(self) -> list[dict]:
        path = self.log_dir / "cc_executor.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def health(self) -> dict:
        with urllib.request.urlopen(self.http + "/health", timeout=5) as r:
            return json.loads(r.read())

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, wait (bounded), SIGKILL by pid as a last resort. Returns the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(5)
        self.stopped_rc = rc
        return rc


def clean_env(extra: dict[str, str | None] | None = None) -> dict[str, str]:
    """The server's environment: ours minus every CC_EXECUTOR_* setting, venv bin first on
    PATH (so `python3` is the venv's, not a pyenv shell shim), throttling off, then `extra`
    (a None value removes the variable)."""
    env = child_env({k: v for k, v in os.environ.items() if k not in SETTING_VARS})
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", os.defpath)
    env["CC_EXECUTOR_THROTTLE"] = "0"
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def launch(home: Path, *args: str, env: dict[str, str | None] | None = None,
           allow: tuple[str, ...] | list[str] = (), env_file: Path | None = None,
           default_dirs: bool = True) -> ServiceProcess:
    """Start the server (does not wait for it): see `start_service`."""
    home.mkdir(parents=True, exist_ok=True)
    n = len(list(home.glob("server-*.out")))
    stdout_path, stderr_path = home / f"server-{n}.out", home / f"server-{n}.err"
    log_dir, run_dir = home / f"logs-{n}", home / f"run-{n}"
    env_file = env_file or home / f"absent-{n}.env"
    argv = [PY, "-m", "cc_executor", "--env-file", str(env_file)]
    if default_dirs:
        argv += ["--log-dir", str(log_dir), "--run-dir", str(run_dir)]
    if "--port" not in args:
        argv += ["--port", "0"]
    for name in allow:
        argv += ["--allow", name]
    argv += list(args)
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                cwd=home, env=clean_env(env))
    return ServiceProcess(proc, home, stdout_path, stderr_path, log_dir, run_dir, env_file)


def start_service(home: Path, *args: str, **kw) -> ServiceProcess:
    """Start the server and wait (bounded) for the URL it prints. Fails with its stderr."""
    svc = launch(home, *args, **kw)

    def url() -> str | None:
        text = svc.stdout_path.read_text()
        if text.endswith("\n"):
            return text.splitlines()[0]
        return None

    wait_until(lambda: url() or not svc.alive(), START_TIMEOUT, interval=0.01)
    found = url()
    if not found:
        rc = svc.stop(5)
        raise AssertionError(f"server did not print its URL (exit {rc}):\n{svc.stderr()}")
    assert found.startswith("ws://127.0.0.1:") and found.endswith("/ws"), found
    svc.url = found
    return svc


class ServiceFactory:
    """What the `executor_service` fixture hands out: `start(...)`, stopping all at teardown."""

    def __init__(self, home: Path):
        self.home = home
        self.started: list[ServiceProcess] = []
        self._n = 0

    def __call__(self, *args: str, **kw) -> ServiceProcess:
        self._n += 1
        svc = start_service(self.home / f"svc{self._n}", *args, **kw)
        self.started.append(svc)
        return svc

    def close(self) -> list[str]:
        """Stop every server still running; return problems (tracebacks in their stderr)."""
        problems = []
        for svc in self.started:
            if svc.alive():
                rc = svc.stop()
                if rc != 0:
                    problems.append(f"server {svc.pid} exited {rc} on SIGTERM")
            text = svc.stderr()
            if "Traceback" in text:
                problems.append(f"server {svc.pid} logged a traceback:\n{text[-3000:]}")
        return problems


def port_listening(port: int) -> bool:
    """Whether anything listens on 127.0.0.1:<port> or 0.0.0.0:<port> (from /proc/net/tcp*)."""
    want = f":{port:04X}"
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[1].endswith(want) and parts[3] == "0A":  # 0A = LISTEN
                return True
    return False


def listening_ports_of(pid: int) -> set[int]:
    """TCP ports a process listens on, via its socket inodes."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return set()
    ports = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "0A" and parts[9] in inodes:
                ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


def http_status(url: str, headers: dict[str, str] | None = None) -> int:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def pid_alive(pid: int) -> bool:
    """Alive and not a zombie (read from /proc, no psutil needed)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:][:1] not in (b"Z", b"X")


def pid_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2:][:1].decode()


def wait_gone(pids, timeout: float = 10.0) -> list[int]:
    """Wait (bounded) for every pid to be gone; return the ones still alive."""
    pids = list(pids)
    wait_until(lambda: not any(pid_alive(p) for p in pids), timeout)
    return [p for p in pids if pid_alive(p)]


__all__ = [
    "PY", "REPO", "ServiceFactory", "ServiceProcess", "clean_env", "http_status", "launch",
    "listening_ports_of", "pid_alive", "pid_state", "port_listening", "start_service",
    "wait_gone",
]
