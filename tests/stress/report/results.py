"""What a run produced: one `Attempt` per attempt, one `Outcome` per test, one `RunResult`.

Words: a *test* is an entry of a suite (a *case* is one expansion of a test); an *attempt* is one
run of it (repeats, retries); an *instance* is one of K concurrent runs of an instances test, and
an instances attempt keeps the best instance. The `Outcome` sums up a test's attempts: passed when
its pass threshold was met.

Why plain dataclasses with `to_json`: report.json is a documented, versioned contract
(tests/stress/report.schema.json) read by other tools, so its shape is written out here once, by
hand, instead of being whatever a serializer happens to emit. Bump SCHEMA_VERSION on any change
that removes or renames a field; adding a field is compatible.

Imports nothing of the harness: every other stress module may import this one (the runner fills
these values, the reports and the history read them), so it must stay at the bottom.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 3
"""2: test and attempt status "lost", reasons "lost" and "cancelled", end reason "lost"; new
sections halted, servers, history, stability; per test stability and learned timeouts; per
attempt server, tries and instance_selection. 3: the Claude summary (`attempts[].claude`,
`environment.preflight.canary`) keeps a bounded `result_text_preview` with `result_text_chars`,
`result_text_sha256` and `result_text_truncated` instead of the whole `result_text`."""
GRADUATION_RATIO = 10.0
MIN_GRADUATION_PASSES = 10
"""Seed 004 "graduated" a runner at a 10:1 success ratio (passes per failure)."""

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
LOST = "lost"
"""An attempt whose server was lost (after any retries): not a verdict on the test."""


@dataclass
class Attempt:
    """One attempt of one test (one repeat; with instances, the best instance)."""

    attempt: int
    status: str
    """passed | failed | skipped | lost"""
    reason: str
    """verdict reason: passed, exit_code, missing_patterns, forbidden_pattern, timeout, stalled,
    error, skipped; also lost (server lost) and cancelled (cut short by --halt now)"""
    message: str
    end_reason: str
    """how the run ended: exited, signalled, timeout, stalled, cancelled, shutdown, error,
    skipped, lost"""
    exit_code: int | None = None
    signal: int | None = None
    started_at: float | None = None
    """Unix time."""
    duration: float = 0.0
    """Seconds the job ran as the harness saw it (start to completion; queue wait excluded)."""
    service_duration: float | None = None
    """Seconds the service measured for the process."""
    load1: float | None = None
    factor: float = 1.0
    timeout: float | None = None
    """Stretched total limit sent to the service (configured x factor)."""
    stall_timeout: float | None = None
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    stdout_batches: int = 0
    stderr_batches: int = 0
    stdout_path: str | None = None
    stderr_path: str | None = None
    """Relative to the report folder."""
    preview: str = ""
    job_id: str | None = None
    pid: int | None = None
    queued: bool = False
    queue_wait: float | None = None
    """Seconds the job waited in the service's queue (host overloaded) before it started."""
    wall: float = 0.0
    """Seconds from the execute request to the completion, queue wait included."""
    guard: str | None = None
    """Set when the harness's own guard ended the run: "stall" or "deadline"."""
    interrupted: bool = False
    patterns_found: list[str] = field(default_factory=list)
    patterns_missing: list[str] = field(default_factory=list)
    patterns_required: int = 0
    forbidden_seen: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    claude: dict[str, Any] | None = None
    cli_failure: dict[str, str] | None = None
    resources: dict[str, Any] | None = None
    instances: list[dict[str, Any]] | None = None
    instance_selection: dict[str, Any] | None = None
    """criterion, winner (1-based or None), ranking, why: see stress.run.instances."""
    first_output: float | None = None
    """Seconds from the execute request to the first output (stdout or stderr), queue wait
    included; None when the job printed nothing."""
    server: str | None = None
    """The server the attempt ran on (its last try)."""
    tries: list[str] | None = None
    """Every worker it started on, in order, on a --cluster run (more than one: rerun after a loss)."""
    assertions: list[dict[str, Any]] | None = None
    """The test's `assert` list judged on this attempt: index, type, label, status, why, weight
    (`stress.suite.assert_eval.AssertionResult`); None for a test without assertions."""

    @property
    def ran(self) -> bool:
        return self.status not in (SKIPPED, LOST)

    def to_json(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt, "status": self.status, "reason": self.reason,
            "message": self.message, "end_reason": self.end_reason, "exit_code": self.exit_code,
            "signal": self.signal, "started_at": self.started_at,
            "duration": round(self.duration, 4),
            "service_duration": self.service_duration, "load1": self.load1,
            "factor": self.factor, "timeout": self.timeout,
            "stall_timeout": self.stall_timeout, "stdout_bytes": self.stdout_bytes,
            "stderr_bytes": self.stderr_bytes, "stdout_batches": self.stdout_batches,
            "stderr_batches": self.stderr_batches, "stdout_path": self.stdout_path,
            "stderr_path": self.stderr_path, "preview": self.preview, "job_id": self.job_id,
            "pid": self.pid, "queued": self.queued,
            "queue_wait": None if self.queue_wait is None else round(self.queue_wait, 4),
            "wall": round(self.wall, 4), "guard": self.guard,
            "first_output": None if self.first_output is None else round(self.first_output, 4),
            "interrupted": self.interrupted, "patterns_found": self.patterns_found,
            "patterns_missing": self.patterns_missing,
            "patterns_required": self.patterns_required, "forbidden_seen": self.forbidden_seen,
            "failures": self.failures, "claude": self.claude, "cli_failure": self.cli_failure,
            "resources": self.resources, "instances": self.instances,
            "instance_selection": self.instance_selection, "server": self.server,
            "tries": self.tries, "assertions": self.assertions,
        }


