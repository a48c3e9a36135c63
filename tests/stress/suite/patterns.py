"""Patterns a test expects (or forbids) in a run's output, and which of them a text contains.

Owns the pattern values (`TextPattern`, `RegexPattern`), reading them from their JSON form, the
regex safety check, and the cheap matching that `verdict.judge` and the instance picker share.
`describe_json`, the wording of a bad JSON value in error messages, lives here because the
pattern parser is its first user; the rules in `verdict` and the suite loaders use it too.

Why matching is shaped the way it is: outputs reach 10+ MiB, so plain-text patterns are substring
searches (`str.__contains__`, linear on CPython), the haystack is case-folded at most once per
call, regexes are compiled once and cached, and a regex whose shape is known to backtrack
exponentially (an unbounded quantifier inside another one, e.g. `(a+)+`) is refused when the
suite is loaded rather than discovered as a hung report.

Pure: no I/O, no clock. Imports nothing of the harness or of the service (never
`cc_executor.jobs/server/process/tree/registry`), so every other harness module may import it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

try:  # CPython's regex parser: used only to refuse exponential shapes; absent -> no check.
    from re import _constants as _re_constants
    from re import _parser as _re_parser
except ImportError:  # pragma: no cover - other interpreters
    _re_parser = None
    _re_constants = None


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
            _lo, hi, sub = av
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
        elif op in (c.ASSERT, c.ASSERT_NOT) and _nested_unbounded(av[1], inside):
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
        except Exception:  # noqa: BLE001  # pragma: no cover - compile succeeded, so parse should too
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


class Haystack:
    """The output, with its case-folded copy made once and only if a pattern needs it."""

    __slots__ = ("_folded", "text")

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


def coverage_in(patterns: Sequence[Pattern], hay: Haystack) -> Coverage:
    """Which of `patterns` occur in `hay`; one haystack serves several pattern lists."""
    found: list[str] = []
    missing: list[str] = []
    for p in patterns:
        (found if hay.contains(p) else missing).append(p.label)
    return Coverage(tuple(found), tuple(missing))


def pattern_coverage(patterns: Sequence[Pattern], text: str) -> Coverage:
    """Which of `patterns` occur in `text`. Also what "most_patterns" instance picking ranks by."""
    return coverage_in(patterns, Haystack(text))

