"""Flakiness classes, settled repeats and halt rules (`stress.run.flaky`): pure, so tested directly."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stress.run.flaky import (MIN_DONE_FOR_PERCENT, NEVER, HaltRule, HaltRuleError, Stability,
                              classify, classify_many, halt_reason, outcome_of, settled)
from stress.suite.verdict import ALL_REPEATS, PassThreshold

FOUR_OF_FIVE = PassThreshold(passes=4, of=5)
thresholds = st.one_of(
    st.just(ALL_REPEATS),
    st.floats(min_value=0.05, max_value=1.0).map(lambda r: PassThreshold(ratio=r)),
    st.integers(1, 8).map(lambda p: PassThreshold(passes=p, of=8)),
)


# ---- classification ---------------------------------------------------------------------------


@pytest.mark.parametrize("outcomes, stability, passed", [
    ([True] * 5, Stability.STABLE_PASS, True),
    ([False] * 3, Stability.STABLE_FAIL, False),
    ([True, False, True], Stability.FLAKY, False),
    ([None, None], Stability.NOT_RUN, False),
    ([], Stability.NOT_RUN, False),
])
def test_classify_names_the_spread_and_applies_every_repeat_by_default(outcomes, stability, passed):
    f = classify(outcomes)
    assert f.stability is stability and f.passed is passed


def test_four_of_five_passes_a_flaky_test_and_three_of_five_does_not():
    ok = classify([True, True, False, True, True], FOUR_OF_FIVE)
    assert ok.stability is Stability.FLAKY and ok.passed and ok.required == 4
    assert ok.pass_rate == pytest.approx(0.8) and ok.failures == 1
    bad = classify([True, False, False, True, True], FOUR_OF_FIVE)
    assert not bad.passed and bad.text() == "flaky (3/5 passed, needed 4)"


def test_a_ratio_threshold_decides_on_the_attempts_that_ran():
    f = classify(["passed", "skipped", "failed", "passed", "passed", "passed"], PassThreshold(ratio=0.8))
    assert (f.passes, f.runs, f.required, f.passed) == (4, 5, 4, True)
    assert f.to_json() == {"stability": "flaky", "passes": 4, "runs": 5, "required": 4,
                           "passed": True, "pass_rate": 0.8}


def test_statuses_map_and_unknown_ones_are_refused_by_name():
    assert [outcome_of(s) for s in ("passed", "failed", "skipped", "lost", None, True)] == \
        [True, False, None, None, None, True]
    with pytest.raises(ValueError, match="unknown attempt status 'timeout'"):
        outcome_of("timeout")


def test_classify_many_keys_by_test():
    got = classify_many({"a": [True, True], "b": [True, False]})
    assert got["a"].stability is Stability.STABLE_PASS and got["b"].flaky


@given(st.lists(st.one_of(st.booleans(), st.none()), max_size=30), thresholds)
def test_classify_properties(outcomes, threshold):
    f = classify(outcomes, threshold)
    ran = [o for o in outcomes if o is not None]
    assert f.runs == len(ran) and f.passes == sum(ran)
    assert (f.stability is Stability.NOT_RUN) == (not ran)
    assert (f.stability is Stability.STABLE_PASS) == (bool(ran) and all(ran))
    assert (f.stability is Stability.STABLE_FAIL) == (bool(ran) and not any(ran))
    assert f.flaky == (0 < f.passes < f.runs)
    if ran:
        assert f.pass_rate == pytest.approx(sum(ran) / len(ran))
        assert f.passed == (f.passes >= threshold.required(len(ran)))
    else:
        assert f.pass_rate is None and not f.passed


# ---- settled repeats ----------------------------------------------------------------------------


def test_settled_says_when_remaining_repeats_cannot_matter():
    assert settled(4, 0, 5, FOUR_OF_FIVE) is True
    assert settled(3, 1, 5, FOUR_OF_FIVE) is None
    assert settled(2, 2, 5, FOUR_OF_FIVE) is False
    assert settled(0, 1, 3) is False  # every repeat must pass by default
    with pytest.raises(ValueError, match="exceed repeat"):
        settled(3, 3, 5)
    with pytest.raises(ValueError, match="failures must be >= 0"):
        settled(1, -1, 5)


@given(st.integers(1, 10), st.data(), thresholds)
def test_settled_agrees_with_every_way_the_rest_could_go(repeat, data, threshold):
    done = data.draw(st.integers(0, repeat))
    passes = data.draw(st.integers(0, done))
    verdict = settled(passes, done - passes, repeat, threshold)
    rest = repeat - done
    finals = {classify([True] * (passes + k) + [False] * (repeat - passes - k), threshold).passed
              for k in range(rest + 1)}
    if verdict is None:
        assert finals == {True, False}
    else:
        assert finals == {verdict}


# ---- halt rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expect", [
    ("never", "never"), ("0", "never"), ("now", "now,fail=1"), ("1", "soon,fail=1"),
    ("2", "now,fail=1"), ("now,fail=3", "now,fail=3"), ("soon,fail=20%", "soon,fail=20%"),
    (" Soon, success=2 ", "soon,success=2"), ("now,done=50%", "now,done=50%"),
])
def test_halt_rules_parse_and_print_back(text, expect):
    assert str(HaltRule.parse(text)) == expect


@pytest.mark.parametrize("text, words", [
    ("later,fail=1", "expected never, now, soon"), ("now,fail=0", "whole number >= 1"),
    ("now,fail=1.5", "whole number >= 1"), ("soon,fail=0%", "above 0 and at most 100"),
    ("soon,fail=150%", "above 0 and at most 100"), ("", "bad halt rule ''"),
])
def test_bad_halt_rules_are_refused_with_the_text_and_the_form(text, words):
    with pytest.raises(HaltRuleError, match=words):
        HaltRule.parse(text)


def test_now_and_soon_at_a_count_of_failures():
    rule = HaltRule.parse("now,fail=3")
    assert rule.should_halt(10, 2) is None
    assert rule.should_halt(3, 3) == "now"
    assert HaltRule.parse("soon,fail=1").should_halt(1, 1) == "soon"
    assert NEVER.should_halt(100, 100) is None


def test_a_percentage_waits_for_enough_finished_tests():
    rule = HaltRule.parse("soon,fail=20%")
    assert rule.should_halt(1, 1) is None  # 100% of one test: too early to judge
    assert rule.should_halt(MIN_DONE_FOR_PERCENT, 1) == "soon"
    assert rule.should_halt(10, 1) is None and rule.should_halt(10, 2) == "soon"


def test_success_and_done_conditions():
    assert HaltRule.parse("now,success=2").should_halt(3, 1) == "now"
    assert HaltRule.parse("now,success=2").should_halt(3, 2) is None
    assert HaltRule.parse("soon,done=4").should_halt(4, 0) == "soon"
    half = HaltRule.parse("soon,done=50%")
    assert half.should_halt(5, 0) is None  # a percentage of all tests needs the total
    assert half.should_halt(5, 0, total=10) == "soon" and half.should_halt(4, 0, total=10) is None


def test_halt_rejects_impossible_counts_and_explains_itself():
    with pytest.raises(ValueError, match="0 <= failed <= done"):
        HaltRule.parse("now").should_halt(1, 2)
    text = halt_reason(HaltRule.parse("soon,fail=2"), 5, 2)
    assert "2 of 5" in text and "started no more" in text


@settings(max_examples=200)
@given(st.sampled_from(["now", "soon"]), st.sampled_from(["fail", "success", "done"]),
       st.one_of(st.integers(1, 20).map(str), st.integers(1, 100).map(lambda p: f"{p}%")),
       st.integers(0, 30), st.data())
def test_halting_stays_on_when_more_of_what_it_counts_happens(when, metric, amount, done, data):
    rule = HaltRule.parse(f"{when},{metric}={amount}")
    failed = data.draw(st.integers(0, done))
    total = 60
    first = rule.should_halt(done, failed, total)
    assert first in (None, when)
    if first is None:
        return
    if amount.endswith("%") and metric != "done":
        # The same share over twice as many finished tests.
        assert rule.should_halt(done * 2, failed * 2, total) == when
    elif metric == "fail":
        assert rule.should_halt(done + 1, failed + 1, total) == when
    else:  # success or done counts grow with one more passed test
        assert rule.should_halt(done + 1, failed, total) == when
