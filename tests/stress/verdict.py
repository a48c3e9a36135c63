"""Whether a finished run did what its test expected: pure functions, no I/O, no clock.

The runner, the report writer and the concurrent-instance picker all need the same answer to
"did this pass, and why not?", so the rules live here once. Everything takes plain values (an exit
code, an end reason, the output text) and returns frozen values, which keeps it trivially testable
and safe to call from any thread or event loop.

Matching must stay cheap on outputs of 10+ MiB: plain-text patterns are substring searches
(`str.__contains__`, linear on CPython), the haystack is case-folded at most once per call, regexes
are compiled once and cached, and a regex whose shape is known to backtrack exponentially (an
unbounded quantifier inside another one, e.g. `(a+)+`) is refused when the suite is loaded rather
than discovered as a hung report.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, Protocol

try:  # CPython's regex parser: used only to refuse exponential shapes; absent -> no check.
    from re import _constants as _re_constants
    from re import _parser as _re_parser
except ImportError:  # pragma: no cover - other interpreters
    _re_parser = None
    _re_constants = None


class Reason(str, enum.Enum):
    """Why a verdict is what it is. Reports group failures by this."""

    PASSED = "passed"
    EXIT_CODE = "exit_code"
    MISSING_PATTERNS = "missing_patterns"
    FORBIDDEN_PATTERN = "forbidden_pattern"
    TIMEOUT = "timeout"
    STALLED = "stalled"
    ERROR = "error"
    SKIPPED = "skipped"
    UNEXPECTED_END = "unexpected_end"
    """The test set `expect_end` (e.g. "stalled") and the run ended another way."""
    LEFTOVER_PROCESSES = "leftover_processes"
    """Processes of the job were still alive after the service reported its end."""


# ---------------------------------------------------------------------------------------------
# Patterns


REGEX_FLAGS: dict[str, re.RegexFlag] = {
    "i": re.IGNORECASE,
    "m": re.MULTILINE,
    "s": re.DOTALL,
    "x": re.VERBOSE,
}


@dataclass(frozen=True, slots=True)
class TextPattern:
    """A substring; case-insensitive (Unicode case folding) unless `case_sensitive`."""

    text: str
    case_sensitive: bool = False

    @property
    def label(self) -> str:
        return self.text

    def to_json(self) -> Any:
        if self.case_sensitive:
            return {"text": self.text, "case_sensitive": True}
        return self.text


@dataclass(frozen=True, slots=True)
class RegexPattern:
    """A Python regular expression searched anywhere in the output."""

    regex: str
    flags: str = ""

    def __post_init__(self) -> None:
        compile_regex(self.regex, self.flags)  # fail at construction, never at judging time

    @property
    def label(self) -> str:
        return f"/{self.regex}/{self.flags}"

    def compiled(self) -> re.Pattern[str]:
        return compile_regex(self.regex, self.flags)

    def to_json(self) -> Any:
        out: dict[str, Any] = {"regex": self.regex}
        if self.flags:
            out["flags"] = self.flags
        return out


Pattern = TextPattern | RegexPattern


def _nested_unbounded(items: Any, inside: bool) -> bool:
    """True when an unbounded repeat sits inside another: the classic exponential backtracker."""
    c = _re_constants
    for op, av in items:
        if op in (c.MAX_REPEAT, c.MIN_REPEAT):
            lo, hi, sub = av
            unbounded = hi == c.MAXREPEAT
            if unbounded and inside:
                return True
            if _nested_unbounded(sub, inside or unbounded):
                return True
        elif op == c.SUBPATTERN:
            if _nested_unbounded(av[-1], inside):
                return True
        elif op == c.BRANCH:
            if any(_nested_unbounded(b, inside) for b in av[1]):
                return True
        elif op in (c.ASSERT, c.ASSERT_NOT):
            if _nested_unbounded(av[1], inside):
                return True
        # POSSESSIVE_REPEAT and ATOMIC_GROUP never backtrack into themselves: deliberately allowed.
    return False


@lru_cache(maxsize=1024)
def compile_regex(regex: str, flags: str = "") -> re.Pattern[str]:
    """Compile once (cached). ValueError with a readable reason for anything we refuse."""
    if not isinstance(regex, str) or not regex:
        raise ValueError("regex must be a non-empty string")
    value = 0
    for ch in flags:
        if ch not in REGEX_FLAGS:
            raise ValueError(f"unknown regex flag {ch!r} in {flags!r} (allowed: i, m, s, x)")
        value |= REGEX_FLAGS[ch]
    try:
        compiled = re.compile(regex, value)
    except re.error as e:
        raise ValueError(f"invalid regex {regex!r}: {e}") from None
    if _re_parser is not None:
        try:
            tree = _re_parser.parse(regex, value)
        except Exception:  # pragma: no cover - compile succeeded, so parse should too
            tree = None
        if tree is not None and _nested_unbounded(list(tree), False):
            raise ValueError(
                f"regex {regex!r} nests an unbounded quantifier inside another (like '(a+)+'), "
                "which can take exponential time on large outputs; rewrite it, or make the outer "
                "one possessive ('*+', '++') or atomic ('(?>...)')"
            )
    return compiled


def parse_pattern(value: Any) -> Pattern:
    """A pattern from its JSON form: "text" | {"text", "case_sensitive"} | {"regex", "flags"}."""
    if isinstance(value, str):
        if not value:
            raise ValueError("a pattern must not be an empty string")
        return TextPattern(value)
    if isinstance(value, dict):
        keys = set(value)
        if "regex" in keys:
            unknown = keys - {"regex", "flags"}
            if unknown:
                raise ValueError(
                    f"unknown key(s) {sorted(unknown)} in a regex pattern (allowed: regex, flags)"
                )
            flags = value.get("flags", "")
            if not isinstance(flags, str):
                raise ValueError(f"'flags' must be a string like \"i\", got {describe_json(flags)}")
            if not isinstance(value["regex"], str):
                raise ValueError(f"'regex' must be a string, got {describe_json(value['regex'])}")
            return RegexPattern(value["regex"], flags)
        if "text" in keys:
            unknown = keys - {"text", "case_sensitive"}
            if unknown:
                raise ValueError(
                    f"unknown key(s) {sorted(unknown)} in a text pattern "
                    "(allowed: text, case_sensitive)"
                )
            text, cs = value["text"], value.get("case_sensitive", False)
            if not isinstance(text, str) or not text:
                raise ValueError(f"'text' must be a non-empty string, got {describe_json(text)}")
            if not isinstance(cs, bool):
                raise ValueError(f"'case_sensitive' must be true or false, got {describe_json(cs)}")
            return TextPattern(text, cs)
        raise ValueError(
            f"a pattern object needs 'regex' or 'text', got keys {sorted(keys) or 'none'}"
        )
    raise ValueError(
        'a pattern is a string, {"regex": "...", "flags": "i"} or '
        f'{{"text": "...", "case_sensitive": true}}; got {describe_json(value)}'
    )


def describe_json(value: Any) -> str:
    """How a JSON value looks to the person who wrote it, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {shown!r}"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# ---------------------------------------------------------------------------------------------
