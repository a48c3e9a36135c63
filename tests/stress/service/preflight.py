"""Preflight: before a suite that uses Claude, prove once that a Claude run can succeed at all.

Why: when the CLI is missing, has no credentials, or cannot reach its model, every Claude test
fails the same way, and a report of N identical failures hides the one thing to fix. So the
harness first checks, in order, through the service under test (the same path every test takes):

1. **cli**: `claude --version` runs (where the service found it, and its version);
2. **model**: local mode: the loopback model server answers `GET /v1/models`; real mode: the CLI
   has credentials (`ANTHROPIC_API_KEY`, a token, or `~/.claude/.credentials.json`);
3. **canary**: `claude -p "What is 2+2?" --output-format stream-json --verbose` with the mode's
   environment ends with a successful `result` event whose text contains 4.

The first failure stops the run with one message (what failed, the CLI's own error line, what to
do) and exit status 3 (`EXIT_PREFLIGHT`). `--no-preflight` skips the model and canary checks; the
CLI check still runs, and Claude tests are skipped when it fails.

Two more checks happen before any test, whatever the suite: `check_access` opens one
authenticated connection to each `--server` (a wrong token would otherwise fail every test with
the same "HTTP 401", so it stops the run the same way, exit 3), and `local_cli_version` reads
`claude --version` on this host for a run that does not use Claude, so every report says which
CLI was installed.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cc_executor import aio
from cc_executor.claude_cli import (
    NESTING_VAR,
    child_env,
    find_claude,
    where_claude_is_looked_for,
)
from cc_executor.client import ExecutorClient, ExecutorError
from cc_executor.protocol import COMMAND_NOT_ALLOWED
from stress.exits import EXIT_PREFLIGHT
from stress.service.managed import fetch_json
from stress.service.modelmode import (
    ModelEnvironment,
    find_credentials,
    no_credentials_text,
)
from stress.suite import claude_stream as claude_mod

CANARY_PROMPT = "What is 2+2?"
CANARY_ANSWER = re.compile(r"(?<![\d.])4(?!\d|\.\d)")
"""The canary's result must contain the number 4 on its own (not 14, 4.5, 2024)."""
VERSION_TIMEOUT = 30.0
CANARY_TIMEOUT = {"local": 60.0, "real": 180.0}
"""Seconds for the canary: the loopback model answers in about 1 s; seed 004 measured 30-60 s of
start-up against the real API."""
CANARY_MAX_RETRIES = "2"
"""Real mode, unless the user set CLAUDE_CODE_MAX_RETRIES: a canary should fail in seconds, not
after the CLI's default 10 retries (about 190 s)."""
MODEL_CHECK_TIMEOUT = 5.0
INSTALL_HINT = ("install it with `./dev setup` (runs `npm ci`, which puts the CLI version pinned in "
                "package.json into node_modules/.bin), or point the service at one with "
                "CC_EXECUTOR_CLAUDE_PATH=/path/to/claude")
SKIP_HINT = ("--no-preflight skips the model and canary checks: the Claude tests then run, and each "
             "fails on its own")
CLI_HINT = ("--no-preflight would not help: it still needs `claude --version` to run, and skips "
            "every Claude test when it does not")
CLI_KINDS = frozenset({"not_found", "not_allowed", "cli", "service"})
"""Failures of the CLI check itself: with --no-preflight every Claude test would be skipped."""
ACCESS_TIMEOUT = 15.0
LOCAL_VERSION_TIMEOUT = 10.0


@dataclass
class Check:
    name: str
    """cli | model | canary"""
    ok: bool
    detail: str
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "seconds": round(self.seconds, 3)}


