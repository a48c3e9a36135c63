"""Judge one run of a case from what it observed, into the `Attempt` record the reports show.

Owns `Execution` (an attempt's record with its verdict and what instance picking ranks by), the
end reason read off the completion and the guards, the notes and the output preview a person
reads, and the records of attempts that never ran a job (failed to start, not run, lost).

Why judging is apart from running: everything here is a pure function of `Observed` (plus the run's
options), so the rules - which end is a timeout, which a harness error, when an interrupted
attempt counts as cut short by --halt - can be tested without a service, and a change to how a
job is followed cannot change how it is judged.

Must not import: the modules that run jobs (execution, instance_runs, runner) or talk to a
service; never `cc_executor.jobs/server/process/tree/registry`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from cc_executor.client import ExecutorError
from cc_executor.protocol import SPAWN_FAILED, ErrorReason
from stress.report.results import FAILED, LOST, PASSED, SKIPPED, Attempt
from stress.run.observed import CaseRun, Observed
from stress.run.planned import PREVIEW_CHARS, Planned, RunOptions
from stress.suite import SuiteTest
from stress.suite import claude_stream as claude_mod
from stress.suite.answer import answer_from
from stress.suite.assert_eval import AssertionResult, evaluate_all
from stress.suite.verdict import Reason, Verdict, judge, pattern_coverage

SERVICE_ENDS = ("exited", "signalled", "timeout", "stalled", "cancelled", "shutdown")
"""Completion reasons the service may report that are ends in their own right."""


@dataclass
class Execution:
    """One run's attempt plus what instance picking ranks by."""

    attempt: Attempt
    verdict: Verdict
    cost: float | None
    coverage: float
    lost: str | None = None
    """Set when the connection to the service broke (or it stopped answering): in a dispatched
    run this becomes ServerLost, so the attempt is retried on another server."""


_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def printable(text: str) -> str:
    """Control characters (other than newline, tab and CR) as U+FFFD: previews must not drive a terminal."""
    return _CONTROL.sub("\ufffd", text)


