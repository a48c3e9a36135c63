"""The pass/fail rules of stress.suite.verdict: pure functions, so these tests start no processes."""

from __future__ import annotations

import re
import time
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stress.suite.verdict import (ALL_REPEATS, EXIT_NONZERO, EXIT_ZERO, MATCH_ALL, MATCH_ANY,
                                  ExitExpectation, MatchRule, PassThreshold, Reason, RegexPattern,
                                  TextPattern, compile_regex, judge, judge_repeats, parse_pattern,
                                  pattern_coverage)


def make_test(patterns=(), match=MATCH_ALL, forbidden=(), expect_exit=EXIT_ZERO, **kw):
    return SimpleNamespace(
        expected_patterns=tuple(parse_pattern(p) for p in patterns),
        match=match,
        must_not_contain=tuple(parse_pattern(p) for p in forbidden),
        expect_exit=expect_exit,
        timeout=kw.get("timeout", 30.0),
        stall_timeout=kw.get("stall_timeout", 5.0),
    )


# --- match rules -----------------------------------------------------------------------------


def test_all_needs_every_pattern():
    t = make_test(["alpha", "beta", "gamma"])
    ok = judge(t, 0, "exited", "alpha beta gamma")
    assert ok.passed and ok.reason is Reason.PASSED and ok.patterns_missing == ()
    bad = judge(t, 0, "exited", "alpha gamma")
    assert not bad.passed and bad.reason is Reason.MISSING_PATTERNS
    assert bad.patterns_found == ("alpha", "gamma") and bad.patterns_missing == ("beta",)
    assert "'beta'" in bad.message and "needed all 3" in bad.message


def test_any_needs_one_pattern():
    t = make_test(["four", "4"], match=MATCH_ANY)
    assert judge(t, 0, "exited", "the answer is 4").passed
    v = judge(t, 0, "exited", "no idea")
    assert v.reason is Reason.MISSING_PATTERNS and "at least 1" in v.message


@pytest.mark.parametrize(
    ("ratio", "total", "needed"),
    [(0.8, 4, 4), (0.8, 5, 4), (0.8, 10, 8), (0.5, 3, 2), (0.0, 3, 0), (1.0, 3, 3), (0.7, 10, 7)],
)
def test_min_ratio_needs_ceiling_of_ratio(ratio, total, needed):
    """Seed 002 passed at found/total >= 0.8, i.e. the ceiling: 3 of 4 (75%) is not enough."""
    rule = MatchRule("min_ratio", ratio)
    assert rule.required(total) == needed
    pats = [f"p{i}x" for i in range(total)]
    t = make_test(pats, match=rule)
    assert judge(t, 0, "exited", " ".join(pats[:needed])).passed
    if needed:
        assert not judge(t, 0, "exited", " ".join(pats[: needed - 1])).passed


def test_no_patterns_means_no_pattern_requirement():
    for rule in (MATCH_ALL, MATCH_ANY, MatchRule("min_ratio", 0.8)):
        v = judge(make_test([], match=rule), 0, "exited", "")
        assert v.passed and v.patterns_required == 0 and v.coverage == 1.0


def test_min_ratio_zero_reports_patterns_without_requiring_them():
    v = judge(make_test(["error", "flag"], match=MatchRule("min_ratio", 0.0), expect_exit=EXIT_NONZERO),
              2, "exited", "error: unknown option")
    assert v.passed and v.patterns_found == ("error",) and v.patterns_missing == ("flag",)


# --- patterns --------------------------------------------------------------------------------


def test_text_patterns_are_case_insensitive_by_default():
    t = make_test(["HELLO", "World"])
    assert judge(t, 0, "exited", "hello WORLD").passed


def test_case_sensitive_text_pattern():
    t = make_test([{"text": "Hello", "case_sensitive": True}])
    assert judge(t, 0, "exited", "Hello").passed
    assert not judge(t, 0, "exited", "hello").passed


def test_case_folding_handles_non_ascii():
    assert pattern_coverage([TextPattern("STRASSE")], "straße").found == ("STRASSE",)
    assert pattern_coverage([TextPattern("Σ")], "ΑΣ").found == ("Σ",)  # final sigma


