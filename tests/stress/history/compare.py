"""Comparing one recorded run with another: what changed, and which earlier run to compare with.

A test's state in one run is whether it met its pass threshold over the attempts that ran (the
`required` stored on its rows; every attempt when unknown). See `Comparison` for what each list
means, and `pick_baseline` for why the automatic baseline is not simply the newest run.

Pure functions over stored rows (`stress.history.records`): the store (stress.history.store)
runs the queries and calls these. Imports the records, `stress.run.flaky` and `stress.suite.verdict`; must
not import the store or the CLI.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stress.history.records import HistoryKey, ResultRow, RunInfo
from stress.run.flaky import Flakiness, Stability, classify
from stress.suite.verdict import ALL_REPEATS, PassThreshold

BASELINE_WINDOW = 20
"""baseline() chooses among this many most recent finished runs of the same suites."""


@dataclass(frozen=True)
class DurationChange:
    """A test's median passed duration before and after, flagged as slower or faster."""

    key: HistoryKey
    before: float
    after: float

    @property
    def delta(self) -> float:
        return self.after - self.before

    @property
    def relative(self) -> float:
        if self.before == 0:
            return math.inf if self.after else 0.0
        return self.delta / self.before

    def text(self) -> str:
        rel = "new" if math.isinf(self.relative) else f"{self.relative * 100:+.0f}%"
        return f"{self.key}: {self.before:.3g} s -> {self.after:.3g} s ({self.delta:+.3g} s, {rel})"

    def to_json(self) -> dict[str, Any]:
        rel = self.relative
        return {"suite": self.key.suite, "test_id": self.key.test_id, "before": self.before,
                "after": self.after, "delta": round(self.delta, 4),
                "relative": None if math.isinf(rel) else round(rel, 4)}


@dataclass(frozen=True)
class Comparison:
    """`run_id` measured against `baseline_id`.

    A test's state in one run is whether it met its pass threshold over the attempts that ran
    (`required`, stored per row; every attempt when unknown): new_failures met it in the baseline
    and not now; fixed is the reverse. `flaky` lists tests that met it now with some attempts
    failed (not failures; shown apart). `lost` lists tests that ran in the baseline and did not
    run now at all (lost with their server, skipped, halted): a regression, since the run no
    longer vouches for them. Durations compare the median of passed attempts, flagged when the
    change is at least `duration_threshold` relative AND at least `min_seconds` absolute.
    """

    run_id: str
    baseline_id: str
    new_failures: list[HistoryKey]
    fixed: list[HistoryKey]
    still_failing: list[HistoryKey]
    added: list[HistoryKey]
    removed: list[HistoryKey]
    slower: list[DurationChange]
    faster: list[DurationChange]
    stability: dict[HistoryKey, tuple[Flakiness | None, Flakiness | None]]
    """(baseline, current) per test key."""
    duration_threshold: float
    min_seconds: float
    lost: list[HistoryKey] = field(default_factory=list)
    flaky: list[HistoryKey] = field(default_factory=list)
    why_not_run: dict[HistoryKey, str] = field(default_factory=dict)
    """For `lost`: the current run's reasons, e.g. "lost" or "skipped"."""

    @property
    def regressed(self) -> bool:
        return bool(self.new_failures or self.lost or self.slower)

    def lines(self) -> list[str]:
        out = [f"{self.run_id} against baseline {self.baseline_id}:"]
        for title, keys in (("new failures", self.new_failures),
                            ("lost or not run", self.lost), ("fixed", self.fixed),
                            ("still failing", self.still_failing),
                            ("flaky, passed their threshold", self.flaky), ("added", self.added),
                            ("removed", self.removed)):
            if keys:
                shown = []
                for k in keys:
                    before, now = self.stability.get(k, (None, None))
                    if k in self.why_not_run and title.startswith("lost"):
                        was = "passed" if before is not None and before.passed else "failed"
                        shown.append(f"{k} [{self.why_not_run[k]}; {was} before]")
                    else:
                        shown.append(f"{k} [{now.text()}]" if now is not None and now.flaky else str(k))
                out.append(f"  {title} ({len(keys)}): " + ", ".join(shown))
        for title, changes in (("slower", self.slower), ("faster", self.faster)):
            for c in changes:
                out.append(f"  {title}: {c.text()}")
        if len(out) == 1:
            out.append("  no changes in outcomes or durations")
        return out

    def lost_detail(self) -> list[dict[str, Any]]:
        """Each lost test with why it did not run now and whether it met its threshold before."""
        out = []
        for k in self.lost:
            before = self.stability.get(k, (None, None))[0]
            out.append({"test": str(k), "now": self.why_not_run.get(k, "not run"),
                        "passed_before": bool(before is not None and before.passed)})
        return out

    def flaky_detail(self) -> list[dict[str, Any]]:
        """Each flaky pass with its attempts now: passes of runs, and the passes it needed."""
        out = []
        for k in self.flaky:
            now = self.stability.get(k, (None, None))[1]
            out.append({"test": str(k), "passes": now.passes if now else None,
                        "runs": now.runs if now else None, "required": now.required if now else None})
        return out

    def to_json(self) -> dict[str, Any]:
        keys = lambda ks: [str(k) for k in ks]  # noqa: E731
        return {"run_id": self.run_id, "baseline_id": self.baseline_id,
                "new_failures": keys(self.new_failures), "lost": keys(self.lost),
                "lost_detail": self.lost_detail(),
                "flaky": keys(self.flaky), "flaky_detail": self.flaky_detail(),
                "fixed": keys(self.fixed),
                "still_failing": keys(self.still_failing), "added": keys(self.added),
                "removed": keys(self.removed),
                "slower": [c.to_json() for c in self.slower],
                "faster": [c.to_json() for c in self.faster],
                "duration_threshold": self.duration_threshold, "min_seconds": self.min_seconds,
                "regressed": self.regressed}


