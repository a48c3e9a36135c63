"""The allow-list: which executables a job may run, compared by real path.

Why by real path: a client names a program (`claude`, `./bin/claude`, `/tmp/x/claude`); only
resolving it the way exec will, then comparing the file it is, stops `/tmp/x/claude` from
passing for the allow-listed `claude`.
"""

from __future__ import annotations

import os
import shutil

from ..claude_cli import find_claude, search_path
from ..protocol.errors import COMMAND_NOT_ALLOWED, SPAWN_FAILED, ErrorReason, RpcError


class AllowList:
    """Executables that may run, compared by real path so `/tmp/x/claude` is not `claude`."""

    def __init__(self, names: list[str], claude_path: str | None = None):
        self.names = list(dict.fromkeys(names))  # `--allow claude` twice is one entry
        self.claude_path = claude_path
        self.real: dict[str, str] = {}
        self._cache: dict[str, tuple[str, str]] = {}
        for name in self.names:
            found = find_claude(claude_path) if name == "claude" else shutil.which(
                name, path=search_path())
            if found:
                self.real[os.path.realpath(found)] = name

    def resolve(self, argv0: str, cwd: str | None = None) -> tuple[str, str]:
        """The absolute path to exec and the allow-list entry it matched, or RpcError naming
        why it is refused.

        A path with a slash is resolved against the job's `cwd`, as exec will resolve it:
        checking it against the server's own cwd let `../../x` name an allowed binary here and
        run another file there. The absolute path is what gets exec'd, so check and exec agree.
        """
        if os.sep in argv0:
            found = os.path.abspath(os.path.join(cwd or os.getcwd(), argv0))
            real = os.path.realpath(found) if os.path.exists(found) else None
        else:
            found, real = self._lookup(argv0)
        if not found or real is None:
            if argv0 in self.names:
                raise RpcError.because(SPAWN_FAILED, ErrorReason.EXECUTABLE_NOT_FOUND,
                                      f"executable not found: {argv0}", executable=argv0)
            raise self._not_allowed(argv0)
        if real not in self.real:
            raise self._not_allowed(argv0)
        return found, self.real[real]

    def _lookup(self, name: str) -> tuple[str | None, str | None]:
        """PATH search for a bare name, remembered: it runs on every request. A remembered
        answer is re-checked with one stat, so a removed binary is noticed. A bare `claude`
        is the configured `claude_path` when there is one (what the allow-list admitted),
        not whatever `claude` PATH finds first."""
        hit = self._cache.get(name)
        if hit is not None and os.path.exists(hit[0]):
            return hit
        if name == "claude" and self.claude_path and "claude" in self.names:
            found = find_claude(self.claude_path)
            found = os.path.abspath(found) if found else None  # exec'd from the job's cwd
        else:
            found = shutil.which(name, path=search_path())
        if not found:
            return None, None
        hit = (found, os.path.realpath(found))
        self._cache[name] = hit
        return hit

    def _not_allowed(self, argv0: str) -> RpcError:
        return RpcError.because(
            COMMAND_NOT_ALLOWED, ErrorReason.NOT_ALLOWED,
            f"command not allowed: {argv0} (allowed: {', '.join(self.names)})",
            executable=argv0, allowed=self.names)