@dataclass
class Outcome:
    """A test over all its attempts: passed when `pass_threshold` was met."""

    suite: str
    id: str
    name: str
    tags: list[str]
    source: str
    kind: str
    invocation: str
    requires: list[str]
    timeout: float
    stall_timeout: float | None
    repeat: int
    status: str = SKIPPED
    reason: str = "skipped"
    message: str = "not run"
    passes: int = 0
    runs: int = 0
    required: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    output_stem: str = ""
    stability: dict[str, Any] | None = None
    """stress.run.flaky.Flakiness.to_json(): stable_pass / stable_fail / flaky / not_run, pass rate."""
    learned_timeout: dict[str, Any] | None = None
    """When --learned-timeouts set this test's limit: percent, median, learned, configured."""
    test_id: str | None = None
    """A matrix case's test id (`answer` for `answer(n=5)`); None: the same as `id`."""
    vars: dict[str, Any] = field(default_factory=dict)
    """A matrix case's values (promptfoo reports each result's vars)."""

    @property
    def duration(self) -> float:
        return sum(a.duration for a in self.attempts)

    def to_json(self) -> dict[str, Any]:
        return {
            "suite": self.suite, "id": self.id, "name": self.name, "tags": self.tags,
            "source": self.source, "kind": self.kind, "invocation": self.invocation,
            "requires": self.requires, "timeout": self.timeout,
            "stall_timeout": self.stall_timeout, "repeat": self.repeat, "status": self.status,
            "reason": self.reason, "message": self.message, "passes": self.passes,
            "runs": self.runs, "required": self.required,
            "duration": round(self.duration, 4), "stability": self.stability,
            "learned_timeout": self.learned_timeout,
            "test_id": self.test_id or self.id, "vars": self.vars,
            "attempts": [a.to_json() for a in self.attempts],
        }



@dataclass
class ThresholdResult:
    """One --threshold (or one capacity criterion) as evaluated: what was observed, and whether
    the comparison held. Decides exit status 99 by its `passed`, never by its text."""

    expr: str
    """As given, e.g. `p95_duration<30s:abort`."""
    metric: str
    op: str
    unit: str
    """How `limit` and `observed` read: seconds, ratio (0..1), count, load or bytes."""
    limit: float | None
    """The limit in `unit` (a relative `2x` or a `/core` limit resolved); None when it could not
    be resolved (no baseline)."""
    observed: float | None
    """None: no data (nothing measured it)."""
    passed: bool
    abort: bool = False
    aborted: bool = False
    """This crossing stopped the run (`:abort`)."""
    at: float | None = None
    """Seconds into the run when an `:abort` threshold was crossed."""
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        def num(v: float | None) -> float | None:
            return None if v is None or not math.isfinite(v) else round(v, 6)
        return {"expr": self.expr, "metric": self.metric, "op": self.op, "unit": self.unit,
                "limit": num(self.limit), "observed": num(self.observed), "passed": self.passed,
                "abort": self.abort, "aborted": self.aborted,
                "at": None if self.at is None else round(self.at, 3), "note": self.note}


@dataclass
class Capacity:
    """What --find-capacity found: the highest concurrency whose step held its criteria, what
    stopped the search, and every step's figures (`steps`, plain dicts for the reports)."""

    max_sustainable_concurrency: int | None
    """None when not even the first step held."""
    limited_by: str
    """latency | errors | cpu | memory | io | admission | max_steps (every step held) |
    stopped (--fail-fast, --halt, the start cap) | interrupted"""
    reason: str
    criteria: list[str]
    step: int
    step_duration: float
    max_steps: int
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def crossed(self) -> bool:
        """No step held, and the search ended on its criteria (exit 99)."""
        return self.max_sustainable_concurrency is None and self.limited_by not in (
            "interrupted", "stopped", "max_steps")

    def to_json(self) -> dict[str, Any]:
        return {"max_sustainable_concurrency": self.max_sustainable_concurrency,
                "limited_by": self.limited_by, "reason": self.reason, "criteria": self.criteria,
                "step": self.step, "step_duration": self.step_duration,
                "max_steps": self.max_steps, "steps": self.steps}