# Rules


@dataclass(frozen=True, slots=True)
class MatchRule:
    """How many expected patterns must be found: all, any (at least one), or a minimum ratio."""

    kind: Literal["all", "any", "min_ratio"]
    min_ratio: float | None = None

    def required(self, total: int) -> int:
        if total <= 0:
            return 0
        if self.kind == "all":
            return total
        if self.kind == "any":
            return 1
        assert self.min_ratio is not None
        return min(total, max(0, math.ceil(self.min_ratio * total - 1e-9)))

    def describe(self, total: int) -> str:
        if self.kind == "all":
            return f"all {total}"
        if self.kind == "any":
            return "at least 1"
        return f"{self.min_ratio:.0%} ({self.required(total)} of {total})"

    def to_json(self) -> Any:
        return {"min_ratio": self.min_ratio} if self.kind == "min_ratio" else self.kind

    @classmethod
    def from_json(cls, value: Any) -> MatchRule:
        if value in ("all", "any") and isinstance(value, str):
            return cls(value)  # type: ignore[arg-type]
        if isinstance(value, dict) and set(value) == {"min_ratio"}:
            r = value["min_ratio"]
            if isinstance(r, bool) or not isinstance(r, int | float) or not 0 <= r <= 1:
                raise ValueError(f"min_ratio must be a number from 0 to 1, got {describe_json(r)}")
            return cls("min_ratio", float(r))
        raise ValueError(f'match must be "all", "any" or {{"min_ratio": 0.8}}; got {describe_json(value)}')


