"""Option text -> values: the small parsers the harness's command lines share.

Owns: `UsageError` (bad options or suites: printed, exit 2), the argparse type `int_at_least`,
the parsers of percentages, weights and `--server URL[@W[:C]]`, and `redact_argv` (the command
line as reports and the history show it, tokens hidden).

Why a module of its own: both `stress.cli` (`python -m stress.local|complex`) and
`stress.history.cli` (`python -m stress.history`) need `int_at_least`; when it lived in
`stress.cli`, reading the history imported the whole run machinery and closed an import circle
(cli -> history -> history_cli -> cli). Must not import any other `stress` module: everything
may import this one.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable


class UsageError(Exception):
    """Bad options or suites: printed, exit 2."""


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= `minimum`, with a message naming what was wrong."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {v}")
        return v
    return parse


def parse_percent(text: str, option: str) -> float:
    """'25%', '25' -> 25.0; UsageError naming the option otherwise."""
    raw = text.strip().removesuffix("%")
    try:
        v = float(raw)
    except ValueError:
        raise UsageError(f"{option}: not a percentage: {text!r} (expected e.g. 25%)") from None
    if not (v > 0) or v == float("inf"):
        raise UsageError(f"{option}: must be above 0%, got {text!r}")
    return v


_WEIGHT = re.compile(r"^(?P<w>\d+(?:\.\d+)?)(?::(?P<c>\d+))?$")


def parse_weight(text: str, where: str) -> tuple[float, int | None]:
    """'2' -> (2.0, None); '2:3' -> (2.0, 3)."""
    m = _WEIGHT.match(text.strip())
    if m is None or float(m["w"]) <= 0 or (m["c"] is not None and int(m["c"]) < 1):
        raise UsageError(f"{where}: bad weight {text!r}: expected W or W:C with W > 0 and C >= 1, "
                         "e.g. 2 or 2:3")
    return float(m["w"]), (int(m["c"]) if m["c"] is not None else None)


def split_server(text: str) -> tuple[str, float | None, int | None]:
    """'ws://h:1/ws@2:3' -> ('ws://h:1/ws', 2.0, 3); a URL without @W keeps weight None."""
    head, sep, tail = text.strip().rpartition("@")
    if sep and _WEIGHT.match(tail):
        w, c = parse_weight(tail, f"--server {text!r}")
        url = head
    else:
        url, w, c = text.strip(), None, None
    if not url.startswith(("ws://", "wss://")):
        raise UsageError(f"--server must be a ws:// or wss:// URL, optionally @WEIGHT[:CONCURRENCY]; "
                         f"got {text!r}")
    return url, w, c


_SECRET_OPTIONS = ("--token", "--server-token")


def redact_argv(argv: list[str]) -> list[str]:
    """The command line for reports and the history, with tokens shown as <token>."""
    out: list[str] = []
    hide_next = None
    for a in argv:
        if hide_next is not None:
            out.append("<token>" if hide_next == "--token" else a.split("=", 1)[0] + "=<token>")
            hide_next = None
            continue
        opt = a.split("=", 1)[0]
        if a in _SECRET_OPTIONS:
            hide_next = a
            out.append(a)
        elif opt in _SECRET_OPTIONS and "=" in a:
            out.append(f"{opt}=<token>" if opt == "--token"
                       else f"{opt}={a.split('=', 2)[1]}=<token>" if a.count("=") >= 2 else f"{opt}=<token>")
        else:
            out.append(a)
    return out