def make_preview(stdout: bytes, stderr: bytes, stream: claude_mod.StreamSummary | None,
                 limit: int = PREVIEW_CHARS) -> str:
    """Head and tail of the output (Claude: the answer text first), at most about `limit` chars."""
    def clip(text: str, n: int) -> str:
        if len(text) <= n:
            return text
        head = n * 2 // 3
        return f"{text[:head]}\n... ({len(text) - n:,} characters omitted) ...\n{text[-(n - head):]}"

    parts = []
    if stream is not None and stream.is_stream_json:
        answer = stream.result_text or stream.assistant_text
        if answer:
            parts.append("[claude answer]\n" + clip(answer, limit // 2))
    parts.append(clip(stdout.decode("utf-8", "replace"), limit))
    if stderr:
        parts.append("[stderr]\n" + clip(stderr.decode("utf-8", "replace"), limit // 3))
    return printable("\n".join(p for p in parts if p))


@dataclass(frozen=True)
class Output:
    """A run's output as the checks read it.

    Patterns are matched against stdout + stderr (seed 004's runner merged the two) and, for
    Claude stream-json output, the assembled assistant text and the result text (see
    `stress.suite.claude_stream`)."""

    stdout: bytes
    stderr: bytes
    stream: claude_mod.StreamSummary | None
    """The parsed stream-json (a Claude test's even when it is not stream-json); else None."""
    text: str
    """stdout, decoded."""
    hay: str
    """What the patterns are matched against."""

    @property
    def is_claude_stream(self) -> bool:
        return self.stream is not None and self.stream.is_stream_json


def read_output(planned: Planned, seen: Observed) -> Output:
    stdout, stderr = bytes(seen.live.stdout), bytes(seen.live.stderr)
    stream = None
    if planned.uses_claude or stdout.lstrip()[:1] == b"{":
        stream = claude_mod.parse_stream(stdout)
        if not stream.is_stream_json:
            stream = None if not planned.uses_claude else stream
    text = stdout.decode("utf-8", "replace")
    hay = text + "\n" + stderr.decode("utf-8", "replace")
    if stream is not None and stream.is_stream_json:
        hay += "\n" + stream.matchable_text
    return Output(stdout, stderr, stream, text, hay)


def how_it_ended(seen: Observed) -> tuple[str, str | None]:
    """The end reason `judge` gets, and the detail to show: what the service's completion says,
    unless the run was interrupted, a client-side guard fired, or the completion is missing or
    makes no sense (a harness "error")."""
    c = seen.live.completed or {}
    detail = seen.detail
    if seen.interrupted:
        return "cancelled", detail
    if seen.live.guard in ("stall", "deadline"):
        return ("stalled" if seen.live.guard == "stall" else "timeout"), detail
    if seen.live.guard == "queue" or not c:
        return "error", detail or "the service sent no completion"
    r = c.get("reason")
    if r in SERVICE_ENDS:
        end = r
        if r in ("cancelled", "shutdown"):
            detail = detail or (c.get("error") or c.get("message")) or f"the service ended the job ({r})"
    else:
        end = "error"
        detail = (c.get("error") or c.get("message")) or f"the service ended the job: {r}"
    if end in ("exited", "signalled") and c.get("exit_code") is None:
        return "error", "completion without an exit code"
    return end, detail


def _limit_notes(test: SuiteTest, seen: Observed, end: str, out: Output, guard_grace: float) -> list[str]:
    """What a timeout or stall used as its limit, and that the partial output was kept."""
    notes = []
    limits, factor = seen.limits, seen.factor
    if end == "timeout" and limits.total is not None:
        notes.append(f"limit used {limits.total:.3g} s = {test.timeout:g} s x {factor:.2f}")
    if end == "stalled" and limits.stall is not None:
        notes.append(f"stall limit used {limits.stall:.3g} s = {test.stall_timeout:g} s x {factor:.2f}")
    if end in ("timeout", "stalled"):
        notes.append(f"partial output kept ({len(out.stdout):,} bytes stdout, "
                     f"{len(out.stderr):,} bytes stderr)")
    if seen.live.guard in ("stall", "deadline"):
        notes.append(f"the harness's {seen.live.guard} guard fired: no completion from the service "
                     f"within {guard_grace:g} s after its limit; job cancelled")
    return notes


def _refusal_failure(refused: ExecutorError | None) -> claude_mod.CliFailure | None:
    """A claude run the service refused because it cannot find the CLI: known by the refusal's
    code and `data.reason`, never by its words."""
    if (refused is not None and refused.code == SPAWN_FAILED
            and refused.reason == ErrorReason.EXECUTABLE_NOT_FOUND):
        return claude_mod.CliFailure("not_found", f"claude CLI not found: {refused.message}")
    return None


def _claude_failure(exit_code: int | None, end: str, detail: str | None,
                    out: Output) -> claude_mod.CliFailure | None:
    """Why a failed Claude run failed, from its stderr, stream and the non-JSON end of stdout."""
    tail = "\n".join(line for line in out.text[-4096:].splitlines() if not line.startswith("{"))
    return claude_mod.classify_failure(
        exit_code if end in ("exited", "signalled") else None, out.stderr, out.stream,
        end_reason=end, stdout_tail=tail + ("\n" + detail if detail else ""))


def assertion_results(test: SuiteTest, seen: Observed, out: Output,
                      options: RunOptions) -> tuple[AssertionResult, ...]:
    """The test's `assert` list on this run's answer (`stress.suite.answer`); the latency is the
    job's run time, queue wait excluded."""
    if not test.assertions:
        return ()
    answer = answer_from(out.stdout, out.stderr, latency=_timing(seen)[2], stream=out.stream,
                         cost_simulated=options.simulated_cost, code_runs=seen.code_runs)
    return evaluate_all(test.assertions, answer)


def _timing(seen: Observed) -> tuple[bool, float | None, float]:
    """(queued, seconds in the service's queue, seconds the job ran): a queued job's run time
    starts when the service started it."""
    was_queued = bool(seen.job is not None and seen.job.queued)
    if was_queued and seen.live.started is not None:
        queue_wait = seen.live.started - seen.live.queued_at
        return True, queue_wait, max(0.0, seen.wall - queue_wait)
    return was_queued, None, seen.wall


def judge_run(run: CaseRun, seen: Observed, out: Output, options: RunOptions, *,
              halted_only: bool) -> Execution:
    """The attempt record of one run. `halted_only`: the run was cut short by --halt now, not by
    the user, so an interrupted run reads "cancelled" rather than "skipped"."""
    test, live, c = run.planned.test, seen.live, seen.live.completed or {}
    end, detail = how_it_ended(seen)
    exit_code = c.get("exit_code")
    if seen.interrupted:
        # Cut short by the user: not a verdict on the test, so it counts as not run.
        verdict = judge(test, None, "skipped", out.hay, detail=detail)
    else:
        verdict = judge(test, exit_code, end, out.hay, detail=detail, leftovers=seen.leftovers,
                        assertions=assertion_results(test, seen, out, options))
    notes = [verdict.message, *_limit_notes(test, seen, end, out, options.guard_grace)]
    cli_failure = None
    if run.planned.uses_claude and not verdict.passed and not seen.interrupted:
        cf = _refusal_failure(seen.refused) or _claude_failure(exit_code, end, detail, out)
        if cf is not None:
            cli_failure = cf.to_json()
            notes.append(f"claude: {cf.message}")
    status = SKIPPED if seen.interrupted else PASSED if verdict.passed else FAILED
    reason = "cancelled" if seen.interrupted and halted_only else verdict.reason.value
    queued, queue_wait, duration = _timing(seen)
    attempt = Attempt(
        attempt=run.n, status=status, reason=reason, message="; ".join(notes),
        end_reason=end, exit_code=exit_code, signal=c.get("signal"), started_at=seen.started_at,
        duration=duration, service_duration=c.get("duration"), load1=seen.load1,
        factor=seen.factor, timeout=seen.limits.total, stall_timeout=seen.limits.stall,
        stdout_bytes=len(out.stdout), stderr_bytes=len(out.stderr),
        stdout_batches=live.out_batches, stderr_batches=live.err_batches,
        stdout_path=f"outputs/{run.stem}.stdout", stderr_path=f"outputs/{run.stem}.stderr",
        preview=make_preview(out.stdout, out.stderr, out.stream, options.preview_chars),
        job_id=seen.job.job_id if seen.job is not None else None, pid=live.pid,
        queued=queued, queue_wait=queue_wait, wall=seen.wall, guard=live.guard,
        interrupted=seen.interrupted, patterns_found=list(verdict.patterns_found),
        patterns_missing=list(verdict.patterns_missing),
        patterns_required=verdict.patterns_required,
        forbidden_seen=list(verdict.forbidden_seen),
        failures=[f.value for f in verdict.failures],
        assertions=[r.to_json() for r in verdict.assertions] or None,
        claude=out.stream.to_json() if out.stream is not None else None,
        cli_failure=cli_failure, resources=seen.resources,
        first_output=(None if live.first_output is None
                      else max(0.0, live.first_output - live.queued_at)),
    )
    cov = pattern_coverage(test.expected_patterns, out.hay).ratio if test.expected_patterns else 1.0
    return Execution(attempt, verdict, out.stream.total_cost_usd if out.stream else None, cov)


def failed_to_start(planned: Planned, n: int, detail: str) -> Execution:
    """An attempt whose job never started (no connection, a harness error): failed with reason error."""
    verdict = judge(planned.test, None, "error", "", detail=detail)
    a = Attempt(attempt=n, status=FAILED, reason=verdict.reason.value, message=verdict.message,
                end_reason="error", failures=[f.value for f in verdict.failures],
                started_at=time.time())
    return Execution(a, verdict, None, 0.0)


def not_run(planned: Planned, n: int, why: str, *, interrupted: bool = False,
            reason: str = Reason.SKIPPED.value) -> Execution:
    """An attempt that did not run (skipped, stopped before it began): not counted."""
    verdict = judge(planned.test, None, "skipped", "", detail=why)
    a = Attempt(attempt=n, status=SKIPPED, reason=reason, message=verdict.message,
                end_reason="skipped", interrupted=interrupted, failures=["skipped"])
    return Execution(a, verdict, None, 0.0)


def lost(planned: Planned, n: int, why: str, tries: Sequence[str], server: str | None) -> Execution:
    """An attempt no server could finish: not judged (like skipped), but reported as lost."""
    verdict = judge(planned.test, None, "skipped", "", detail=why)
    a = Attempt(attempt=n, status=LOST, reason=LOST, message=f"lost: {why}", end_reason=LOST,
                failures=[LOST], server=server, tries=list(tries))
    return Execution(a, verdict, None, 0.0)


__all__ = ["SERVICE_ENDS", "Execution", "Output", "failed_to_start", "how_it_ended", "judge_run",
           "lost", "make_preview", "not_run", "printable", "read_output"]