@dataclass
class Preflight:
    """What the checks found. `ok` False: `failure` says what, `cli_said` quotes the CLI,
    `advice` says what to do, and `message(tool)` puts them together."""

    ok: bool = True
    checks: list[Check] = field(default_factory=list)
    version: str | None = None
    """First line of `claude --version`, e.g. "2.1.197 (Claude Code)"."""
    path: str | None = None
    """Where the service found the executable (argv[0] of its process.started)."""
    failure: str | None = None
    cli_said: str | None = None
    advice: str | None = None
    kind: str | None = None
    """not_found | no_credentials | model_unreachable | canary (+ the CLI failure class)."""
    canary: dict[str, Any] | None = None
    """The canary run's Claude summary (session id, cost, tokens...), when it ran."""

    @property
    def note(self) -> str:
        """The version line when the checks passed, else what failed (as stress.cli's probe)."""
        return (self.version or "?") if self.ok else (self.failure or "preflight failed")

    def fail(self, kind: str, failure: str, advice: str, cli_said: str | None = None) -> "Preflight":
        self.ok, self.kind, self.failure, self.advice, self.cli_said = False, kind, failure, advice, cli_said
        return self

    def message(self, tool: str) -> str:
        lines = [f"{tool}: preflight failed: {self.failure}"]
        if self.cli_said:
            lines.append(f"  claude said: {self.cli_said}")
        if self.advice:
            lines.append(f"  what to do: {self.advice}")
        hint = CLI_HINT if self.kind in CLI_KINDS else SKIP_HINT
        lines.append(f"  ({hint}; exit status {EXIT_PREFLIGHT})")
        return "\n".join(lines)

    def terminal_line(self, model: ModelEnvironment | None = None, *, services: int = 1) -> str:
        """What the terminal shows before the run: the CLI, where it is, and the model mode,
        e.g. `claude 2.1.197 (Claude Code) at /repo/node_modules/.bin/claude; model: auto -> local
        (no credentials are configured ...); preflight passed in 2.3 s`."""
        line = f"claude {self.version or '?'} at {self.path or '?'}"
        if services > 1:
            line += f" (checked through each of the {services} services)"
        if model is not None:
            line += f"; model: {model.label}" + (f" ({model.reason})" if model.reason else "")
        if any(c.name == "canary" for c in self.checks):
            line += f"; preflight passed in {sum(c.seconds for c in self.checks):.1f} s"
        else:
            line += "; preflight skipped (--no-preflight)"
        return line

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "kind": self.kind, "failure": self.failure, "cli_said": self.cli_said,
                "advice": self.advice, "version": self.version, "path": self.path,
                "checks": [c.to_json() for c in self.checks], "canary": self.canary}


def _first_line(text: str, limit: int = 300) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line if len(line) <= limit else line[: limit - 3] + "..."
    return ""


async def _connect(url: str, token: str | None) -> ExecutorClient:
    return await aio.wait_for(ExecutorClient.connect(url, token), 15)


def find_local_claude(environ: Mapping[str, str] | None = None) -> str | None:
    """Where a service started by the harness will find `claude` (its own lookup), or None."""
    environ = os.environ if environ is None else environ
    return find_claude(environ.get("CC_EXECUTOR_CLAUDE_PATH") or None)


async def check_cli(client: ExecutorClient, pre: Preflight, *, managed: bool, url: str) -> bool:
    t0 = time.monotonic()
    paths: list[str] = []
    if managed and find_local_claude() is None:
        # The service would only say "command not allowed" (claude is allowed by name, but no
        # file backs it); say what is actually wrong.
        pre.checks.append(Check("cli", False, "not found", time.monotonic() - t0))
        pre.fail("not_found", f"the Claude CLI was not found: looked in {where_claude_is_looked_for()}",
                 INSTALL_HINT)
        return False

    def on_event(ev) -> None:
        argv = ev.params.get("argv") if ev.kind == "started" else None
        if argv:
            paths.append(argv[0])

    try:
        res = await aio.wait_for(
            client.execute(args=["claude", "--version"], timeout=VERSION_TIMEOUT,
                           on_event=on_event), VERSION_TIMEOUT + 15)
    except ExecutorError as e:
        where = (f"the service looked in {where_claude_is_looked_for()}" if managed
                 else f"the service at {url} looked on its own PATH")
        pre.checks.append(Check("cli", False, e.message, time.monotonic() - t0))
        if e.code == COMMAND_NOT_ALLOWED:
            pre.fail("not_allowed", f"the service refuses to run claude: {e.message}",
                     "start the service with `--allow claude` (or CC_EXECUTOR_ALLOW)")
        else:
            pre.fail("not_found", f"the Claude CLI was not found ({e.message}); {where}",
                     INSTALL_HINT)
        return False
    except asyncio.TimeoutError:
        pre.checks.append(Check("cli", False, "no answer", time.monotonic() - t0))
        pre.fail("cli", f"`claude --version` gave no answer within {VERSION_TIMEOUT:g} s",
                 "check that the CLI starts at all (node_modules/.bin/claude --version)")
        return False
    text = (res.stdout_text or res.stderr_text).strip()
    pre.path = paths[0] if paths else None
    if res.reason == "exited" and res.exit_code == 0 and text:
        pre.version = text.splitlines()[0]
        pre.checks.append(Check("cli", True, f"{pre.version} at {pre.path or '?'}", time.monotonic() - t0))
        return True
    pre.checks.append(Check("cli", False, text[:300], time.monotonic() - t0))
    pre.fail("cli", f"`claude --version` ended {res.reason} with exit {res.exit_code}",
             f"the CLI at {pre.path or '?'} does not run; reinstall it: {INSTALL_HINT}",
             _first_line(text) or None)
    return False


