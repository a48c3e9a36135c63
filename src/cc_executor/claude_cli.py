"""Where the Claude Code CLI is, whether a command runs it, and what it needs to run.

Shared by the service (its allow-list resolves `claude`), the stress harness (its preflight
says where the service will look) and the tests: one answer to each of these questions, so
the harness can never look somewhere the service does not.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

PROJECT_BIN = Path(__file__).resolve().parents[2] / "node_modules" / ".bin"
"""Where `npm ci` puts the pinned CLI in a checkout of this project."""

NESTING_VAR = "CLAUDECODE"
"""Set inside a Claude Code session; a CLI that sees it refuses to start (nested session)."""

_CLAUDE_WORD = re.compile(r"(?:^|[\s;&|(/'\"])claude(?=[\s'\"]|$)")


def search_path(environ: Mapping[str, str] | None = None) -> str:
    """PATH plus the project's own node_modules/.bin, where the pinned claude lives."""
    environ = os.environ if environ is None else environ
    path = environ.get("PATH", os.defpath)
    if PROJECT_BIN.is_dir():
        path = f"{path}{os.pathsep}{PROJECT_BIN}"
    return path


def find_claude(configured: str | None = None) -> str | None:
    """The `claude` the service runs: `configured` (CC_EXECUTOR_CLAUDE_PATH) when given, else
    the first on `search_path()`. None when there is none."""
    if configured:
        return shutil.which(configured) or (configured if os.access(configured, os.X_OK) else None)
    return shutil.which("claude", path=search_path())


def where_claude_is_looked_for(environ: Mapping[str, str] | None = None) -> str:
    """`find_claude`'s search, in words, for an error message that says where it looked."""
    environ = os.environ if environ is None else environ
    configured = environ.get("CC_EXECUTOR_CLAUDE_PATH")
    if configured:
        return f"CC_EXECUTOR_CLAUDE_PATH={configured}"
    return f"PATH ({environ.get('PATH', os.defpath)}) and {PROJECT_BIN}"


def mentions_claude(command: str | None = None, args: Sequence[str] | None = None) -> bool:
    """Whether a shell command line or an argv runs the `claude` executable (by name or path).

    The one answer to "is this a claude command?": a word `claude` (or a path ending in it)
    anywhere in a command line, since a shell line may start it after `cd x &&` or in a pipe;
    for an argv, its program."""
    if command is not None and _CLAUDE_WORD.search(command):
        return True
    return bool(args) and os.path.basename(args[0]) == "claude"


def adapt_claude_argv(argv: list[str]) -> list[str]:
    """`--output-format stream-json` with `-p` needs `--verbose`; add it when missing."""
    wants_stream = False
    for i, a in enumerate(argv):
        if a == "--output-format" and i + 1 < len(argv) and argv[i + 1] == "stream-json":
            wants_stream = True
        elif a == "--output-format=stream-json":
            wants_stream = True
    if wants_stream and "--verbose" not in argv:
        return [*argv, "--verbose"]
    return argv


def child_env(base: Mapping[str, str] | None = None, **overrides: str) -> dict[str, str]:
    """An environment for a child that may start the CLI: `base` (default: ours) without the
    nesting guard, plus `overrides`."""
    env = dict(os.environ if base is None else base)
    env.pop(NESTING_VAR, None)
    env.update(overrides)
    return env
