"""Environment that points the real Claude Code CLI at the loopback model server, fast and offline.

Each variable below was checked against CLI 2.1.197 (see docs/model-server.md):
- ANTHROPIC_BASE_URL / ANTHROPIC_API_KEY: where to send requests; any non-empty key is accepted by
  our server. Without a key (and no ANTHROPIC_AUTH_TOKEN) the CLI answers "Not logged in · Please
  run /login" and exits 1 without calling the server.
- CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1: drops the session-title request (one model call per
  run instead of two) and the telemetry uploads that otherwise fail offline and pile up under
  <config>/telemetry.
- DISABLE_AUTOUPDATER, DISABLE_TELEMETRY, DISABLE_ERROR_REPORTING: belt and braces for the same.
- CLAUDE_CONFIG_DIR: where the CLI keeps .claude.json, sessions and transcripts; pointing it at a
  scratch directory keeps test runs out of the real home directory.
- CLAUDE_CODE_MAX_RETRIES: retries after 429/5xx/connection errors (default 10, about 190 s of
  backoff in total; 0 means one attempt).
- API_TIMEOUT_MS: how long the CLI waits for response headers before retrying (default 600000). It
  does not bound a stream that stalls after the headers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from cc_executor.claude_cli import NESTING_VAR

DUMMY_API_KEY = "sk-ant-stress-model-offline"

# Variables that make a child CLI think it runs inside another Claude Code session, or that would
# send it elsewhere or authenticate it differently from what claude_env sets.
INHERITED_TO_REMOVE = (
    NESTING_VAR,
    "CLAUDE_CODE_ENTRYPOINT",
    "CLAUDE_CODE_SSE_PORT",
    "ANTHROPIC_AUTH_TOKEN",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "CLAUDE_CODE_USE_BEDROCK",
    "CLAUDE_CODE_USE_VERTEX",
    "CLAUDE_CODE_USE_FOUNDRY",
)


def claude_env(
    base_url: str,
    *,
    config_dir: str | os.PathLike | None = None,
    max_retries: int | None = None,
    api_timeout_ms: int | None = None,
    title_requests: bool = False,
) -> dict[str, str]:
    """Variables to lay over the CLI's environment so it talks only to `base_url`.

    `title_requests=True` keeps the CLI's non-essential traffic on, so each run also sends the
    session-title request (closer to a default install, one more request per run).
    """
    if not base_url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        raise ValueError(f"base_url {base_url!r} is not a loopback http URL")
    env = {
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": DUMMY_API_KEY,
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
    }
    if not title_requests:
        env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] = "1"
    if config_dir is not None:
        env["CLAUDE_CONFIG_DIR"] = os.fspath(config_dir)
    if max_retries is not None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        env["CLAUDE_CODE_MAX_RETRIES"] = str(max_retries)
    if api_timeout_ms is not None:
        if api_timeout_ms <= 0:
            raise ValueError(f"api_timeout_ms must be > 0, got {api_timeout_ms}")
        env["API_TIMEOUT_MS"] = str(api_timeout_ms)
    return env


def claude_process_env(base_url: str, base: Mapping[str, str] | None = None, **options) -> dict[str, str]:
    """A complete environment for the CLI: `base` (default os.environ) without variables that would
    confuse it (INHERITED_TO_REMOVE), plus claude_env(base_url, **options)."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in INHERITED_TO_REMOVE}
    env.update(claude_env(base_url, **options))
    return env