async def check_model(model: ModelEnvironment, pre: Preflight, *, managed: bool) -> bool:
    t0 = time.monotonic()
    if model.mode == "local":
        url = model.server_url
        if not url:
            pre.checks.append(Check("model", False, "no server URL", 0.0))
            pre.fail("model_unreachable", "local mode has no loopback model server",
                     "this is a harness bug: the model mode was set up without a server")
            return False
        try:
            status, body = await fetch_json(f"{url}/v1/models", timeout=MODEL_CHECK_TIMEOUT)
        except (OSError, asyncio.TimeoutError, ValueError, IndexError) as e:
            why = f"{type(e).__name__}: {e}".rstrip(": ")
            pre.checks.append(Check("model", False, why, time.monotonic() - t0))
            pre.fail("model_unreachable", f"the loopback model server at {url} does not answer ({why})",
                     "it runs inside the harness; check that nothing blocks loopback connections "
                     "(firewall, proxy variables such as HTTP_PROXY without NO_PROXY=127.0.0.1)")
            return False
        if status != 200 or not isinstance(body, dict):
            pre.checks.append(Check("model", False, f"HTTP {status}", time.monotonic() - t0))
            pre.fail("model_unreachable", f"the loopback model server at {url} answered HTTP {status}",
                     "see docs/model-server.md")
            return False
        pre.checks.append(Check("model", True, f"loopback model server at {url}", time.monotonic() - t0))
        return True
    if not managed:
        pre.checks.append(Check("model", True, "real mode against a remote service: credentials "
                                "are the service's, checked by the canary", 0.0))
        return True
    found = find_credentials()
    if found is None:
        pre.checks.append(Check("model", False, "no credentials", time.monotonic() - t0))
        pre.fail("no_credentials", f"--model {model.requested} needs the CLI's own credentials, and "
                 f"{no_credentials_text()}",
                 "export ANTHROPIC_API_KEY=..., or log in once with `claude` (/login), or run "
                 "offline against the loopback model with --model local")
        return False
    pre.checks.append(Check("model", True, f"credentials: {found}", time.monotonic() - t0))
    return True


def canary_env(model: ModelEnvironment, claude_env: Mapping[str, str | None]) -> dict[str, str | None]:
    env: dict[str, str | None] = {**model.env, **claude_env}
    if model.mode == "real" and "CLAUDE_CODE_MAX_RETRIES" not in env \
            and "CLAUDE_CODE_MAX_RETRIES" not in os.environ:
        env["CLAUDE_CODE_MAX_RETRIES"] = CANARY_MAX_RETRIES
    env[NESTING_VAR] = None  # a job env: the service removes it anyway; say so explicitly
    return env


def _canary_advice(kind: str | None, model: ModelEnvironment, timed_out: bool, limit: float) -> str:
    base_url = os.environ.get("ANTHROPIC_BASE_URL")
    if timed_out:
        return (f"the CLI gave no result within {limit:g} s: the host may be overloaded, or the model "
                "API unreachable" + ("" if model.mode == "real" else " (see docs/model-server.md)"))
    if kind == "not_found":
        return INSTALL_HINT
    if kind == "nesting_guard":
        return "unset CLAUDECODE in the environment that starts the service"
    if kind == "root_guard":
        return "do not pass --dangerously-skip-permissions as root, or set IS_SANDBOX=1"
    if model.mode == "local":
        return ("the CLI did not complete against the loopback model server: rerun with "
                "--no-preflight to see each test's failure, and check that node_modules/.bin/claude "
                "is the version pinned in package.json (docs/model-server.md describes 2.1.197)")
    if kind == "authentication":
        return ("the API refused the CLI's credentials: check ANTHROPIC_API_KEY, or log in again "
                "with `claude` (/login); or run offline with --model local")
    target = f"ANTHROPIC_BASE_URL={base_url}" if base_url else "api.anthropic.com"
    return (f"the CLI could not get an answer from {target}: check the network and the API's "
            "status, retry later, or run offline with --model local")


