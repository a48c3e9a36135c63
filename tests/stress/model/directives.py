"""Prompt directives: the small language a test writes into a prompt to script the model's reply.

A directive is `[[name]]` or `[[name: arguments]]` anywhere in the prompt. Tests script faults and
reply shapes this way so the prompt alone decides the reply: the server reads nothing else (no
test's expected patterns, no shared state besides per-prompt attempt counters). The same argument
syntax is used by the server's own fault options, so one parser serves both.

Unknown names are an error rather than plain text, so a typo such as `[[sise: 1MiB]]` fails loudly
instead of silently producing a generic reply. Only `[[` immediately followed by a letter starts a
directive, so shell tests like `[[ -f x ]]` in ordinary prose are left alone.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

MAX_SIZE_BYTES = 64 * 1024 * 1024
"""Largest sized reply; bigger ones would only measure this server, not the CLI."""

FOREVER = math.inf
"""A stall duration meaning: until the client goes away or the server shuts down."""

ERROR_STATUSES = {400, 401, 403, 404, 408, 409, 413, 429, 500, 502, 503, 504, 529}

DIRECTIVE_RE = re.compile(r"\[\[([A-Za-z][A-Za-z_-]*)(?:\s*:(.*?))?\]\]", re.DOTALL)

_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m)?$", re.IGNORECASE)
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*(b|kb|kib|k|mb|mib|m|gb|gib)?$", re.IGNORECASE)
_SIZE_UNITS = {
    None: 1, "b": 1, "k": 1024, "kib": 1024, "kb": 1000, "m": 1024**2, "mib": 1024**2,
    "mb": 1000**2, "gib": 1024**3, "gb": 1000**3,
}


class DirectiveError(ValueError):
    """A directive (in a prompt or a server option) that cannot be understood."""


@dataclass(frozen=True)
class Repeat:
    """How many attempts at the same prompt a fault hits before the server lets it succeed.

    `times=None` means every attempt. Counting per prompt keeps retries deterministic: the third
    identical request gets the same answer no matter how many other prompts ran in between.
    """

    times: int | None = None

    def hits(self, attempt: int) -> bool:
        """Whether the fault applies to this attempt (attempts count from 1)."""
        return self.times is None or attempt <= self.times

    def describe(self) -> str:
        return "always" if self.times is None else f"x{self.times}"


@dataclass(frozen=True)
class ErrorFault:
    status: int
    repeat: Repeat = Repeat(1)
    retry_after: float | None = None


@dataclass(frozen=True)
class StallFault:
    seconds: float = FOREVER
    repeat: Repeat = Repeat(None)
    after: int = 1
    """Text deltas sent before the stall begins (0: stall right after the response headers)."""


@dataclass(frozen=True)
class DropFault:
    repeat: Repeat = Repeat(None)
    after: int = 1
    """Text deltas sent before the connection is reset."""


@dataclass(frozen=True)
class Plan:
    """Everything the directives of one prompt (or the server's defaults) ask for."""

    echoes: tuple[str, ...] = ()
    size: int | None = None
    latency: float = 0.0
    delay: float = 0.0
    stall: StallFault | None = None
    error: ErrorFault | None = None
    drop: DropFault | None = None
    bash: tuple[str, ...] = ()
    bash_background: tuple[bool, ...] = ()

    def over(self, defaults: "Plan") -> "Plan":
        """This plan with unset fields taken from `defaults` (the server's options)."""
        return Plan(
            echoes=self.echoes or defaults.echoes,
            size=self.size if self.size is not None else defaults.size,
            latency=self.latency or defaults.latency,
            delay=self.delay or defaults.delay,
            stall=self.stall or defaults.stall,
            error=self.error or defaults.error,
            drop=self.drop or defaults.drop,
            bash=self.bash or defaults.bash,
            bash_background=self.bash_background if self.bash else defaults.bash_background,
        )


def parse_duration(text: str, *, what: str = "duration") -> float:
    """Seconds from `20ms`, `1.5s`, `2m` or a bare number of seconds."""
    match = _DURATION_RE.match(text.strip())
    if not match:
        raise DirectiveError(f"bad {what} {text!r}: expected a number with ms, s or m (e.g. 20ms, 30s)")
    value, unit = float(match.group(1)), (match.group(2) or "s").lower()
    return value / 1000 if unit == "ms" else value * 60 if unit == "m" else value


def parse_size(text: str) -> int:
    """Bytes from `1MiB`, `512KiB`, `2MB` (decimal), `100B` or a bare byte count."""
    match = _SIZE_RE.match(text.strip())
    if not match:
        raise DirectiveError(f"bad size {text!r}: expected e.g. 1MiB, 512KiB, 2MB or 4096")
    unit = match.group(2).lower() if match.group(2) else None
    size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if size > MAX_SIZE_BYTES:
        raise DirectiveError(f"size {text!r} is over the {MAX_SIZE_BYTES // 1024**2} MiB limit")
    return size


def _parse_repeat(word: str) -> Repeat | None:
    low = word.lower()
    if low == "always":
        return Repeat(None)
    if re.fullmatch(r"x\d+", low):
        return Repeat(int(low[1:]))
    return None


def _parse_after(word: str) -> int | None:
    match = re.fullmatch(r"after=(\d+)", word.lower())
    return int(match.group(1)) if match else None


def parse_error(args: str) -> ErrorFault:
    """`STATUS [xN|always] [retry-after=SECONDS]`; a bare status fails once, then succeeds."""
    words = args.split()
    if not words or not words[0].isdigit():
        raise DirectiveError(f"error needs an HTTP status first, e.g. [[error: 529 x2]]; got {args!r}")
    status = int(words[0])
    if status not in ERROR_STATUSES:
        raise DirectiveError(f"error status {status} not supported; use one of {sorted(ERROR_STATUSES)}")
    repeat, retry_after = Repeat(1), None
    for word in words[1:]:
        if (rep := _parse_repeat(word)) is not None:
            repeat = rep
        elif word.lower().startswith("retry-after="):
            retry_after = parse_duration(word.split("=", 1)[1], what="retry-after")
        else:
            raise DirectiveError(f"error: unexpected {word!r}; expected xN, always or retry-after=S")
    return ErrorFault(status, repeat, retry_after)


def parse_stall(args: str) -> StallFault:
    """`[DURATION|forever] [xN|always] [after=N]`; default: forever, every attempt, after 1 delta."""
    seconds, repeat, after = FOREVER, Repeat(None), 1
    for word in args.split():
        if word.lower() == "forever":
            seconds = FOREVER
        elif (rep := _parse_repeat(word)) is not None:
            repeat = rep
        elif (n := _parse_after(word)) is not None:
            after = n
        else:
            seconds = parse_duration(word, what="stall duration")
    return StallFault(seconds, repeat, after)


def parse_drop(args: str) -> DropFault:
    """`[xN|always] [after=N]`; default: every attempt, after 1 delta."""
    repeat, after = Repeat(None), 1
    for word in args.split():
        if (rep := _parse_repeat(word)) is not None:
            repeat = rep
        elif (n := _parse_after(word)) is not None:
            after = n
        else:
            raise DirectiveError(f"drop: unexpected {word!r}; expected xN, always or after=N")
    return DropFault(repeat, after)


def _need_args(name: str, args: str | None) -> str:
    if args is None or not args.strip():
        raise DirectiveError(f"[[{name}]] needs an argument, e.g. [[{name}: ...]]")
    return args


def parse_plan(text: str) -> Plan:
    """The plan that the directives in `text` ask for (an empty Plan when there are none)."""
    plan = Plan()
    for match in DIRECTIVE_RE.finditer(text):
        name, args = match.group(1).lower(), match.group(2)
        plan = apply_directive(plan, name, args)
    return plan


def apply_directive(plan: Plan, name: str, args: str | None) -> Plan:
    """`plan` updated by one directive; raises DirectiveError naming what is wrong."""
    if name == "echo":
        return replace(plan, echoes=plan.echoes + (_need_args(name, args).strip(),))
    if name == "size":
        return replace(plan, size=parse_size(_need_args(name, args)))
    if name == "latency":
        return replace(plan, latency=parse_duration(_need_args(name, args), what="latency"))
    if name == "delay":
        return replace(plan, delay=parse_duration(_need_args(name, args), what="delay"))
    if name == "stall":
        return replace(plan, stall=parse_stall(args or ""))
    if name == "error":
        return replace(plan, error=parse_error(_need_args(name, args)))
    if name == "drop":
        return replace(plan, drop=parse_drop(args or ""))
    if name in ("bash", "bash-bg"):
        command = _need_args(name, args).strip()
        return replace(
            plan,
            bash=plan.bash + (command,),
            bash_background=plan.bash_background + (name == "bash-bg",),
        )
    raise DirectiveError(f"unknown directive [[{name}]]; known: {', '.join(KNOWN)}")


KNOWN = ("echo", "size", "latency", "delay", "stall", "error", "drop", "bash", "bash-bg")


def strip_directives(text: str) -> str:
    """`text` without its directives, so arithmetic and titles see only the prose."""
    return DIRECTIVE_RE.sub(" ", text)
