"""Whether a finished run did what its test expected: pure functions, no I/O, no clock.

The runner, the report writer and the concurrent-instance picker all need the same answer to
"did this pass, and why not?", so the rules live here once. Everything takes plain values (an exit
code, an end reason, the output text) and returns frozen values, which keeps it trivially testable
and safe to call from any thread or event loop.

Owns: why a verdict is what it is (`Reason`), the rules a test sets (`MatchRule`,
`ExitExpectation`, `PassThreshold`), judging one attempt (`judge`) and the attempts of one case
together (`judge_repeats`). The patterns and the matching are in `stress.suite.patterns`; their names are
re-exported here, since most callers import them with the rules.

Imports only `stress.suite.patterns` and `stress.suite.assert_eval` (the `assert` list's
results, scored here into the verdict): never the suite loaders, the runner, or the service's internals
(`cc_executor.jobs/server/process/tree/registry`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from stress.suite.assert_eval import AssertionResult, score
from stress.suite.patterns import (
    REGEX_FLAGS,
    Coverage,
    Haystack,
    Pattern,
    RegexPattern,
    TextPattern,
    compile_regex,
    coverage_in,
    describe_json,
    parse_pattern,
    pattern_coverage,
)

__all__ = [  # the patterns' names too: callers import them from here with the rules
    "ALL_REPEATS", "END_REASONS", "EXIT_NONZERO", "EXIT_ZERO", "EXPECTABLE_ENDS", "MATCH_ALL",
    "MATCH_ANY", "MATCH_NONE_REQUIRED", "REGEX_FLAGS", "Coverage", "ExitExpectation", "Judgeable",
    "MatchRule", "PassThreshold", "Pattern", "Reason", "RegexPattern", "RepeatVerdict", "TextPattern",
    "Verdict", "compile_regex", "describe_json", "judge", "judge_repeats", "parse_pattern",
    "pattern_coverage",
]


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
    ASSERTION_FAILED = "assertion_failed"
    """The test's `assert` list did not pass (an assertion failed, or the score missed `threshold`)."""


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
# Judging


class Judgeable(Protocol):
    """What `judge` reads from a test (a `stress.suite.SuiteTest` has all of it)."""

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
    {"exited", "signalled", "timeout", "stalled", "cancelled", "shutdown", "error", "skipped",
     "memory_limit", "process_limit", "cpu_limit", "output_limit"}
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
    assertions: tuple[AssertionResult, ...] = ()
    """Every assertion of the test's `assert` list with passed / failed / skipped and why."""

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
            "assertions": [r.to_json() for r in self.assertions],
        }


def _quote_list(labels: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(s) for s in labels[:limit])
    return shown + (f" and {len(labels) - limit} more" if len(labels) > limit else "")


_ERROR_ENDS = {"error": "run failed", "cancelled": "run was cancelled", "shutdown": "harness shut down",
               # A job the service ended at one of its resource limits (execute `limits`).
               "memory_limit": "ended at its memory limit", "process_limit": "ended at its process limit",
               "cpu_limit": "ended at its CPU-time limit", "output_limit": "ended at its output limit"}
"""Ends that mean the attempt never produced a result to judge, with how a message says so."""


@dataclass(frozen=True, slots=True)
class _Matched:
    """What the output showed of a test's patterns, computed once per attempt."""

    total: int
    coverage: Coverage
    required: int
    forbidden: tuple[str, ...]


def judge(
    test: Judgeable,
    exit_code: int | None,
    reason: str | enum.Enum,
    output_text: str,
    *,
    detail: str | None = None,
    leftovers: Sequence[str] = (),
    assertions: Sequence[AssertionResult] = (),
) -> Verdict:
    """Judge one attempt of `test`.

    `reason` is how the run ended (see END_REASONS; the runner's EndReason works as is).
    `output_text` is whatever the caller decided to match against (stdout, or stdout+stderr).
    `detail` explains an "error" or "skipped" end for the message.
    `leftovers` describes processes of the job still alive after its end ("pid: cmdline"); any
    fails the run (reason leftover_processes, after how it ended).
    A test's `expect_end` ("stalled" / "timeout") turns that end into the expected one.
    `assertions` are the results of the test's `assert` list on this attempt's answer
    (`stress.suite.assert_eval`); they fail the run (assertion_failed, last in order) unless they
    pass, or their weighted score reaches the test's `threshold`.

    Failures are collected in a fixed order (how it ended, leftovers, exit code, forbidden,
    missing) so that `reason`, the first, is the most fundamental one.
    """
    end = _end_name(reason, exit_code)
    expect_end = _expected_end(test)
    matched = _match_output(test, output_text or "")
    failures = _end_failures(test, end, expect_end, exit_code, detail)
    failures += _result_failures(test, end, expect_end, exit_code, leftovers, matched)
    if end != "skipped" and assertions:
        sc = score(assertions, getattr(test, "threshold", None))
        if not sc.passed:
            failures.append((Reason.ASSERTION_FAILED, sc.describe()))
    passed = not failures
    if passed:
        message = _passed_message(test, end, expect_end, exit_code, matched)
        if assertions:
            ok = sum(r.status == "passed" for r in assertions)
            skipped = sum(r.status == "skipped" for r in assertions)
            message += f", {ok}/{len(assertions)} assertions passed" + (
                f" ({skipped} skipped)" if skipped else "")
    else:
        message = "; ".join(note for _, note in failures)
    return Verdict(
        passed=passed,
        reason=failures[0][0] if failures else Reason.PASSED,
        message=message,
        exit_code=exit_code,
        end_reason=end,
        patterns_found=matched.coverage.found,
        patterns_missing=matched.coverage.missing,
        patterns_required=matched.required,
        forbidden_seen=matched.forbidden,
        failures=tuple(r for r, _ in failures),
        assertions=tuple(assertions),
    )