async def check_canary(client: ExecutorClient, model: ModelEnvironment, pre: Preflight,
                       claude_env: Mapping[str, str | None], timeout: float | None) -> bool:
    limit = timeout or CANARY_TIMEOUT.get(model.mode, 60.0)
    t0 = time.monotonic()
    argv = ["claude", "-p", CANARY_PROMPT, "--output-format", "stream-json", "--verbose"]
    try:
        res = await aio.wait_for(
            client.execute(args=argv, timeout=limit, env=canary_env(model, claude_env)), limit + 20)
    except ExecutorError as e:
        pre.checks.append(Check("canary", False, e.message, time.monotonic() - t0))
        pre.fail("canary", f"the service refused the canary prompt: {e.message}",
                 "check the service's allow-list (claude must be allowed)")
        return False
    except asyncio.TimeoutError:
        pre.checks.append(Check("canary", False, "no completion", time.monotonic() - t0))
        pre.fail("canary", f"the service sent no completion for the canary within {limit + 20:g} s",
                 "the service under test is not answering; see its log under <report>/logs")
        return False
    seconds = time.monotonic() - t0
    stream = claude_mod.parse_stream(res.stdout)
    pre.canary = stream.to_json() if stream.is_stream_json else None
    answer = stream.result_text if stream.has_result else ""
    ok = (res.reason == "exited" and res.exit_code == 0 and stream.has_result
          and not stream.is_error and CANARY_ANSWER.search(answer) is not None)
    shown = f'`claude -p "{CANARY_PROMPT}"` ({model.label} mode)'
    if ok:
        pre.checks.append(Check("canary", True, f"{shown} answered {_first_line(answer, 80)!r}", seconds))
        return True
    timed_out = res.reason in ("timeout", "stalled")
    stderr = res.stderr_text
    tail = "\n".join(line for line in res.stdout_text[-4096:].splitlines() if not line.startswith("{"))
    cf = claude_mod.classify_failure(res.exit_code if res.reason == "exited" else None, stderr,
                                     stream if stream.is_stream_json else None,
                                     end_reason=res.reason, stdout_tail=tail)
    said = (_first_line(stream.result_text) if stream.is_error and stream.result_text
            else _first_line(stderr) or _first_line(tail) or _first_line(answer))
    if timed_out:
        what = f"{shown} gave no result within {limit:g} s ({res.reason})"
    elif res.reason != "exited":
        what = f"{shown} ended {res.reason}"
    elif res.exit_code != 0 or stream.is_error:
        what = f"{shown} failed (exit {res.exit_code}" + (f", {cf.kind}" if cf else "") + ")"
    elif not stream.has_result:
        what = f"{shown} exited {res.exit_code} without a result event"
    else:
        what = f"{shown} answered without the number 4: {_first_line(answer, 120)!r}"
    pre.checks.append(Check("canary", False, what, seconds))
    pre.fail("canary" + (f":{cf.kind}" if cf else ""), what,
             _canary_advice(cf.kind if cf else None, model, timed_out, limit), said or None)
    return False


async def run_preflight(url: str, token: str | None, model: ModelEnvironment | None, *,
                        claude_env: Mapping[str, str | None] | None = None, managed: bool = True,
                        canary_timeout: float | None = None) -> Preflight:
    """Run the three checks through the service at `url`; stop at the first that fails.

    `claude_env` is what the harness adds to Claude jobs (PATH to the CLI for shell lines);
    `managed` says the service was started by the harness on this host (so where it looked for
    the CLI and which credentials it inherited are known here). With `model` None only the CLI
    check runs (see `probe_cli`).
    """
    pre = Preflight()
    try:
        client = await _connect(url, token)
    except Exception as e:  # noqa: BLE001 - any connect failure is the message
        pre.checks.append(Check("cli", False, f"cannot connect: {e}", 0.0))
        return pre.fail("service", f"cannot connect to the service at {url}: {e}",
                        "see the service's log under <report>/logs")
    try:
        if not await check_cli(client, pre, managed=managed, url=url) or model is None:
            return pre
        if not await check_model(model, pre, managed=managed):
            return pre
        await check_canary(client, model, pre, claude_env or {}, canary_timeout)
        return pre
    finally:
        try:
            await aio.wait_for(client.close(), 5)
        except Exception:  # noqa: BLE001 - closing is best effort
            pass


