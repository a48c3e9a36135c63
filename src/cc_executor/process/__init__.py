"""The process runner: start a command, stream its output in batches, control it, end it once.

This package knows nothing of WebSockets; the service, the harness and `safe_run` all use it. It
must never import the protocol, the jobs, the server or the client: they sit on top of it.

Layout, one idea a module:

* `spec`       - the plain values: `RunSpec` (what to run), `OutputBatch`, `RunEnd`, `EndReason`,
                 `SpawnError`, and `build_env` (the child's environment, with the run's marker).
* `batcher`    - `OutputBatcher`, sans-I/O: cutting bytes into batches (`utf8_cut`), seq and
                 offsets, and the back-pressure arithmetic (when to stop reading, when to read
                 again, the drain's allowance). No descriptors, no event loop, no clock.
* `reader`     - `OutputReader`: the batcher's I/O half. Reads pipes (`add_reader`) or tails
                 capture files (`pread`), runs the flush timer, stops and restarts reading.
* `spawn`      - `Popen` in a new session; /dev/null or input for stdin; pipes or capture files.
* `exit_watch` - the leader's exit through a pidfd (a thread where there is none).
* `stdin`      - feeding `RunSpec.input` without blocking.
* `ending`     - `TreeEnder`: which nets of `tree` to cast to end the run's processes.
* `run`        - `Run`: the lifecycle that ties them together, the controls, the timers, the end.
* `runner`     - `start` and `ProcessRunner` (many runs, one registry, one shutdown).

How it works, and why:

* `subprocess.Popen` with `start_new_session=True` (own session and process group), stdin
  /dev/null unless input is given, then `os.pidfd_open` watched by the event loop for the exit.
  That is ~10x cheaper than asyncio's subprocess transport with a child watcher, and it never
  reaps anybody else's children.
* stdout and stderr are read with `loop.add_reader` on the raw, non-blocking pipe descriptors
  (never `connect_read_pipe`, which double-closes descriptors under uvloop: MagicStack/uvloop#763).
  There is no line splitting anywhere, so no line is ever too long.
* Output is cut into batches of at most `batch_bytes`, flushed after `batch_interval` when a
  producer is slow, and at once when a stream ends. A cut never splits a UTF-8 character (an
  incomplete tail waits for its next bytes; invalid bytes are passed through as they are: batches
  are `bytes`, so nothing is lost). Every batch carries its stream, a run-wide sequence number and
  its byte offset within its stream.
* Back-pressure: when more than `max_buffer` bytes wait for the consumer, the runner stops reading
  the pipes; the child then blocks in `write()` once the pipe is full. Reading resumes when the
  consumer has taken half of it. Memory is therefore bounded by `max_buffer` plus one read (plus
  what dead writers left in the pipes, during the final drain). Time spent held back this way, or
  paused, does not count as a stall.
* Exactly one `RunEnd` per run, after every batch. Ending kills the whole tree (see `tree`):
  SIGTERM to the group and to escaped descendants, `kill_grace`, SIGKILL, then reap. When the
  leader exits by itself, anything it left in its group is ended the same way.
"""

from .batcher import utf8_cut
from .reader import _DRAIN_ALLOWANCE  # noqa: F401  (tests bound the drain with it)
from .run import Run
from .runner import ProcessRunner, start
from .spec import EndReason, OutputBatch, RunEnd, RunSpec, SpawnError, build_env

__all__ = [
    "EndReason", "OutputBatch", "ProcessRunner", "Run", "RunEnd", "RunSpec", "SpawnError",
    "build_env", "start", "utf8_cut",
]