@pytest.mark.parametrize(
    ("regex", "flags", "text", "found"),
    [
        (r"\b4\b", "", "2+2 = 4.", True),
        ("hello", "", "HELLO", False),
        ("hello", "i", "HELLO", True),
        ("^line two$", "", "line one\nline two\n", False),
        ("^line two$", "m", "line one\nline two\n", True),
        ("start.*end", "", "start\nend", False),
        ("start.*end", "s", "start\nend", True),
        ("a b  # comment", "x", "ab", True),
    ],
)
def test_regex_patterns_and_flags(regex, flags, text, found):
    p = RegexPattern(regex, flags)
    assert bool(pattern_coverage([p], text).found) is found
    assert p.label == f"/{regex}/{flags}"


def test_bad_regexes_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="invalid regex"):
        RegexPattern("(")
    with pytest.raises(ValueError, match="unknown regex flag 'g'"):
        RegexPattern("a", "g")
    for shape in [r"(a+)+$", r"(a*)*b", r"(?:\w+\s?)*$", r"(x|y+)+z"]:
        with pytest.raises(ValueError, match="exponential"):
            compile_regex(shape)
    # Bounded or possessive/atomic forms are fine.
    for fine in [r"(a+)?b", r"(ab){1,3}", r"(?:a+)++b", r"(?>a+)+b", r"\d+\.\d+"]:
        compile_regex(fine)


def test_parse_pattern_rejects_malformed_items():
    for bad, msg in [
        (5, "got the integer 5"),
        ("", "empty"),
        ({"txt": "x"}, "needs 'regex' or 'text'"),
        ({"regex": "a", "flag": "i"}, "unknown key"),
        ({"text": "a", "case_sensitive": "yes"}, "true or false"),
        ({"regex": 3}, "must be a string"),
    ]:
        with pytest.raises(ValueError, match=re.escape(msg)):
            parse_pattern(bad)


def test_forbidden_patterns_fail_the_test():
    t = make_test(["done"], forbidden=["Traceback", {"regex": r"error:\s+\w+"}])
    assert judge(t, 0, "exited", "done").passed
    v = judge(t, 0, "exited", "done\nTraceback (most recent call last)\nerror:  boom")
    assert v.reason is Reason.FORBIDDEN_PATTERN
    assert v.forbidden_seen == ("Traceback", r"/error:\s+\w+/")
    assert "forbidden" in v.message


# --- exit codes and end reasons --------------------------------------------------------------


@pytest.mark.parametrize(
    ("expect", "code", "ok"),
    [
        (EXIT_ZERO, 0, True),
        (EXIT_ZERO, 1, False),
        (ExitExpectation("exact", 3), 3, True),
        (ExitExpectation("exact", 3), 0, False),
        (EXIT_NONZERO, 1, True),
        (EXIT_NONZERO, -9, True),
        (EXIT_NONZERO, 0, False),
        (ExitExpectation("any"), 0, True),
        (ExitExpectation("any"), 42, True),
    ],
)
def test_expect_exit_variants(expect, code, ok):
    v = judge(make_test(expect_exit=expect), code, "exited", "")
    assert v.passed is ok
    if not ok:
        assert v.reason is Reason.EXIT_CODE and f"exit code {code}" in v.message


def test_expect_exit_json_forms():
    assert ExitExpectation.from_json(0) == EXIT_ZERO
    assert ExitExpectation.from_json("nonzero") == EXIT_NONZERO
    assert ExitExpectation.from_json(-15).code == -15
    for bad in ("zero", True, 1.5, 300, None):
        with pytest.raises(ValueError, match="expect_exit"):
            ExitExpectation.from_json(bad)


@pytest.mark.parametrize(
    ("end", "reason", "text"),
    [
        ("timeout", Reason.TIMEOUT, "timed out after 30 s"),
        ("stalled", Reason.STALLED, "no output for 5 s"),
        ("error", Reason.ERROR, "run failed: spawn failed"),
        ("cancelled", Reason.ERROR, "cancelled"),
        ("shutdown", Reason.ERROR, "shut down"),
        ("skipped", Reason.SKIPPED, "skipped: spawn failed"),
    ],
)
def test_abnormal_ends_fail_with_their_reason(end, reason, text):
    v = judge(make_test(["x"]), None, end, "x", detail="spawn failed")
    assert not v.passed and v.reason is reason and text in v.message


def test_every_failure_is_listed_first_one_is_the_reason():
    t = make_test(["needed"], forbidden=["bad"])
    v = judge(t, 1, "exited", "bad output")
    assert v.reason is Reason.EXIT_CODE
    assert v.failures == (Reason.EXIT_CODE, Reason.FORBIDDEN_PATTERN, Reason.MISSING_PATTERNS)
    # A timeout still reports which patterns had appeared so far.
    v = judge(t, -15, "timeout", "needed")
    assert v.reason is Reason.TIMEOUT and v.patterns_found == ("needed",)