TOKEN_REFUSED_STATUSES = (401, 403)
"""HTTP statuses of a WebSocket upgrade refused for its token (the service answers 401)."""


@dataclass
class AccessCheck:
    """Whether one service accepted an authenticated connection (`check_access`)."""

    url: str
    ok: bool
    status: int | None = None
    """The HTTP status of a refused WebSocket upgrade (401: wrong or missing token)."""
    detail: str = ""

    @property
    def token_refused(self) -> bool:
        """The upgrade was refused for the token (HTTP 401 or 403), not for being unreachable."""
        return self.status in TOKEN_REFUSED_STATUSES

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "ok": self.ok, "status": self.status, "detail": self.detail}

    @classmethod
    def of_refusal(cls, url: str, e: BaseException) -> AccessCheck:
        """The check a failed client connection makes (the HTTP status of a refused upgrade)."""
        response = getattr(e, "response", None)
        status = getattr(response, "status_code", None)
        return cls(url, False, status if isinstance(status, int) else None, str(e) or type(e).__name__)


async def check_access(url: str, token: str | None, *, timeout: float = ACCESS_TIMEOUT) -> AccessCheck:
    """Open (and close) one authenticated client connection to the service at `url`."""
    try:
        client = await aio.wait_for(ExecutorClient.connect(url, token, open_timeout=timeout),
                                        timeout + 5)
    except asyncio.TimeoutError:
        return AccessCheck(url, False, None, f"no answer within {timeout:g} s")
    except Exception as e:  # noqa: BLE001 - every refusal is reported, none is raised
        return AccessCheck.of_refusal(url, e)
    try:
        await aio.wait_for(client.close(), 5)
    except Exception:  # noqa: BLE001 - closing is best effort
        pass
    return AccessCheck(url, True)


def access_refusal(check: AccessCheck) -> str:
    """Why a server refused the harness's access check, in one line."""
    if check.token_refused:
        return (f"refused the token (HTTP {check.status}); give it the token its service was "
                f"started with: --server-token {check.url}=T")
    return f"cannot open a client connection: {check.detail}"


def access_failure(checks: list[AccessCheck]) -> str | None:
    """One line for the refused services (None when every one accepted)."""
    bad = [c for c in checks if not c.ok]
    if not bad:
        return None
    parts = []
    for c in bad:
        if c.token_refused:
            parts.append(f"the service at {c.url} refused the token (HTTP {c.status})")
        else:
            parts.append(f"cannot open a client connection to {c.url}: {c.detail}")
    return "; ".join(parts)


def access_message(tool: str, checks: list[AccessCheck]) -> str:
    """The one message a refused token gives (instead of one "HTTP 401" failure per test)."""
    bad = [c for c in checks if not c.ok]
    lines = [f"{tool}: preflight failed: {access_failure(checks)}"]
    if any(c.token_refused for c in bad):
        lines.append("  what to do: pass the token the service was started with (its --token or "
                     "CC_EXECUTOR_TOKEN) as --token T, or --server-token URL=T for one server")
    else:
        lines.append("  what to do: /health answered but the WebSocket did not; check the URL's "
                     "path (ws://host:port/ws) and any proxy in between")
    lines.append(f"  (no test was run; exit status {EXIT_PREFLIGHT})")
    return "\n".join(lines)


async def local_cli_version(timeout: float = LOCAL_VERSION_TIMEOUT) -> tuple[str | None, str | None]:
    """(first line of `claude --version`, path) for the CLI a service started here would run,
    or (None, path or None) when it is missing or does not answer. Runs it directly: a suite
    without Claude tests has no `claude` in the service's allow-list."""
    path = find_local_claude()
    if path is None:
        return None, None
    env = child_env()
    try:
        proc = await asyncio.create_subprocess_exec(
            path, "--version", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, env=env, start_new_session=True)
    except OSError:
        return None, path
    out = b""
    try:
        out, _ = await aio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        pass
    finally:
        if proc.returncode is None:  # timed out, or the run was interrupted: end it, by its pid
            try:
                proc.kill()
            except ProcessLookupError:
                pass
            await proc.wait()
    first = _first_line(out.decode("utf-8", "replace"))
    return (first or None) if proc.returncode == 0 else None, path


async def probe_cli(url: str, token: str | None, *, managed: bool = True) -> Preflight:
    """Only `claude --version` through the service: what `--no-preflight` still needs, since the
    report records the CLI's version and path and Claude tests are skipped when it cannot run."""
    return await run_preflight(url, token, None, managed=managed)
