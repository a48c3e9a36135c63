"""Option text -> numbers for load runs: durations, and the error every load option raises.

Owns `OptionError` (a malformed load option: one line naming the option and the bad token, exit 2),
`parse_duration` / `fmt_duration` (the one duration syntax of --stages, --duration,
--step-duration and threshold limits) and `MAX_DURATION`.

Why a unit is required: k6 reads a bare duration number as milliseconds, this harness reads seconds
everywhere else (suite timeouts); a k6 user typing `--duration 60` or `p95_duration<500` would get
a run 1000 times off either way, so a bare number is refused with the token named.

Pure; imports nothing of the harness (profile.py and thresholds.py import it).
"""

from __future__ import annotations

import re

MAX_DURATION = 24 * 3600.0
"""The longest duration any load option takes, seconds."""

_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


class OptionError(ValueError):
    """A malformed load option; the message names the option and the bad token."""


def parse_duration(text: str, option: str) -> float:
    """'500ms' -> 0.5, '30s' -> 30.0, '1m30s' -> 90.0; a bare number has no unit and is refused."""
    t = text.strip().lower()
    if not _DURATION.fullmatch(t):
        hint = " has no unit" if _NUMBER.fullmatch(t) else " is not a duration"
        raise OptionError(f"{option}: {text!r}{hint} (expected e.g. 500ms, 30s, 2m, 1m30s)")
    seconds = sum(float(n) * _UNIT[u] for n, u in _DURATION_PART.findall(t))
    if seconds > MAX_DURATION:
        raise OptionError(f"{option}: {text!r} is longer than {fmt_duration(MAX_DURATION)}")
    return seconds


def fmt_duration(seconds: float) -> str:
    """Seconds as the options write them: 0.5 -> '500ms', 90 -> '1m30s', 30 -> '30s'."""
    if 0 < seconds < 1:
        return f"{seconds * 1000:g}ms"
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    parts = [f"{int(h)}h" if h else "", f"{int(m)}m" if m else "", f"{s:g}s" if s else ""]
    return "".join(parts) or "0s"


__all__ = ["MAX_DURATION", "OptionError", "fmt_duration", "parse_duration"]