def check_thresholds(duration_threshold: float, min_seconds: float) -> None:
    """Refuse limits that would flag every test (or none) before any query runs."""
    if not duration_threshold > 0:
        raise ValueError(f"duration_threshold must be > 0 (a fraction, 0.25 = 25%), got {duration_threshold}")
    if min_seconds < 0:
        raise ValueError(f"min_seconds must be >= 0, got {min_seconds}")


def classify_rows(rows: Sequence[ResultRow]) -> Flakiness:
    """One test's attempts in one run, judged by the passes it needed then (every attempt that
    ran when the rows do not say)."""
    required = next((r.required for r in rows if r.required is not None), None)
    threshold = PassThreshold(passes=required) if required else ALL_REPEATS
    return classify([r.passed for r in rows], threshold)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _median_passed(rows: Sequence[ResultRow]) -> float | None:
    """The median duration of the attempts that passed (a timeout measures the limit, not the test)."""
    return _median([r.duration for r in rows if r.passed and r.duration is not None])


def compare_results(run_id: str, baseline_id: str, now: Mapping[HistoryKey, list[ResultRow]],
                    base: Mapping[HistoryKey, list[ResultRow]], duration_threshold: float = 0.25,
                    min_seconds: float = 0.1) -> Comparison:
    """`now` (the rows of `run_id` per test) against `base` (those of `baseline_id`)."""
    check_thresholds(duration_threshold, min_seconds)
    stab: dict[HistoryKey, tuple[Flakiness | None, Flakiness | None]] = {}
    new_failures, fixed, still, slower, faster = [], [], [], [], []
    lost, flaky, why_not_run = [], [], {}
    for key in sorted(set(now) | set(base)):
        b = classify_rows(base[key]) if key in base else None
        c = classify_rows(now[key]) if key in now else None
        stab[key] = (b, c)
        if b is None or c is None or b.stability is Stability.NOT_RUN:
            continue
        if c.stability is Stability.NOT_RUN:
            lost.append(key)
            why_not_run[key] = ", ".join(dict.fromkeys(r.reason or "not run" for r in now[key]))
            continue
        b_ok, c_ok = b.passed, c.passed
        if c_ok and c.flaky:
            flaky.append(key)
        if b_ok and not c_ok:
            new_failures.append(key)
        elif c_ok and not b_ok:
            fixed.append(key)
        elif not b_ok and not c_ok:
            still.append(key)
        bd, cd = _median_passed(base[key]), _median_passed(now[key])
        if bd is None or cd is None:
            continue
        change = DurationChange(key, bd, cd)
        if abs(change.delta) >= min_seconds and abs(change.relative) >= duration_threshold:
            (slower if change.delta > 0 else faster).append(change)
    added = sorted(k for k in now if k not in base)
    removed = sorted(k for k in base if k not in now)
    slower.sort(key=lambda c: -c.relative)
    faster.sort(key=lambda c: c.relative)
    return Comparison(run_id, baseline_id, new_failures, fixed, still, added, removed,
                      slower, faster, stab, duration_threshold, min_seconds, lost, flaky,
                      why_not_run)


def pick_baseline(run_id: str, candidates: Sequence[RunInfo],
                  ran: Mapping[str, Mapping[HistoryKey, bool]]) -> RunInfo | None:
    """The candidate (newest first) that ran every test `run_id` ran, else the one that left out
    fewest of them; a run that ran no test at all comes last. `ran[run]` maps each recorded test
    to whether any of its attempts ran.

    Why not simply the newest run: a run whose server died (27 of 30 tests lost) compares as "no
    changes" and would then be the next run's baseline.
    """
    if not candidates:
        return None
    now = {k for k, v in ran[run_id].items() if v}

    def score(c: RunInfo) -> tuple[int, int]:
        tests = ran[c.run_id]
        gaps = sum(1 for k in now if k in tests and not tests[k])
        return gaps, 0 if any(tests.values()) else 1

    return min(candidates, key=score)  # min keeps the first (newest) of equals