def _end_name(reason: str | enum.Enum, exit_code: int | None) -> str:
    """The end reason as its word; a caller's mistake (unknown end, no exit code) raises."""
    end = str(getattr(reason, "value", reason))
    if end not in END_REASONS:
        raise ValueError(f"unknown end reason {end!r} (expected one of {sorted(END_REASONS)})")
    if end in ("exited", "signalled") and exit_code is None:
        raise ValueError(f"an {end!r} run needs an exit code")
    return end


def _expected_end(test: Judgeable) -> str | None:
    """The test's `expect_end` (optional on a Judgeable); a value we don't know raises."""
    expect_end = getattr(test, "expect_end", None)
    if expect_end is not None and expect_end not in EXPECTABLE_ENDS:
        raise ValueError(f"unknown expect_end {expect_end!r} (expected one of {EXPECTABLE_ENDS})")
    return expect_end


def _match_output(test: Judgeable, output_text: str) -> _Matched:
    """Expected and forbidden patterns against one haystack, so the output is folded once."""
    hay = Haystack(output_text)
    patterns = tuple(test.expected_patterns)
    return _Matched(
        total=len(patterns),
        coverage=coverage_in(patterns, hay),
        required=test.match.required(len(patterns)),
        forbidden=coverage_in(tuple(test.must_not_contain), hay).found,
    )


def _end_failures(test: Judgeable, end: str, expect_end: str | None, exit_code: int | None,
                  detail: str | None) -> list[tuple[Reason, str]]:
    """Failures in how the attempt ended: never run, broken, ended by a limit the test did not
    expect, or ended by itself when the test expected the service to end it."""
    if end == "skipped":
        return [(Reason.SKIPPED, f"skipped: {detail}" if detail else "skipped")]
    if end in _ERROR_ENDS:
        what = _ERROR_ENDS[end]
        return [(Reason.ERROR, f"{what}: {detail}" if detail else what)]
    if end in ("timeout", "stalled") and expect_end != end:
        out = [_limit_failure(test, end)]
        if expect_end is not None:
            out.append((Reason.UNEXPECTED_END, f"expected the run to end {expect_end!r}"))
        return out
    if end in ("exited", "signalled") and expect_end not in (None, "exited"):
        how = f"exited with code {exit_code}" if end == "exited" else f"was killed (exit {exit_code})"
        return [(Reason.UNEXPECTED_END, f"expected the run to end {expect_end!r}, but it {how}")]
    return []


def _limit_failure(test: Judgeable, end: str) -> tuple[Reason, str]:
    """A timeout or stall, with the test's limit when it has one (Judgeable does not require it)."""
    limit = getattr(test, "timeout" if end == "timeout" else "stall_timeout", None)
    if end == "timeout":
        return Reason.TIMEOUT, f"timed out after {limit:g} s" if limit else "timed out"
    return Reason.STALLED, f"stalled: no output for {limit:g} s" if limit else "stalled: no output"


def _result_failures(test: Judgeable, end: str, expect_end: str | None, exit_code: int | None,
                     leftovers: Sequence[str], matched: _Matched) -> list[tuple[Reason, str]]:
    """Failures in what an attempt that was run left behind: processes, exit code, output.
    A skipped attempt left nothing; the exit code counts only when the run ended by itself."""
    if end == "skipped":
        return []
    out: list[tuple[Reason, str]] = []
    if leftovers:
        out.append((Reason.LEFTOVER_PROCESSES,
                    (f"{len(leftovers)} process(es) of the job outlived its end: "
                     f"{_quote_list(list(leftovers), limit=4)}")))
    ran = end in ("exited", "signalled")
    if ran and expect_end in (None, "exited") and not test.expect_exit.accepts(exit_code):  # type: ignore[arg-type]
        out.append((Reason.EXIT_CODE, f"exit code {exit_code}, expected {test.expect_exit.describe()}"))
    if matched.forbidden:
        out.append((Reason.FORBIDDEN_PATTERN, f"output contains forbidden {_quote_list(matched.forbidden)}"))
    if len(matched.coverage.found) < matched.required:
        found, missing = matched.coverage.found, matched.coverage.missing
        out.append((Reason.MISSING_PATTERNS,
                    (f"found {len(found)} of {matched.total} patterns, needed "
                     f"{test.match.describe(matched.total)}; missing {_quote_list(missing)}")))
    return out


def _passed_message(test: Judgeable, end: str, expect_end: str | None, exit_code: int | None,
                    matched: _Matched) -> str:
    """What a passing verdict says: how it ended as expected, and how many patterns it found."""
    if expect_end in ("stalled", "timeout"):
        parts = [f"ended {end} as expected"]
    else:
        parts = [f"exit {exit_code} (expected {test.expect_exit.describe()})"]
    if matched.total:
        parts.append(f"{len(matched.coverage.found)}/{matched.total} patterns found "
                     f"(needed {matched.required})")
    return "passed: " + ", ".join(parts)


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
