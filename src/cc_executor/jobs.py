"""Jobs: what an `execute` request becomes, between the transport and the process runner.

The server (transport: WebSocket, auth, frames) hands validated requests here; this module decides
whether a command may run (allow-list, shell mode), adapts Claude invocations, admits or queues the
job (limits, host load), pumps the run's output to the job's sink as protocol notifications, and
guarantees one `process.completed` per job whatever happens. It knows nothing of WebSockets: a sink
is just `async (text) -> None`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from . import defaults, protocol
from .claude_cli import adapt_claude_argv
from .detach import Resumer
from .job import Job, Sink
from .load import Decision
from .policy import AllowList, check_detach, check_env, grant_limits
from .process import OutputBatch, ProcessRunner, RunEnd, RunSpec, SpawnError
from .protocol import (
    INVALID_PARAMS,
    JOB_NOT_RUNNING,
    NO_SUCH_JOB,
    SPAWN_FAILED,
    TOO_MANY_JOBS,
    ErrorReason,
    RpcError,
)
from .settings import Settings
from .telemetry import claude_telemetry_env
from .timing import stretch_timeouts

AdmissionCheck = Callable[[], Decision]

log = logging.getLogger("cc_executor.jobs")


class JobManager:
    def __init__(self, settings: Settings, runner: ProcessRunner,
                 admission: AdmissionCheck | None = None,
                 timeout_factor: Callable[[], float] | None = None,
                 on_start: Callable[[], None] | None = None):
        self.settings = settings
        self.runner = runner
        self.admission = admission
        self.on_start = on_start  # told of every start (admission's slow-start count)
        self.timeout_factor = timeout_factor
        self.allow = AllowList(settings.allow, settings.claude_path)
        self.jobs: dict[str, Job] = {}
        self.queue: collections.deque[Job] = collections.deque()
        self.running = 0
        self.event_log = logging.getLogger("cc_executor.events")
        self._queue_timer: asyncio.Task | None = None
        self._completing: set[asyncio.Task] = set()  # completions being sent by `_end_unstarted`
        self._closing = False
        self.resumer = Resumer(settings.run_dir, settings.spool_memory, settings.spool_limit,
                               settings.replay_window, settings.max_buffer, self._give_up)

    # ---- building a job ------------------------------------------------------------------

    def prepare(self, params: protocol.ExecuteParams
                ) -> tuple[list[str], RunSpec, bool, dict[str, dict]]:
        """(argv, the run's spec, whether it is a Claude job, `limits_enforced`)."""
        s = self.settings
        check_env(params.env)  # before the program's checks: a bad param, whatever the program
        limits, enforced = grant_limits(params.limits, s, self.runner.containment)
        check_detach(params.detach_timeout, s)
        shell = None
        if params.command is not None and s.shell:
            argv = params.argv(shell=True)  # [SHELL, "-c", command]: the protocol's one spelling
            shell = params.command
            is_claude = False
        else:
            argv = params.argv(shell=False)  # linear time (shlex is quadratic on long prompts)
            exe, entry = self.allow.resolve(argv[0], params.cwd)
            is_claude = entry == "claude"
            argv = [exe, *argv[1:]]
            if is_claude:
                argv = adapt_claude_argv(argv)
        env = dict(params.env or {})
        if is_claude:
            # The operator's alone (not inherited, no client `env`): skips permissions as root.
            env["IS_SANDBOX"] = "1" if s.is_sandbox else None
            env.update(claude_telemetry_env(s.claude_telemetry))
        if params.cwd is not None and not os.path.isdir(params.cwd):
            raise RpcError.because(SPAWN_FAILED, ErrorReason.CWD_NOT_FOUND,
                                   f"working directory not found: {params.cwd}", field="cwd")
        timeout = params.timeout if params.timeout is not None else s.default_timeout
        spec = RunSpec(
            argv=None if shell is not None else argv,
            shell=shell,
            cwd=params.cwd, env=env,
            input=params.input.encode() if params.input is not None else None, timeout=timeout,
            stall_timeout=params.stall_timeout,
            kill_grace=s.kill_grace, max_buffer=s.max_buffer,
            batch_bytes=s.batch_bytes, batch_interval=s.batch_interval,
            # Claude Code 2.1.x may exit with output unflushed to a pipe; a file gets it all.
            capture_to="file" if is_claude and s.claude_capture == "file" else "pipe",
            limits=limits,
        )
        return argv, spec, is_claude, enforced

    def owner_jobs(self, owner: Any) -> list[Job]:
        return [j for j in self.jobs.values() if j.owner is owner]

    def submit(self, owner: Any, params: protocol.ExecuteParams, sink: Sink) -> Job:
        """Validate and register a job. The caller answers the request, then calls `begin`."""
        if self._closing:
            raise RpcError.because(TOO_MANY_JOBS, ErrorReason.SHUTTING_DOWN,
                                   protocol.SHUTTING_DOWN_MESSAGE)
        argv, spec, is_claude, enforced = self.prepare(params)
        mine = len(self.owner_jobs(owner))
        if mine >= self.settings.max_jobs_per_connection:
            raise RpcError.because(TOO_MANY_JOBS, ErrorReason.CONNECTION_LIMIT,
                                   f"too many jobs on this connection ({mine}, limit "
                                   f"{self.settings.max_jobs_per_connection})",
                                   limit=self.settings.max_jobs_per_connection)
        job = Job(uuid.uuid4().hex[:12], owner, sink, argv, spec, is_claude,
                  limits_enforced=enforced or None)
        decision = self._may_start()
        ok, reason = decision.may_start, decision.reason
        if not ok and len(self.queue) >= self.settings.max_queue:
            raise RpcError.because(TOO_MANY_JOBS, ErrorReason.QUEUE_FULL,
                                   f"queue is full ({len(self.queue)} waiting); {reason}",
                                   limit=self.settings.max_queue)
        self.jobs[job.job_id] = job
        if ok and not self.queue:
            self._spawn(job, gated=True)  # may raise RpcError: spawn failed
        else:
            job.queue_reason = reason or "waiting behind earlier jobs"
            job.queue_decision = None if ok else decision
            self.queue.append(job)
            self._log("queued", job, position=len(self.queue), reason=job.queue_reason,
                      **_held_by(job))
            self._ensure_queue_timer()
        if params.detach_timeout:  # only once accepted (a refused job must leave no trace)
            self.resumer.enroll(job, params.detach_timeout)  # before its gated pump runs
        return job

    def result_of(self, job: Job) -> protocol.ExecuteStarted | protocol.ExecuteQueued:
        """The `execute` result: queued (with its place and why), or started."""
        if job.state == "queued":
            return protocol.ExecuteQueued(job_id=job.job_id, position=self.position(job),
                                          reason=job.queue_reason, resume_token=job.resume_token,
                                          **_held_by(job))
        return protocol.ExecuteStarted(job_id=job.job_id, pid=job.run.pid, pgid=job.run.pgid,
                                       argv=job.argv, resume_token=job.resume_token,
                                       **self._limits(job))

    def _limits(self, job: Job) -> dict[str, Any]:
        return {"timeout": job.spec.timeout, "stall_timeout": job.spec.stall_timeout,
                "timeout_factor": job.timeout_factor,
                "limits_enforced": job.limits_enforced}

    def _stretch(self, job: Job) -> None:
        """Stretch the job's limits by the load factor of the moment it starts (not when it
        was queued): the one rule of `cc_executor.timing`, which the harness applies too."""
        if self.timeout_factor is None or not self.settings.stretch_timeouts:
            return
        # Rounded before use, as it is reported: a client that multiplies its limits by the
        # reported factor gets exactly the limits in force.
        factor = round(self.timeout_factor(), 4)
        if factor > 1.0:
            limits = stretch_timeouts(job.spec.timeout, job.spec.stall_timeout, factor)
            job.spec = replace(job.spec, timeout=limits.total, stall_timeout=limits.stall)
            job.timeout_factor = factor

    async def begin(self, job: Job) -> None:
        """Send what follows the execute response: process.queued or process.started.

        The server calls this once the reply went out, or failed to (the client left): either
        way the job's pump is released, so its slot and its completion can never leak."""
        if job.gate is not None and not job.gate.is_set():
            # Announced right here, in the turn that sent the reply, so both leave together
            # and the client wakes once for the pair; the pump (waiting at the gate since the
            # spawn) sends the output after that.
            try:
                await self._announce(job)
            finally:
                job.gate.set()
        elif job.state == "queued" and job in self.queue:
            await self._send(job, protocol.notify(protocol.QueuedParams(
                job_id=job.job_id, position=self.position(job), reason=job.queue_reason,
                **_held_by(job))))
            self._start_keepalive(job)
        # Otherwise the job was admitted from the queue while its reply waited to be written
        # (its pump announces it, after the reply), or it already ended.

    def position(self, job: Job) -> int:
        try:
            return self.queue.index(job) + 1
        except ValueError:
            return 0

    # ---- admission -------------------------------------------------------------------------

    def _may_start(self) -> Decision:
        if self.running >= self.settings.max_jobs:
            return Decision(False, f"{self.running} jobs running (limit {self.settings.max_jobs})",
                            "max_jobs", float(self.running), float(self.settings.max_jobs))
        if self.admission is not None:
            return self.admission()
        return Decision(True, "")

    def pump_queue(self) -> None:
        """Start queued jobs in FIFO order while capacity and load allow. No job overtakes."""
        while self.queue and not self._closing:
            decision = self._may_start()
            if not decision.may_start:
                for j in self.queue:
                    j.queue_reason, j.queue_decision = decision.reason, decision
                return
            job = self.queue.popleft()
            try:
                self._spawn(job)  # its pump announces it
            except RpcError as e:
                self._end_unstarted(job, "spawn_failed", e.message)
                continue

    def _ensure_queue_timer(self) -> None:
        if self._queue_timer is None or self._queue_timer.done():
            self._queue_timer = asyncio.get_running_loop().create_task(self._watch_queue())

    async def _watch_queue(self) -> None:
        """Expire jobs that waited too long, and retry admission as the host recovers."""
        while self.queue:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            for job in [j for j in self.queue if now - j.queued_at > self.settings.queue_timeout]:
                self.queue.remove(job)
                await self._complete_unstarted(
                    job, "queue_timeout",
                    f"waited {self.settings.queue_timeout:g} s in the queue (queue_timeout) "
                    f"without being admitted: {job.queue_reason}")
            self.pump_queue()

    # ---- running ----------------------------------------------------------------------------

    def _spawn(self, job: Job, gated: bool = False) -> None:
        """Start the process, take a slot, and create the job's one pump, right now: every
        spawned job has a pump from here on, so it always completes and gives its slot back.
        `gated`: the pump waits for `begin` (the execute reply is not out yet)."""
        self._stretch(job)
        try:
            job.run = self.runner.start_nowait(job.spec)
        except SpawnError as e:
            job.run = None
            self.jobs.pop(job.job_id, None)
            raise RpcError.because(SPAWN_FAILED, ErrorReason.CANNOT_START, str(e),
                                   argv=job.argv) from None
        job.state = "running"
        job.started_at = time.monotonic()
        self.running += 1
        if self.on_start is not None:
            self.on_start()
        if gated:
            job.gate = asyncio.Event()
        job.pump = asyncio.get_running_loop().create_task(self._pump(job))
        self._log("started", job, pid=job.run.pid, pgid=job.run.pgid, argv0=job.argv[0])

    async def _announce(self, job: Job) -> None:
        if job.announced:
            return
        job.announced = True
        run = job.run
        job.last_output = time.monotonic()
        await self._send(job, protocol.notify(protocol.StartedParams(
            job_id=job.job_id, pid=run.pid, pgid=run.pgid, argv=job.argv, **self._limits(job))))

    async def _pump(self, job: Job) -> None:
        run = job.run
        end: RunEnd | None = None
        try:
            if job.gate is not None:
                await job.gate.wait()
            await self._announce(job)  # no-op when `begin` already did
            self._start_keepalive(job)
            async for ev in run.events():
                if isinstance(ev, OutputBatch):
                    if job.relay is not None:  # resumable: kept for replay, sent by the relay
                        await job.relay.output(ev.stream, ev.seq, ev.offset, ev.data, run)
                        job.last_output = time.monotonic()
                    elif not job.sink_broken:
                        await self._send(job, protocol.encode_output(
                            job.job_id, ev.stream, ev.seq, ev.offset, ev.data))
                        job.last_output = job.last_sent
                else:
                    end = ev
        finally:
            if end is None:  # the pump itself was cancelled: make sure the run ends
                run.cancel()
                end = await run.wait()
            if job.state == "running":  # its slot, given back once: `running` never goes negative
                self.running -= 1
            job.state = "ended"
            await self._complete(job, end)
            self.pump_queue()

    async def _send(self, job: Job, text: str) -> None:
        if job.sink_broken:
            return
        job.sending += 1
        try:
            await job.sink(text)
        except Exception:  # the client went away: keep draining so the run can end
            job.sink_broken = True
        finally:
            job.sending -= 1
            job.last_sent = time.monotonic()

    # ---- keepalive: process.progress ----------------------------------------------------------

    def _start_keepalive(self, job: Job) -> None:
        """While a queued or running job says nothing, send `process.progress` every
        `progress_interval` seconds, so clients that take a quiet socket for a stalled job
        (seed 004: 10 s) keep waiting. Not output: the runner's stall timeout never sees it.
        A timer, not a task, per job: a job that ends before the interval costs one timer."""
        interval = self.settings.progress_interval
        if (interval <= 0 or job.keepalive is not None or job.keepalive_timer is not None
                or job.completed or job.sink_broken):
            return
        job.keepalive_timer = asyncio.get_running_loop().call_later(
            interval, self._keepalive_due, job, interval)

    def _keepalive_due(self, job: Job, interval: float) -> None:
        job.keepalive_timer = None
        if job.completed or job.sink_broken:
            return
        loop = asyncio.get_running_loop()
        wait = job.last_sent + interval - time.monotonic()
        if wait > 0 or job.sending:  # a frame went out lately, or is going out now
            job.keepalive_timer = loop.call_later(wait if wait > 0 else interval,
                                                  self._keepalive_due, job, interval)
            return
        job.keepalive = loop.create_task(self._send_progress(job))

    async def _send_progress(self, job: Job) -> None:
        now = time.monotonic()
        await self._send(job, protocol.notify(protocol.ProgressParams(
            job_id=job.job_id, state="queued" if job.state == "queued" else "running",
            elapsed=round(now - job.queued_at, 3), silent_for=round(now - job.last_output, 3))))
        job.keepalive = None
        self._start_keepalive(job)  # no-op once the job completed

    async def _stop_keepalive(self, job: Job) -> None:
        """Before process.completed: no progress may follow it. A pending timer is cancelled;
        a progress frame already being written is let through first (so it precedes the
        completion)."""
        if job.keepalive_timer is not None:
            job.keepalive_timer.cancel()
            job.keepalive_timer = None
        task = job.keepalive
        if task is not None and not task.done():
            await asyncio.wait({task})

    async def _complete(self, job: Job, end: RunEnd) -> None:
        if job.completed:
            return
        job.completed = True
        await self._stop_keepalive(job)
        reason = end.reason.value
        params = _completion(job_id=job.job_id, reason=reason, exit_code=end.exit_code,
                             signal=end.signal, duration=round(end.duration, 6),
                             stdout_bytes=end.stdout_bytes, stderr_bytes=end.stderr_bytes)
        self._log("completed", job, reason=reason, exit_code=end.exit_code,
                  duration=round(end.duration, 4), stdout_bytes=end.stdout_bytes,
                  stderr_bytes=end.stderr_bytes, killed=end.killed,
                  pid=job.run.pid if job.run else None, pgid=job.run.pgid if job.run else None)
        await self._send_end(job, protocol.notify(params))
        self.jobs.pop(job.job_id, None)

    async def _complete_unstarted(self, job: Job, reason: str, message: str) -> None:
        job.state = "ended"
        if job.completed:
            return
        job.completed = True
        await self._stop_keepalive(job)
        self._log("completed", job, reason=reason, message=message)
        await self._send_end(job, protocol.notify(_completion(
            job_id=job.job_id, reason=reason, exit_code=-1, duration=0.0, error=message)))
        self.jobs.pop(job.job_id, None)

    async def _send_end(self, job: Job, text: str) -> None:
        """The completion: straight to the sink, or after the last output through the relay
        (to whichever connection holds the job, once)."""
        if job.relay is not None:
            job.relay.finish(text)
        else:
            await self._send(job, text)

    def _end_unstarted(self, job: Job, reason: str, message: str) -> None:
        """End a job that never ran, now, and send its completion from a task of its own.

        Why not await the send: a control request (or a batch holding one) must not wait for
        the client to read, and nothing of a batch may reach the socket before the batch's
        reply (a task's send queues behind it)."""
        job.state = "ended"
        task = asyncio.get_running_loop().create_task(
            self._complete_unstarted(job, reason, message))
        self._completing.add(task)
        task.add_done_callback(self._completing.discard)

    # ---- control ----------------------------------------------------------------------------

    def find(self, owner: Any, job_id: str | None) -> Job:
        mine = [j for j in self.owner_jobs(owner) if j.state != "ended"]
        if job_id is None:
            if len(mine) == 1:
                return mine[0]
            if not mine:
                raise RpcError.because(NO_SUCH_JOB, ErrorReason.NO_LIVE_JOB,
                                       "no job is running on this connection")
            raise RpcError(INVALID_PARAMS,
                           f"params.job_id: required when {len(mine)} jobs are live",
                           {"field": "job_id", "jobs": [j.job_id for j in mine]})
        for j in self.owner_jobs(owner):
            if j.job_id == job_id:
                return j
        raise RpcError.because(NO_SUCH_JOB, ErrorReason.UNKNOWN_JOB, f"no such job: {job_id}",
                               job_id=job_id)

    async def control(self, owner: Any, job_id: str | None, kind: str
                      ) -> tuple[protocol.ControlResult, Callable[[], Awaitable[None]] | None]:
        """Act now; return the result and what to send once the reply is out (the completion
        of a job cancelled while queued, which must follow the reply)."""
        job = self.find(owner, job_id)
        if job.state == "queued":
            if kind == "CANCEL":
                self.queue.remove(job)
                job.state = "ended"
                return protocol.ControlResult.for_type(kind, job.job_id), (
                    lambda: self._complete_unstarted(job, "cancelled", "cancelled while queued"))
            raise RpcError.because(JOB_NOT_RUNNING, ErrorReason.WRONG_STATE,
                                   f"job {job.job_id} is queued, not running",
                                   job_id=job.job_id, state="queued")
        run = job.run
        ok = {"PAUSE": run.pause, "RESUME": run.resume, "CANCEL": run.cancel}[kind]()
        acted_at = time.time()  # when the signal went to the group: what latency is read from
        if not ok:
            state = "paused" if run.paused else "ending" if run.done or job.state == "ended" \
                else "running"
            raise RpcError.because(JOB_NOT_RUNNING, ErrorReason.WRONG_STATE,
                                   f"cannot {kind.lower()} job {job.job_id}: it is {state}",
                                   job_id=job.job_id, state=state)
        self._log(kind.lower(), job, pid=run.pid, at=round(acted_at, 6))
        return protocol.ControlResult.for_type(kind, job.job_id), None

    # ---- endings of owners and of the service -------------------------------------------------

    async def end_owner(self, owner: Any, detach: bool = True) -> None:
        """The client went away: end its jobs (whole trees) and wait for them. `detach`: the
        connection dropped (not closed by the client), so resumable jobs wait for an `attach`."""
        if detach:
            self.resumer.owner_gone(owner)
        else:
            self.resumer.owner_closed(owner)  # nothing to resume: ended below as any job
        waits = []
        for job in self.owner_jobs(owner):
            job.sink_broken = True
            if job.state == "queued":
                self.queue.remove(job)
                await self._complete_unstarted(job, "cancelled", "client disconnected")
            elif job.run is not None:
                job.run.cancel()
                if job.gate is not None:
                    job.gate.set()  # its reply never went out: release the pump anyway
                if job.pump is not None:
                    waits.append(job.pump)
        if waits:
            await asyncio.wait(waits, timeout=self._end_wait())

    def _give_up(self, job: Job) -> None:
        """A detached job nobody attached to in time: end it as a disconnect always did
        (whole tree), or drop it from the queue."""
        if job.state == "queued" and job in self.queue:
            self.queue.remove(job)
            self._end_unstarted(job, "cancelled", "detach_timeout ran out (nobody attached)")
        elif job.run is not None and job.state == "running":
            job.run.resume()  # a spool-paused tree must run to take its SIGTERM
            job.run.cancel()
            if job.gate is not None:
                job.gate.set()

    def attach(self, owner: Any, params: protocol.AttachParams):
        """Move a resumable job to `owner`: the result, and the replay to run after it."""
        return self.resumer.attach(owner, owner.send, params, self.position,
                                   self._start_keepalive)

    async def shutdown(self) -> None:
        """End every job (reason shutdown), tell clients that are still there, and wait."""
        self._closing = True
        self.resumer.drop_detached()
        for job in list(self.queue):
            self.queue.remove(job)
            await self._complete_unstarted(job, "shutdown", "server shutting down")
        waits = []
        for job in list(self.jobs.values()):
            if job.run is not None:
                job.run.shutdown()
                if job.gate is not None:
                    job.gate.set()
                if job.pump is not None:
                    waits.append(job.pump)
        if waits:
            await asyncio.wait(waits, timeout=self._end_wait())
        if self._completing:  # completions of jobs cancelled while queued, still being sent
            await asyncio.wait(set(self._completing), timeout=self._end_wait())
        await self.runner.shutdown(timeout=self._end_wait())
        await self.resumer.deliver_ends(timeout=self._end_wait())
        self.resumer.close()
        await asyncio.sleep(0)  # let the last queued job events be recorded (`_log`)

    def _end_wait(self) -> float:
        """How long to wait for ended trees: the kill grace, and a margin for stragglers."""
        return self.settings.kill_grace + defaults.END_WAIT_MARGIN

    def _log(self, event: str, job: Job, **fields) -> None:
        """Queue a job event for the event log, to be recorded on the next loop turn.

        Building a logging record costs tens of microseconds (caller lookup, record fields);
        the events sit right before the execute reply and the completion message, so they are
        recorded just after those went out instead. `shutdown` lets the queue drain."""
        fields = {"event": event, "job_id": job.job_id, **fields}
        try:
            asyncio.get_running_loop().call_soon(self._record, event, fields)
        except RuntimeError:  # no loop running: record now
            self._record(event, fields)

    def _record(self, event: str, fields: dict) -> None:
        # makeRecord, not .info(): no caller lookup (a walk up the stack) for a line whose
        # caller is always this one.
        logger = self.event_log
        if logger.isEnabledFor(logging.INFO):
            logger.handle(logger.makeRecord(logger.name, logging.INFO, __file__, 0, event, (),
                                            None, extra={"job_event": fields}))


def _held_by(job: Job) -> dict[str, Any]:
    return job.queue_decision.held() if job.queue_decision is not None else {}


def _completion(**fields: Any) -> protocol.CompletedParams:
    """The `process.completed` params, validated; if they fail validation (a bug: the runner
    and the protocol disagree), logged and sent unvalidated, since a job must never go without
    its completion."""
    try:
        return protocol.CompletedParams(**fields)
    except ValueError:
        log.exception("invalid completion %r; sent as is", fields)
        fields.setdefault("status", protocol.completion_status(fields["reason"],
                                                               fields["exit_code"]))
        return protocol.CompletedParams.model_construct(**fields)

