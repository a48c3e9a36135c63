"""The Python client of the executor service, for agents and the stress harness: the only door
the harness has to the service.

    async with await ExecutorClient.connect("ws://127.0.0.1:8004/ws", token=...) as client:
        result = await client.execute(args=["claude", "-p", "What is 2+2?"], timeout=120)
        print(result.exit_code, result.stdout_text)

        job = await client.start(command="claude -p 'What is 3+3?'")
        async for event in job:            # streaming: output events, then the completion
            if event.kind == "output":
                print(event.stream, event.data)
            # also "queued", "started", and "progress" (a keepalive while the job is silent)
        result = await job.result()

Several jobs may run at once on one connection: one reader task routes every notification to its
job by `job_id`, and every response to its request by `id`. A supervisor watches jobs with a
`JobObserver` (`start(..., observer=...)`) and drops a peer that stopped answering with `abort()`.
`connect(..., resume=True)` survives network blips: jobs are started resumable (`detach_timeout`)
and after a drop the client reconnects with backoff and re-attaches them from the last output it
gave the caller (no gap, no duplicate; docs/protocol.md, `attach`).

    errors.py      ExecutorError (code, data.reason), ConnectionLost
    events.py      Event (typed params from cc_executor.protocol), JobResult
    job.py         JobHandle, JobObserver
    connection.py  ExecutorClient
    resume.py      what resume=True remembers per job (token, last seq), and the backoff
    __main__.py    the small command line

Imports: `cc_executor.protocol`, `aio`, `defaults`, websockets; never the service's internals.
`python -m cc_executor.client -- CMD` streams one command's output to the terminal and exits
with its exit code.
"""

from .connection import DEFAULT_URL, ExecutorClient
from .errors import ConnectionLost, ExecutorError
from .events import Event, JobResult
from .job import JobHandle, JobObserver

__all__ = ["DEFAULT_URL", "ConnectionLost", "Event", "ExecutorClient", "ExecutorError",
           "JobHandle", "JobObserver", "JobResult"]
