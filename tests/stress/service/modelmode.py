"""Where the Claude CLI gets its model during a run: `--model auto|local|real`.

Why a hook: the harness must not know how a model is provided. It asks this module for an
environment to give every job, a description for the report (which mode, and why), and which
`requires` words that environment satisfies ("real-model").

- **local**: the loopback model server (`stress.model.ModelServer`) runs in the harness's own event
  loop for the whole run, and every job gets `claude_env(url)`: a dummy key, no telemetry, a
  scratch `CLAUDE_CONFIG_DIR` (created here, removed on exit), bounded retries. The user's own
  credentials and session markers are removed from the jobs' environment so nothing reaches a
  real API by accident. Does not provide "real-model": the stand-in only computes arithmetic,
  echoes and scripted faults, so a test that needs a real model is skipped, never passed.
- **real**: the CLI's own credentials, untouched (`env` is empty). Provides "real-model".
- **auto**: real when credentials are configured, else local.

Contract:

    async with model_environment(mode, uses_claude=True) as model:
        model.env          # dict[str, str | None]: merged into every job's env (None removes)
        model.description  # str for the report: mode, and why
        model.provides     # frozenset[str]: requirement words this mode satisfies
        model.mode         # "local" | "real": the mode in effect (auto resolved)
        model.requested    # what was asked for: auto | local | real
        model.reason       # why this mode (auto) / where the credentials are (real)
        model.server_url   # the loopback server's URL in local mode (None otherwise)

Whatever the context manager starts (the model server, the scratch directory) it stops on exit,
also when the run is interrupted (cancellation unwinds through the `async with`).

Must not import the harness's run machinery (`stress.cli`, `stress.session`, `stress.run.runner`,
`stress.service.preflight`): they import this module. It imports only `stress.model` (the loopback
server), and lazily, so a run that uses no Claude test never loads it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple

from stress.suite.model import REAL_MODEL

MODES = ("auto", "local", "real")

LOCAL_MAX_RETRIES = 3
"""CLAUDE_CODE_MAX_RETRIES in local mode. The CLI's default (10) backs off for about 190 s before
giving up on an always-failing prompt; 3 retries cost at most about 3.5 s (0.5 + 1 + 2 s) and still
let a test script two or three transient faults. A test that wants more sets it in its `env`."""

SKIP_PERMISSION_FLAGS = ("--dangerously-skip-permissions", "bypassPermissions")
"""Flags the CLI refuses as root unless IS_SANDBOX=1 (seed 004's default command uses the first)."""

CREDENTIAL_VARIABLES = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN",
                        "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX", "CLAUDE_CODE_USE_FOUNDRY")
"""Environment variables that give the CLI a real model (a key, a token, or a cloud provider)."""


class ModelEnvironment(NamedTuple):
    env: dict[str, str | None]
    description: str
    provides: frozenset[str]
    mode: str = "local"
    requested: str = "auto"
    reason: str = ""
    server_url: str | None = None

    @property
    def label(self) -> str:
        """"local", "real", or "auto -> local" when auto chose: for skip reasons."""
        return self.mode if self.requested == self.mode else f"{self.requested} -> {self.mode}"


