"""python-runs: the model's code, run as a job on the executor under test, never in the harness.

Why on the executor: code a model wrote is untrusted, and the executor is the component whose
allow-list, timeouts and limits exist to run untrusted commands; running it in the harness
process (or a child of it) would bypass all of that and could take the harness down. So after
the attempt's own job has ended, each python-runs assertion's code (the answer's first
```python block) is sent through the same `cc_executor.client` connection as
`python3 -I -` with the code on stdin (an argument holds 128 KiB at most; a long answer's code
does not fit), under the assertion's timeout and limits; the plan asks the service to allow `python3`.
What came back (`CodeRun`) is judged with the other assertions (`stress.suite.assert_eval`).

Must not import the runner (runner.py, execution.py import this); the service only through
`cc_executor.client`, never `cc_executor.jobs/server/process/tree/registry`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from cc_executor import aio
from cc_executor.client import ConnectionLost, ExecutorClient, ExecutorError
from stress.run.attempt_record import read_output
from stress.run.observed import Observed
from stress.run.planned import REQUEST_TIMEOUT, Planned
from stress.suite.answer import CodeRun, answer_from, find_python

PYTHON = "python3"
"""The interpreter the service is asked to run (and to allow) for python-runs."""


def needs_python(planned: Planned) -> bool:
    return any(a.type == "python-runs" for a in planned.test.assertions)


async def run_code_checks(client: ExecutorClient, planned: Planned, seen: Observed) -> dict[int, CodeRun]:
    """Every python-runs assertion's code run on the executor, by assertion index. Nothing runs
    for an attempt that was interrupted, lost or never started (those assertions skip)."""
    if not needs_python(planned) or seen.interrupted or seen.lost or seen.job is None:
        return {}
    out = read_output(planned, seen)
    answer = answer_from(out.stdout, out.stderr, stream=out.stream)
    runs: dict[int, CodeRun] = {}
    for i, a in enumerate(planned.test.assertions):
        if a.type != "python-runs":
            continue
        code, _where = find_python(answer.text(a.target))
        runs[i] = await _run_one(client, code, a.timeout, planned.test.id, a.limits)
    return runs


async def _run_one(client: ExecutorClient, code: str, timeout: float, test_id: str,
                   limits: Mapping[str, float] | None) -> CodeRun:
    """One program's end; a refusal or a broken connection is a CodeRun with `error` set."""
    try:
        res = await aio.wait_for(
            client.execute(args=[PYTHON, "-I", "-"], input=code, timeout=timeout,
                           env={"STRESS_TEST_ID": test_id}, limits=dict(limits) if limits else None),
            timeout + REQUEST_TIMEOUT)
    except ExecutorError as e:
        return CodeRun(None, "error", error=f"refused: {e}")
    except (ConnectionLost, OSError) as e:
        return CodeRun(None, "error", error=f"connection lost: {e}")
    except asyncio.TimeoutError:
        return CodeRun(None, "error", error=f"no completion within {timeout + REQUEST_TIMEOUT:g} s")
    return CodeRun(res.exit_code, res.reason, res.stdout_text, res.stderr.decode("utf-8", "replace"),
                   res.duration)


__all__ = ["PYTHON", "needs_python", "run_code_checks"]