MATCH_ALL = MatchRule("all")
MATCH_ANY = MatchRule("any")
MATCH_NONE_REQUIRED = MatchRule("min_ratio", 0.0)


@dataclass(frozen=True, slots=True)
class ExitExpectation:
    """Which exit codes count as success. Negative codes are signals (-9 = SIGKILL)."""

    kind: Literal["exact", "nonzero", "any"]
    code: int = 0

    def accepts(self, exit_code: int) -> bool:
        if self.kind == "any":
            return True
        if self.kind == "nonzero":
            return exit_code != 0
        return exit_code == self.code

    def describe(self) -> str:
        if self.kind == "exact":
            return str(self.code)
        return "non-zero" if self.kind == "nonzero" else "any"

    def to_json(self) -> Any:
        return self.code if self.kind == "exact" else self.kind

    @classmethod
    def from_json(cls, value: Any) -> ExitExpectation:
        if isinstance(value, int) and not isinstance(value, bool):
            if not -64 <= value <= 255:
                raise ValueError(f"expect_exit must be from -64 to 255, got {value}")
            return cls("exact", value)
        if value in ("nonzero", "any") and isinstance(value, str):
            return cls(value)  # type: ignore[arg-type]
        raise ValueError(f'expect_exit must be an integer, "nonzero" or "any"; got {describe_json(value)}')


EXIT_ZERO = ExitExpectation("exact", 0)
EXIT_NONZERO = ExitExpectation("nonzero")


@dataclass(frozen=True, slots=True)
class PassThreshold:
    """How many of a test's repeats must pass. Neither field set: every repeat must pass."""

    passes: int | None = None
    of: int | None = None
    ratio: float | None = None

    def required(self, runs: int) -> int:
        if self.ratio is not None:
            return max(1, math.ceil(self.ratio * runs - 1e-9))
        if self.passes is not None:
            return self.passes
        return runs

    def to_json(self) -> Any:
        if self.ratio is not None:
            return self.ratio
        if self.passes is not None:
            return {"passes": self.passes, "of": self.of}
        return None

    @classmethod
    def from_json(cls, value: Any) -> PassThreshold:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not 0 < value <= 1:
                raise ValueError(f"a pass_threshold ratio must be above 0 and at most 1, got {value}")
            return cls(ratio=float(value))
        if isinstance(value, dict):
            if set(value) != {"passes", "of"}:
                raise ValueError(
                    f'pass_threshold object needs exactly "passes" and "of", got keys {sorted(value)}'
                )
            p, of = value["passes"], value["of"]
            for name, v in (("passes", p), ("of", of)):
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise ValueError(f"pass_threshold.{name} must be a positive integer, got {describe_json(v)}")
            if p > of:
                raise ValueError(f"pass_threshold.passes ({p}) cannot exceed pass_threshold.of ({of})")
            return cls(passes=p, of=of)
        raise ValueError(
            f'pass_threshold must be {{"passes": 4, "of": 5}} or a ratio like 0.8; got {describe_json(value)}'
        )


ALL_REPEATS = PassThreshold()


# ---------------------------------------------------------------------------------------------
# Matching


@dataclass(frozen=True, slots=True)
class Coverage:
    """Which patterns were found, by label, in the order the test lists them."""

    found: tuple[str, ...]
    missing: tuple[str, ...]

    @property
    def total(self) -> int:
        return len(self.found) + len(self.missing)

    @property
    def ratio(self) -> float:
        return len(self.found) / self.total if self.total else 1.0


class _Haystack:
    """The output, with its case-folded copy made once and only if a pattern needs it."""

    __slots__ = ("text", "_folded")

    def __init__(self, text: str):
        self.text = text
        self._folded: str | None = None

    @property
    def folded(self) -> str:
        if self._folded is None:
            self._folded = self.text.casefold()
        return self._folded

    def contains(self, pattern: Pattern) -> bool:
        if isinstance(pattern, TextPattern):
            if pattern.case_sensitive:
                return pattern.text in self.text
            # casefold, not lower: lower() is context-sensitive (final sigma), so a slice of the
            # output could fail to match the output it came from.
            return pattern.text.casefold() in self.folded
        return pattern.compiled().search(self.text) is not None