def test_signalled_run_is_judged_by_its_negative_code():
    assert judge(make_test(expect_exit=EXIT_NONZERO), -9, "signalled", "").passed
    assert judge(make_test(), -9, "signalled", "").reason is Reason.EXIT_CODE


def test_end_reason_validation():
    with pytest.raises(ValueError, match="unknown end reason"):
        judge(make_test(), 0, "finished", "")
    with pytest.raises(ValueError, match="needs an exit code"):
        judge(make_test(), None, "exited", "")


def test_process_runner_end_reasons_are_understood():
    process = pytest.importorskip("cc_executor.process")
    for reason in process.EndReason:
        judge(make_test(), 0, reason, "")


def test_verdict_to_json_is_plain():
    d = judge(make_test(["a"]), 0, "exited", "a").to_json()
    assert d["passed"] is True and d["reason"] == "passed" and d["patterns_found"] == ["a"]


# --- repeats ---------------------------------------------------------------------------------


def _verdicts(passes: int, fails: int, skipped: int = 0):
    t = make_test(["ok"])
    return ([judge(t, 0, "exited", "ok")] * passes + [judge(t, 0, "exited", "no")] * fails
            + [judge(t, None, "skipped", "")] * skipped)


def test_pass_threshold_forms():
    assert judge_repeats(PassThreshold(passes=4, of=5), _verdicts(4, 1)).passed
    assert not judge_repeats(PassThreshold(passes=4, of=5), _verdicts(3, 2)).passed
    assert judge_repeats(PassThreshold(ratio=0.8), _verdicts(8, 2)).passed
    assert not judge_repeats(PassThreshold(ratio=0.8), _verdicts(7, 3)).passed
    assert judge_repeats(ALL_REPEATS, _verdicts(3, 0)).passed
    assert not judge_repeats(ALL_REPEATS, _verdicts(2, 1)).passed
    rv = judge_repeats(ALL_REPEATS, _verdicts(2, 0, skipped=3))
    assert rv.passed and rv.runs == 2
    assert not judge_repeats(ALL_REPEATS, _verdicts(0, 0, skipped=1)).passed
    assert PassThreshold.from_json({"passes": 4, "of": 5}) == PassThreshold(passes=4, of=5)
    assert PassThreshold.from_json(0.8) == PassThreshold(ratio=0.8)
    for bad in ({"passes": 6, "of": 5}, 0, 1.5, {"passes": 1}, "half"):
        with pytest.raises(ValueError, match="pass_threshold"):
            PassThreshold.from_json(bad)


# --- properties and scale --------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=200), st.data())
def test_a_slice_of_the_output_is_always_found(output, data):
    i = data.draw(st.integers(0, len(output) - 1))
    j = data.draw(st.integers(i + 1, len(output)))
    piece = output[i:j]
    pats = [TextPattern(piece), TextPattern(piece, case_sensitive=True), RegexPattern(re.escape(piece)),
            RegexPattern(re.escape(piece), "i")]
    cov = pattern_coverage(pats, output)
    assert cov.missing == () and cov.ratio == 1.0
    assert judge(make_test([p.to_json() for p in pats]), 0, "exited", output).passed


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=100),
       st.data())
def test_a_slice_in_other_case_is_found_case_insensitively(output, data):
    i = data.draw(st.integers(0, len(output) - 1))
    j = data.draw(st.integers(i + 1, len(output)))
    piece = output[i:j].swapcase()
    assert pattern_coverage([TextPattern(piece)], output).found == (piece,)


def test_matching_scales_to_ten_mebibytes():
    line = "lorem ipsum dolor sit amet, consectetur adipiscing elit 0123456789\n"
    output = line * (10 * 1024 * 1024 // len(line)) + "THE END marker-42\n"
    texts = [f"missing-{i}" for i in range(20)] + ["the end", "LOREM"]
    regexes = [{"regex": r"marker-\d+$", "flags": "m"}, {"regex": r"a+b+c+"}, {"regex": r"\bnever\b", "flags": "i"}]
    t = make_test(texts + regexes, match=MatchRule("min_ratio", 0.1), forbidden=["Traceback"])
    start = time.perf_counter()
    v = judge(t, 0, "exited", output)
    elapsed = time.perf_counter() - start
    assert v.passed and "the end" in v.patterns_found and "/marker-\\d+$/m" in v.patterns_found
    assert elapsed < 5.0, f"judging 10 MiB took {elapsed:.2f} s"
