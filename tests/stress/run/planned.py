"""What a run is asked to do: the planned cases, the run's options, and where it reports progress.

Owns `Planned` (a case as it will run: one expansion of a suite's test, with its repeats and pass
threshold), `RunOptions` (workers, the client-side guards, --halt, retries), the guard constants,
and `ProgressSink`, the interface every attempt reports its start and end through.

Why plain data apart from the modules that run it: the CLI builds a plan (and, when a run never
started, reports every planned test as not run) without touching a service; the runner's other
modules all read these types, so this one must stay at the bottom of their imports.

Must not import: the runner's other modules (runner, execution, observed, attempt_record,
instance_runs, outcomes) - they import this one; nothing of the service but its shared libraries,
and never `cc_executor.jobs/server/process/tree/registry`.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from stress.run.flaky import HaltRule
from stress.suite import SuiteTest
from stress.suite.verdict import PassThreshold

GUARD_GRACE = 10.0
"""Seconds the client waits beyond a service limit before acting itself (service kill grace is 3 s)."""
CANCEL_WAIT = 10.0
"""Seconds to wait for the completion after the harness sends CANCEL."""
QUEUE_LIMIT = 960.0
"""Seconds a job may wait in the service's queue before the harness gives up (service: 900 s)."""
REQUEST_TIMEOUT = 30.0
"""Seconds for the service to answer an execute request."""
PREVIEW_CHARS = 1500
"""About how much of an attempt's output its report entry shows (the files keep all of it)."""
CLAUDE_CAPABILITY = "claude"


class ProgressSink(Protocol):
    """Where attempts report: `started` when one begins, `finished` when it has a status.

    A sink may also have `note(text)` (other lines: queue, halt, worker events); the runner
    looks for it with getattr, so a minimal sink needs none."""

    def started(self, key: str, label: str) -> None: ...
    def finished(self, key: str, label: str, status: str, reason: str, duration: float,
                 message: str) -> None: ...


class NoProgress:
    """The sink of a run nobody watches (library use, tests)."""

    def started(self, key: str, label: str) -> None:
        pass

    def finished(self, *a: Any, **k: Any) -> None:
        pass


@dataclass(frozen=True)
class Planned:
    """A case as it will run: its suite, where its outputs go, repeats and threshold in effect.

    Each repeat is one attempt (`attempt_stem(n)` names its outputs); a test with instances runs
    its K instances inside every attempt."""

    suite: str
    test: SuiteTest
    stem: str
    """Output path stem under outputs/ (the test id; "<suite>/<id>" when ids clash)."""
    repeat: int
    threshold: PassThreshold
    uses_claude: bool
    skip: str | None = None
    """Why this test will not run (unmet requirement), or None."""
    median: float | None = None
    """Median duration of the test's recent passed attempts in the history (None: unknown)."""
    learned_timeout: dict[str, Any] | None = None
    """Set by --learned-timeouts: {percent, median, learned, configured}; `test.timeout` is then
    the learned limit."""

    def attempt_stem(self, attempt: int) -> str:
        return self.stem if self.repeat == 1 else f"{self.stem}.{attempt}"

    @property
    def label(self) -> str:
        return self.test.id


@dataclass
class RunOptions:
    concurrency: int = 1
    fail_fast: bool = False
    model_env: Mapping[str, str | None] = field(default_factory=dict)
    claude_env: Mapping[str, str | None] = field(default_factory=dict)
    """Added for tests that use Claude (e.g. PATH to the CLI for `sh -c "claude ..."`)."""
    guard_grace: float = GUARD_GRACE
    cancel_wait: float = CANCEL_WAIT
    queue_limit: float = QUEUE_LIMIT
    preview_chars: int = PREVIEW_CHARS
    halt: HaltRule | None = None
    """--halt: counted over attempts that ran (passed or failed; lost ones count as failed)."""
    resume: bool = True
    """Connections resume after a blip (jobs detach for 30 s). False for a fleet task
    (stress.cluster): its job must end with its worker (detach_timeout 0), or Dask's rerun
    elsewhere would be a second live run."""
    simulated_cost: bool = False
    """The model is the loopback stand-in: its cost is made up, so `cost` assertions skip."""


def invocation_summary(test: SuiteTest, limit: int = 120) -> str:
    """One line saying what a test runs (prompt first when there is one)."""
    if test.prompt is not None and test.kind == "prompt":
        text = f"prompt: {test.prompt}"
    elif test.command is not None:
        text = test.command
    else:
        text = shlex.join(test.args or ())
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = ["CANCEL_WAIT", "CLAUDE_CAPABILITY", "GUARD_GRACE", "PREVIEW_CHARS", "QUEUE_LIMIT",
           "REQUEST_TIMEOUT", "NoProgress", "Planned", "ProgressSink", "RunOptions",
           "invocation_summary"]