def _coverage(patterns: Sequence[Pattern], hay: _Haystack) -> Coverage:
    found: list[str] = []
    missing: list[str] = []
    for p in patterns:
        (found if hay.contains(p) else missing).append(p.label)
    return Coverage(tuple(found), tuple(missing))


def pattern_coverage(patterns: Sequence[Pattern], text: str) -> Coverage:
    """Which of `patterns` occur in `text`. Also what "most_patterns" instance picking ranks by."""
    return _coverage(patterns, _Haystack(text))


# ---------------------------------------------------------------------------------------------
# Judging


class Judgeable(Protocol):
    """What `judge` reads from a test (a `stress.suites.Test` has all of it)."""

    expected_patterns: Sequence[Pattern]
    match: MatchRule
    must_not_contain: Sequence[Pattern]
    expect_exit: ExitExpectation
    # Optional: `expect_end` (None, or one of EXPECTABLE_ENDS); read with getattr.


EXPECTABLE_ENDS = ("exited", "stalled", "timeout")
"""Values of a test's `expect_end`: how the run must end. "exited" (the default when unset) means
it ends by itself, judged by `expect_exit`; "stalled" / "timeout" mean the service must end it that
way (a fault-injection test that proves stall or timeout detection), so its exit code is not judged."""

END_REASONS = frozenset(
    {"exited", "signalled", "timeout", "stalled", "cancelled", "shutdown", "error", "skipped"}
)
"""The end reasons `judge` understands: the process runner's `EndReason` values plus two of ours
("error": it could not be started or the transport broke; "skipped": it was never run)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    passed: bool
    reason: Reason
    """The first failure in order: skipped, error, timeout/stalled, exit_code, forbidden, missing."""
    message: str
    exit_code: int | None
    end_reason: str
    patterns_found: tuple[str, ...]
    patterns_missing: tuple[str, ...]
    patterns_required: int
    forbidden_seen: tuple[str, ...]
    failures: tuple[Reason, ...]
    """Every failure found, not only the first (empty when passed)."""

    @property
    def coverage(self) -> float:
        total = len(self.patterns_found) + len(self.patterns_missing)
        return len(self.patterns_found) / total if total else 1.0

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "reason": self.reason.value,
            "message": self.message,
            "exit_code": self.exit_code,
            "end_reason": self.end_reason,
            "patterns_found": list(self.patterns_found),
            "patterns_missing": list(self.patterns_missing),
            "patterns_required": self.patterns_required,
            "forbidden_seen": list(self.forbidden_seen),
            "failures": [f.value for f in self.failures],
        }


def _quote_list(labels: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(s) for s in labels[:limit])
    return shown + (f" and {len(labels) - limit} more" if len(labels) > limit else "")


def judge(
    test: Judgeable,
    exit_code: int | None,
    reason: str | enum.Enum,
    output_text: str,
    *,
    detail: str | None = None,
    leftovers: Sequence[str] = (),
) -> Verdict:
    """Judge one run of `test`.

    `reason` is how the run ended (see END_REASONS; the runner's EndReason works as is).
    `output_text` is whatever the caller decided to match against (stdout, or stdout+stderr).
    `detail` explains an "error" or "skipped" end for the message.
    `leftovers` describes processes of the job still alive after its end ("pid: cmdline"); any
    fails the run (reason leftover_processes, after how it ended).
    A test's `expect_end` ("stalled" / "timeout") turns that end into the expected one.
    """
    end = str(getattr(reason, "value", reason))
    if end not in END_REASONS:
        raise ValueError(f"unknown end reason {end!r} (expected one of {sorted(END_REASONS)})")
    if end in ("exited", "signalled") and exit_code is None:
        raise ValueError(f"an {end!r} run needs an exit code")

    expect_end = getattr(test, "expect_end", None)
    if expect_end is not None and expect_end not in EXPECTABLE_ENDS:
        raise ValueError(f"unknown expect_end {expect_end!r} (expected one of {EXPECTABLE_ENDS})")
    hay = _Haystack(output_text or "")
    patterns = tuple(test.expected_patterns)
    cov = _coverage(patterns, hay)
    required = test.match.required(len(patterns))
    forbidden = _coverage(tuple(test.must_not_contain), hay).found

    failures: list[Reason] = []
    notes: list[str] = []
    if end == "skipped":
        failures.append(Reason.SKIPPED)
        notes.append(f"skipped: {detail}" if detail else "skipped")
    elif end in ("error", "cancelled", "shutdown"):
        failures.append(Reason.ERROR)
        what = {"error": "run failed", "cancelled": "run was cancelled", "shutdown": "harness shut down"}[end]
        notes.append(f"{what}: {detail}" if detail else what)
    elif end in ("timeout", "stalled") and expect_end != end:
        failures.append(Reason.TIMEOUT if end == "timeout" else Reason.STALLED)
        limit = getattr(test, "timeout" if end == "timeout" else "stall_timeout", None)
        if end == "timeout":
            notes.append(f"timed out after {limit:g} s" if limit else "timed out")
        else:
            notes.append(f"stalled: no output for {limit:g} s" if limit else "stalled: no output")
        if expect_end is not None:
            failures.append(Reason.UNEXPECTED_END)
            notes.append(f"expected the run to end {expect_end!r}")
    elif end in ("exited", "signalled") and expect_end not in (None, "exited"):
        failures.append(Reason.UNEXPECTED_END)
        how = f"exited with code {exit_code}" if end == "exited" else f"was killed (exit {exit_code})"
        notes.append(f"expected the run to end {expect_end!r}, but it {how}")

    ran = end in ("exited", "signalled")
    if leftovers and end not in ("skipped",):
        failures.append(Reason.LEFTOVER_PROCESSES)
        notes.append(f"{len(leftovers)} process(es) of the job outlived its end: "
                     f"{_quote_list(list(leftovers), limit=4)}")
    if ran and expect_end in (None, "exited") and not test.expect_exit.accepts(exit_code):  # type: ignore[arg-type]
        failures.append(Reason.EXIT_CODE)
        notes.append(f"exit code {exit_code}, expected {test.expect_exit.describe()}")
    if end != "skipped" and forbidden:
        failures.append(Reason.FORBIDDEN_PATTERN)
        notes.append(f"output contains forbidden {_quote_list(forbidden)}")
    if end != "skipped" and len(cov.found) < required:
        failures.append(Reason.MISSING_PATTERNS)
        notes.append(
            f"found {len(cov.found)} of {len(patterns)} patterns, needed "
            f"{test.match.describe(len(patterns))}; missing {_quote_list(cov.missing)}"
        )

    passed = not failures
    if passed:
        if expect_end in ("stalled", "timeout"):
            parts = [f"ended {end} as expected"]
        else:
            parts = [f"exit {exit_code} (expected {test.expect_exit.describe()})"]
        if patterns:
            parts.append(f"{len(cov.found)}/{len(patterns)} patterns found (needed {required})")
        message = "passed: " + ", ".join(parts)
    else:
        message = "; ".join(notes)
    return Verdict(
        passed=passed,
        reason=failures[0] if failures else Reason.PASSED,
        message=message,
        exit_code=exit_code,
        end_reason=end,
        patterns_found=cov.found,
        patterns_missing=cov.missing,
        patterns_required=required,
        forbidden_seen=forbidden,
        failures=tuple(failures),
    )


@dataclass(frozen=True, slots=True)
class RepeatVerdict:
    """The judgement over all repeats of one test."""

    passed: bool
    passes: int
    runs: int
    required: int
    message: str


def judge_repeats(threshold: PassThreshold, verdicts: Sequence[Verdict]) -> RepeatVerdict:
    """Apply a test's `pass_threshold` to the verdicts of its repeats (skipped runs don't count)."""
    counted = [v for v in verdicts if v.reason is not Reason.SKIPPED]
    runs = len(counted)
    passes = sum(v.passed for v in counted)
    required = threshold.required(runs) if runs else 1
    ok = runs > 0 and passes >= required
    if not runs:
        message = "no repeat was run"
    else:
        message = f"{passes} of {runs} repeats passed, needed {required}"
    return RepeatVerdict(ok, passes, runs, required, message)