def credentials_file(environ: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    """Where the CLI keeps its login (`claude` then /login): $CLAUDE_CONFIG_DIR or ~/.claude."""
    environ = os.environ if environ is None else environ
    config = environ.get("CLAUDE_CONFIG_DIR")
    base = Path(config) if config else (home or Path.home()) / ".claude"
    return base / ".credentials.json"


def find_credentials(environ: Mapping[str, str] | None = None, home: Path | None = None) -> str | None:
    """Why the CLI has real credentials here ("ANTHROPIC_API_KEY is set", a file path), or None."""
    environ = os.environ if environ is None else environ
    for name in CREDENTIAL_VARIABLES:
        if environ.get(name):
            return f"{name} is set"
    path = credentials_file(environ, home)
    if path.is_file():
        return f"{path} exists"
    return None


def no_credentials_text(environ: Mapping[str, str] | None = None, home: Path | None = None) -> str:
    """What was looked at, for "no credentials" messages."""
    return (f"none of {', '.join(CREDENTIAL_VARIABLES[:3])} is set and there is no "
            f"{credentials_file(environ, home)}")


def resolve_mode(mode: str, environ: Mapping[str, str] | None = None,
                 home: Path | None = None) -> tuple[str, str]:
    """(mode in effect, why) for a requested mode."""
    if mode not in MODES:
        raise ValueError(f"unknown model mode {mode!r} (expected one of {', '.join(MODES)})")
    found = find_credentials(environ, home)
    if mode == "real":
        return "real", (f"credentials: {found}" if found
                        else f"no credentials found: {no_credentials_text(environ, home)}")
    if mode == "local":
        return "local", "asked for with --model local"
    if found:
        return "real", f"credentials are configured ({found})"
    return "local", f"no credentials are configured ({no_credentials_text(environ, home)})"


def needs_sandbox(commands: Iterable[str], euid: int | None = None) -> bool:
    """IS_SANDBOX=1 is needed only as root, and only for a command that skips permissions."""
    euid = os.geteuid() if euid is None else euid
    return euid == 0 and any(flag in c for c in commands for flag in SKIP_PERMISSION_FLAGS)


def plan_needs(plan: Iterable[Any]) -> dict[str, bool]:
    """What a run's plan (stress.run.runner.Planned items) needs from the model mode, as keyword
    arguments for `model_environment`: whether any test runs Claude, and whether any skips
    permissions (which, as root, needs IS_SANDBOX=1 in local mode)."""
    uses, texts = False, []
    for p in plan:
        if not getattr(p, "uses_claude", False):
            continue
        uses = True
        t = p.test
        for i in range(t.instances.count) if t.instances else [None]:
            inv = t.invocation(i)
            texts.append(inv.command if inv.command is not None else " ".join(inv.args or ()))
    return {"uses_claude": uses, "skip_permissions": needs_sandbox(texts)}


def local_env(url: str, config_dir: Path, *, sandbox: bool = False) -> dict[str, str | None]:
    """Every job's environment overlay in local mode."""
    from stress.model.cli_env import INHERITED_TO_REMOVE, claude_env

    env: dict[str, str | None] = {name: None for name in INHERITED_TO_REMOVE}
    env.update(claude_env(url, config_dir=config_dir, max_retries=LOCAL_MAX_RETRIES))
    # Task output of background Bash jobs, instead of /tmp/claude-<uid>/.
    env["CLAUDE_CODE_TMPDIR"] = str(config_dir / "tmp")
    if sandbox:
        # Matters only for shell-line tests (`sh -c 'claude ...'`): the service does not see
        # those as claude jobs. For a job whose program is `claude` it drops the job's IS_SANDBOX
        # and sets its own (CC_EXECUTOR_IS_SANDBOX, which build_fleet gives managed services).
        env["IS_SANDBOX"] = "1"
    return env


@asynccontextmanager
async def model_environment(mode: str, *, uses_claude: bool = True, skip_permissions: bool = False,
                            environ: Mapping[str, str] | None = None) -> AsyncIterator[ModelEnvironment]:
    """The environment for `mode`; in local mode the model server runs until the block exits.

    With `uses_claude=False` nothing is started (no selected test needs a model). `environ` (default
    os.environ) is where credentials are looked for.
    """
    effective, why = resolve_mode(mode, environ)
    provides = frozenset({REAL_MODEL}) if effective == "real" else frozenset()
    if effective == "real":
        desc = f"real: the Claude CLI's own credentials, untouched ({why})"
        if mode == "auto":
            desc = f"auto -> real: {why}; the CLI's own credentials, untouched"
        yield ModelEnvironment({}, desc, provides, "real", mode, why)
        return
    prefix = "local" if mode == "local" else "auto -> local"
    if not uses_claude:
        yield ModelEnvironment({}, f"{prefix}: not started (no selected test uses Claude)",
                               provides, "local", mode, why)
        return
    from stress.model import ModelServer

    config_dir = Path(tempfile.mkdtemp(prefix="cc_stress_claude_"))
    try:
        (config_dir / "tmp").mkdir()
        async with ModelServer(keep_bodies=False) as server:
            sandbox = " (IS_SANDBOX=1: running as root and a test skips permissions)" if skip_permissions else ""
            desc = (f"{prefix}: loopback model server stress.model at {server.url}, "
                    f"CLAUDE_CODE_MAX_RETRIES={LOCAL_MAX_RETRIES}{sandbox}; {why}")
            yield ModelEnvironment(local_env(server.url, config_dir, sandbox=skip_permissions),
                                   desc, provides, "local", mode, why, server.url)
    finally:
        shutil.rmtree(config_dir, ignore_errors=True)