@dataclass(frozen=True)
class Ratio:
    """passes:failures, as seed 004 reported it, and whether it reaches 10:1."""

    passes: int
    failures: int

    @property
    def value(self) -> float:
        if self.failures == 0:
            return math.inf if self.passes else 0.0
        return self.passes / self.failures

    @property
    def graduates(self) -> bool:
        # The same rule as the history's suite ratio: 10:1 and at least 10 passes of evidence.
        return self.passes >= MIN_GRADUATION_PASSES and self.value >= GRADUATION_RATIO

    def text(self) -> str:
        """Always `passes:failures` as counted (`23:2`, `6:0`, `0:3`): one format everywhere,
        never a reduced `11.5:1` or an `inf` (`value` has the quotient)."""
        return f"{self.passes}:{self.failures}"

    def to_json(self) -> dict[str, Any]:
        return {"passes": self.passes, "failures": self.failures,
                "value": None if math.isinf(self.value) else round(self.value, 4),
                "text": self.text(), "graduates": self.graduates,
                "graduation_ratio": GRADUATION_RATIO}


@dataclass
class Totals:
    """Counts of cases (`tests`, `passed`, ...) and of their attempts (`attempts_*`) in one run."""

    tests: int = 0
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    lost: int = 0
    attempts: int = 0
    attempts_passed: int = 0
    attempts_failed: int = 0
    attempts_skipped: int = 0
    attempts_lost: int = 0

    @classmethod
    def of(cls, outcomes: list[Outcome]) -> "Totals":
        t = cls()
        for o in outcomes:
            t.tests += 1
            setattr(t, o.status, getattr(t, o.status) + 1)
            for a in o.attempts:
                t.attempts += 1
                if a.status == PASSED:
                    t.attempts_passed += 1
                elif a.status == FAILED:
                    t.attempts_failed += 1
                elif a.status == LOST:
                    t.attempts_lost += 1
                else:
                    t.attempts_skipped += 1
        return t

    @property
    def success_rate(self) -> float | None:
        ran = self.passed + self.failed
        return self.passed / ran if ran else None

    @property
    def ratio(self) -> Ratio:
        """Over runs (attempts), as seed 004 counted: skipped runs are not counted."""
        return Ratio(self.attempts_passed, self.attempts_failed)

    def to_json(self) -> dict[str, Any]:
        rate = self.success_rate
        return {"tests": self.tests, "passed": self.passed, "failed": self.failed,
                "skipped": self.skipped, "lost": self.lost, "attempts": self.attempts,
                "attempts_passed": self.attempts_passed, "attempts_failed": self.attempts_failed,
                "attempts_skipped": self.attempts_skipped, "attempts_lost": self.attempts_lost,
                "success_rate": None if rate is None else round(rate, 4),
                "ratio": self.ratio.to_json()}


@dataclass
class RunResult:
    """Everything report.md, report.json and junit.xml are written from."""

    run_id: str
    tool: str
    argv: list[str]
    started_at: float
    finished_at: float | None = None
    interrupted: bool = False
    interrupt_signal: str | None = None
    exit_code: int | None = None
    error: str | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    service: dict[str, Any] = field(default_factory=dict)
    suites: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    claude_totals: dict[str, Any] | None = None
    resources: dict[str, Any] | None = None
    halted: str | None = None
    """Why --halt stopped the run early (None when it did not)."""
    servers: dict[str, Any] | None = None
    """Per-server statistics: mode, makespan, fairness_cv, retries_used, servers[]."""
    history: dict[str, Any] | None = None
    """Where the run was recorded, comparisons with earlier runs, suite ratios, learned timeouts."""
    profile: dict[str, Any] | None = None
    """The load profile as it ran (--stages, --arrival-rate, --find-capacity): its shape, starts,
    dropped starts, in-flight timeline; None for a fixed --concurrency run."""
    thresholds: list[ThresholdResult] = field(default_factory=list)
    """Every --threshold with its observed value, crossed ones first."""
    capacity: Capacity | None = None
    trace: dict[str, Any] | None = None
    """The host and service once a second over the run (stress.report.host_trace): columns,
    points; None when not sampled."""

    @property
    def thresholds_crossed(self) -> list[ThresholdResult]:
        return [t for t in self.thresholds if not t.passed]

    @property
    def totals(self) -> Totals:
        return Totals.of(self.outcomes)

    def stability_counts(self) -> dict[str, int]:
        counts = {"stable_pass": 0, "stable_fail": 0, "flaky": 0, "not_run": 0}
        for o in self.outcomes:
            if o.stability:
                counts[o.stability["stability"]] = counts.get(o.stability["stability"], 0) + 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "run_id": self.run_id,
            "tool": self.tool,
            "argv": self.argv,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration": None if self.finished_at is None else round(self.finished_at - self.started_at, 3),
            "interrupted": self.interrupted,
            "interrupt_signal": self.interrupt_signal,
            "exit_code": self.exit_code,
            "error": self.error,
            "environment": self.environment,
            "options": self.options,
            "service": self.service,
            "suites": self.suites,
            "totals": self.totals.to_json(),
            "claude_totals": self.claude_totals,
            "resources": self.resources,
            "halted": self.halted,
            "servers": self.servers,
            "history": self.history,
            "stability": self.stability_counts(),
            "profile": self.profile,
            "thresholds": [t.to_json() for t in self.thresholds],
            "capacity": None if self.capacity is None else self.capacity.to_json(),
            "trace": self.trace,
            "tests": [o.to_json() for o in self.outcomes],
        }
