"""The transport: FastAPI routes, the WebSocket upgrade checks, and the frame loop.

A thin layer by design. Frames are decoded by `protocol` (no I/O there), requests are carried out
by `jobs` (no WebSocket there), and processes are run by `process` (nothing of either). What lives
here is only what needs the socket: who may connect (token, Origin), reading frames, and writing
replies and notifications one at a time per connection.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from . import __version__, aio, dashboard, hardware, protocol, tree
from .admission import QUICK_SAMPLE, Admission, Limits, RunningJob
from .containment.service import ServiceContainment
from .event_log import setup_event_log
from .jobs import JobManager
from .load import Decision, LoadMonitor
from .observe import Observation, install_metrics_route
from .outbox import Outbox
from .policy.limits import check_ceilings
from .process import ProcessRunner
from .settings import Settings
from .timing import load_factor
from .usage import FIRST_DEMAND_AGE, UsageRates, group_usage

log = logging.getLogger("cc_executor.server")

SUBPROTOCOL = "cc-executor"
THROTTLE_FIELDS = ("throttle", "max_load", "min_free_mem", "queue_timeout", "job_load",
                   "cpu_pressure_limit", "memory_pressure_limit", "io_pressure_limit",
                   "slow_start", "job_cpu_share")
BEARER_PREFIX = "bearer."


class _QuietRefusals(logging.Filter):
    """Drop two uvicorn errors that any client can cause at will, to keep the error log for
    the server's own problems:

    - "ASGI callable returned without completing handshake.": logged for every upgrade we
      refuse with an HTTP 401/403 denial response (the handshake indeed never completes);
      our own refusal is logged at INFO with its reason.
    - "Invalid UTF-8 sequence received from client." (with a traceback): a text frame that is
      not UTF-8; uvicorn closes that connection with 1007, as RFC 6455 requires.
    """

    MESSAGES = frozenset({"ASGI callable returned without completing handshake.",
                          "Invalid UTF-8 sequence received from client."})

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in self.MESSAGES


def quiet_refused_upgrades() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietRefusals) for f in logger.filters):
        logger.addFilter(_QuietRefusals())


class Connection:
    """One client. Sends are serialised: frames from several jobs never interleave mid-write."""

    def __init__(self, websocket: WebSocket):
        self.ws = websocket
        self.id = uuid.uuid4().hex[:12]
        self._lock = asyncio.Lock()
        self.open = True

    async def send(self, text: str) -> None:
        if not self.open:
            raise ConnectionError("connection closed")
        async with self._lock:
            await self.ws.send_text(text)


class Service:
    """What the routes share: settings, runner, jobs, load monitor, start time."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.started = time.time()
        self.runner: ProcessRunner | None = None
        self.jobs: JobManager | None = None
        self.monitor = None
        self.connections: set[Connection] = set()
        self.allowed_origins = set(settings.allow_origin)
        self._requeue: asyncio.Task | None = None
        self._janitor: asyncio.Task | None = None
        self._event_log: logging.Handler | None = None
        self._stopped = False
        self._live_processes: int | None = 0
        self.admission = Admission(settings.slow_start)
        self.usage = UsageRates()  # each running job's CPU rate and RSS, by process group
        self._cores = os.cpu_count() or 1  # read once: glibc reads /sys for each call
        self._limits_cache: Limits | None = None
        self._connected: tuple[tuple, Callable[[str], str]] | None = None
        self._usable_cores = hardware.usable_cores()
        self._counting: asyncio.Task | None = None
        self.gpus: list[protocol.Gpu] | None = None  # read once at start (hardware.detect_gpus)
        self.observe = Observation(self)  # /metrics, /dashboard's recent events, refusal log
        self.containment: ServiceContainment | None = None

    async def start(self) -> None:
        self.gpus = await asyncio.to_thread(hardware.detect_gpus)
        quiet_refused_upgrades()  # after uvicorn configured its loggers
        self._event_log = setup_event_log(Path(self.settings.log_dir))
        self.containment = ServiceContainment(
            self.settings.containment, grace=self.settings.kill_grace,
            leaders=lambda: {run.pid for run in self.runner.runs.values()},
            run_dir=self.settings.run_dir)
        check_ceilings(self.settings, self.containment.cgroups)
        self.runner = ProcessRunner(self.settings.run_dir, containment=self.containment.cgroups,
                                    reaper=self.containment.reaper)
        self.containment.start()
        for rec in self.runner.reaped:
            log.warning("ended a run left by a previous server: %s", rec)
        self.observe.start(orphans_ended=len(self.runner.reaped))
        self.monitor = LoadMonitor(self.settings.sample_interval, counters=self._counters,
                                   psi_dir=self.settings.psi_dir or None)
        await self.monitor.start()
        self.admission.on_sample(self.monitor.pressure, self.monitor.psi_available, self._limits())
        # Always installed, and reading the settings at each call: a SIGHUP reload
        # (`apply_throttle`) can then switch throttling on or off and move the limits live.
        self.jobs = JobManager(self.settings, self.runner, self._admission, self._timeout_factor,
                               on_start=self.admission.started)
        self._requeue = asyncio.get_running_loop().create_task(self._recheck_queue())
        self._counting = asyncio.get_running_loop().create_task(self._count_processes())

    def _limits(self) -> Limits:
        """Admission's thresholds from the settings, built once (again after a reload,
        `apply_throttle`): every `execute` asks, and building them costs more than deciding."""
        s = self.settings
        if self._limits_cache is not None:
            return self._limits_cache
        limits = Limits(max_load=s.max_load_value(self._cores), min_free_mem=s.min_free_mem,
                        cpu_pressure=s.cpu_pressure_limit,
                        memory_pressure=s.memory_pressure_limit,
                        io_pressure=s.io_pressure_limit, slow_start=s.slow_start,
                        job_load=s.job_load, job_cpu_share=s.job_cpu_share,
                        cores=self._cores, settle=min(s.sample_interval / 2, FIRST_DEMAND_AGE))
        self._limits_cache = limits
        return limits

    def _admission(self) -> Decision:
        """May a job start now? The rule is `admission.Admission`'s; this gathers its inputs."""
        if not self.settings.throttle:
            return Decision(True, "")
        reading = self.monitor.latest if self.monitor is not None else None
        if reading is None:  # no sample yet (or reads failing): do not block on the unknown
            return Decision(True, "host load unknown")
        decision = self.admission.decide(reading, self._running(), self._limits())
        if decision.signal == "slow_start":  # measure the window's jobs soon, not in 0.5 s
            self.monitor.hurry(QUICK_SAMPLE)
        return decision

    def _running(self) -> list[RunningJob]:
        """The running jobs as admission sees them: age, and CPU rate once measured. A job
        still unmeasured after two samples (its group has no process left to read, or the
        passes time out) counts as idle rather than young for ever."""
        now = time.monotonic()
        unmeasured_for = 2 * self.settings.sample_interval
        out = []
        for j in self.jobs.jobs.values():
            if j.state == "running" and j.run:
                pgid = j.run.pgid
                age, rate, demand = now - j.started_at, self.usage.rate(pgid), \
                    self.usage.demand(pgid)
                if rate is None and demand is None and age > unmeasured_for:
                    rate = 0.0
                out.append(RunningJob(age, rate, demand))
        return out

    def _timeout_factor(self) -> float:
        """The load stretch for a job starting now, from the latest sample (1.0 before any)."""
        reading = self.monitor.latest if self.monitor is not None else None
        return 1.0 if reading is None else load_factor(reading.load1, reading.cores)

    def apply_throttle(self, new: Settings) -> dict[str, Any]:
        """Take the admission fields of `new` (a SIGHUP reload), then re-check the queue.

        Only these fields change live; the rest (host, port, token, allow-list...) need a
        restart. Returns what changed; logs it (these values are never secrets)."""
        changed: dict[str, Any] = {}
        for name in THROTTLE_FIELDS:
            old, value = getattr(self.settings, name), getattr(new, name)
            if old != value:
                setattr(self.settings, name, value)
                changed[name] = {"from": old, "to": value}
        self._limits_cache = None  # built from the fields just changed
        logging.getLogger("cc_executor.events").info("reload", extra={"job_event": {
            "event": "reload", "changed": changed,
            "queued_jobs": len(self.jobs.queue) if self.jobs else 0}})
        if self.jobs is not None and self.jobs.queue:
            self.jobs.pump_queue()
        return changed

    def _counters(self) -> dict[str, int | None]:
        """On the loop, after each sample: job counts and the latest process count."""
        jobs = self.jobs
        if jobs is None:  # the first sample is taken before the job manager exists
            return {"running_jobs": 0, "queued_jobs": 0, "live_processes": 0}
        return {"running_jobs": jobs.running, "queued_jobs": len(jobs.queue),
                "live_processes": self._live_processes}

    async def _count_processes(self) -> None:
        """Every second, in a thread: how many processes the live runs have (every process
        carrying a live run's marker, escaped ones included). Apart from the load sample, so
        a slow /proc pass can never hold back the load figures that admission reads; when a
        pass fails or takes over 2 s, the count is unknown (None) until the next one."""
        while True:
            ids = frozenset(self.runner.runs)
            try:
                pids = await aio.wait_for(asyncio.to_thread(tree.marked_any, ids), 2.0)
                self._live_processes = len(pids)
            except (asyncio.TimeoutError, OSError):
                self._live_processes = None
            await asyncio.sleep(1.0)

    async def _measure_jobs(self) -> None:
        """Each running job's CPU rate and RSS, measured right after each load sample so that
        admission decides on pressure and job usage of the same moment (in a thread, bounded:
        a slow pass leaves the last figures in place)."""
        runs = list(self.runner.runs.values())
        groups = frozenset(run.pgid for run in runs)
        try:
            usage = await aio.wait_for(asyncio.to_thread(group_usage, groups), 1.0)
        except (asyncio.TimeoutError, OSError):
            return
        now = time.time()
        self.usage.update(usage, ages={run.pgid: now - run.started_at for run in runs})

    async def _recheck_queue(self) -> None:
        """Each new load sample may admit queued jobs: re-check exactly then, not on a timer."""
        while True:
            await self.monitor.wait_for_change()
            await self._measure_jobs()
            self.admission.on_sample(self.monitor.pressure, self.monitor.psi_available,
                                     self._limits(), self._running())
            if self.jobs.queue:
                self.jobs.pump_queue()

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for task in (self._requeue, self._janitor, self._counting):
            if task is not None:
                task.cancel()
        if self.jobs is not None:
            await self.jobs.shutdown()
        if self.containment is not None:
            await self.containment.close()
        if self.monitor is not None:
            await self.monitor.stop()
        if self._event_log is not None:
            self._event_log.flush()
        self.observe.stop()

    def health(self) -> dict[str, Any]:
        jobs = self.jobs
        body: dict[str, Any] = {
            "status": "ok",
            "version": __version__,
            "uptime": round(time.time() - self.started, 3),
            "jobs": {"running": jobs.running if jobs else 0,
                     "queued": len(jobs.queue) if jobs else 0},
            # Resumable jobs whose connection dropped, waiting for `attach` (a count only).
            "detached_jobs": jobs.resumer.count_detached() if jobs else 0,
            # What the running jobs cost, measured: CPU in cores (1.0 = one busy), RSS bytes.
            "job_usage": {"cpu": round(sum(self.usage.rates.values()), 3),
                          "rss": self.usage.total_rss()},
            "connections": len(self.connections),
            "hardware": self.hardware().wire(),
            "model": self.settings.model,
            "containment": self.containment.describe() if self.containment else None,
        }
        if self.monitor is not None and self.monitor.latest is not None:
            body["load"] = self.monitor.latest.to_dict()
            body["throttle"] = {"enabled": self.settings.throttle,
                                "max_load": self.settings.max_load_value(),
                                "min_free_mem": self.settings.min_free_mem}
            body["admission"] = self.admission.describe()
        return body

    def connected(self, session_id: str) -> str:
        """The `connected` notification of a new connection. Encoded once per load sample and
        settings (its hardware figures change with the sample), then only the id is filled in."""
        s = self.settings
        key = (s, self.monitor.seq if self.monitor is not None else -1)
        if self._connected is None or self._connected[0] != key:
            params = protocol.ConnectedParams(
                session_id="", version=__version__,
                capabilities=protocol.Capabilities(shell=s.shell, allow=s.allow,
                                                   max_frame=s.max_frame,
                                                   batch_bytes=s.batch_bytes),
                hardware=self.hardware(), model=s.model)
            self._connected = (key, protocol.per_session(params))
        return self._connected[1](session_id)

    def hardware(self) -> protocol.Hardware:
        reading = self.monitor.latest if self.monitor is not None else None
        if reading is None:
            return hardware.read_hardware(self.gpus)
        return hardware.from_reading(reading, self._usable_cores, self.gpus)

    # ---- the upgrade checks --------------------------------------------------------------------

    def refuse_reason(self, ws: WebSocket, also_allowed: set[str] | frozenset[str] = frozenset()
                      ) -> tuple[int, str] | None:
        origin = ws.headers.get("origin")
        if origin is not None and origin not in self.allowed_origins | also_allowed:
            return 403, f"origin not allowed: {origin}"
        token = self.settings.token
        if token:
            offered = self.offered_token(ws)
            if offered is None:
                return 401, "missing token: send 'Authorization: Bearer <token>'"
            if not secrets.compare_digest(offered.encode(), token.encode()):
                return 401, "invalid token"
        return None

    @staticmethod
    def offered_token(ws: WebSocket) -> str | None:
        auth = ws.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            return auth[7:].strip()
        # Browsers cannot set headers on a WebSocket: they may offer the token as a subprotocol.
        for proto in ws.scope.get("subprotocols", []):
            if proto.startswith(BEARER_PREFIX):
                return proto[len(BEARER_PREFIX):]
        return None


def choose_subprotocol(offered: list[str]) -> str | None:
    """Ours when offered; else the bearer subprotocol that carried the token. A browser that
    offered subprotocols drops a connection whose answer names none, so we must echo one."""
    if SUBPROTOCOL in offered:
        return SUBPROTOCOL
    for proto in offered:
        if proto.startswith(BEARER_PREFIX):
            return proto
    return None


WS_PATHS = ("/ws", "/ws/mcp")  # /ws/mcp: the path older clients use


class ExecutorApp(FastAPI):
    """FastAPI for HTTP; an upgrade on one of our WebSocket paths goes straight to its endpoint.

    Why: FastAPI wraps every request in its middleware stack (error pages, exception handlers,
    body limit, exit stack, telemetry), none of which serves a WebSocket endpoint that answers
    its own errors, and the stack's cost lands on every `echo hi`'s connect time. The routes are
    still registered, so the app behaves the same when mounted or served some other way.
    """

    ws_endpoint: Any = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "websocket" and scope["path"] in WS_PATHS and self.ws_endpoint:
            scope["app"] = self
            await self.ws_endpoint(WebSocket(scope, receive, send))
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = ExecutorApp(title="cc_executor", version=__version__, lifespan=lifespan)
    app.state.service = service

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse(service.health())

    async def endpoint(websocket: WebSocket) -> None:
        refused = service.refuse_reason(websocket)
        if refused is not None:
            status, message = refused
            service.observe.refused(status, message, websocket.client, websocket.scope["path"])
            await websocket.send_denial_response(
                JSONResponse({"error": message}, status_code=status))
            return
        offered = websocket.scope.get("subprotocols", [])
        await websocket.accept(subprotocol=choose_subprotocol(offered))
        await serve_connection(service, websocket)

    # Plain Starlette routes, not FastAPI's: those run dependency injection on every upgrade.
    for path in WS_PATHS:
        app.router.routes.append(WebSocketRoute(path, endpoint))
    app.ws_endpoint = endpoint
    install_metrics_route(app, service)
    dashboard.install(app, service, choose_subprotocol)
    return app


async def serve_connection(service: Service, websocket: WebSocket) -> None:
    conn = Connection(websocket)
    service.connections.add(conn)
    s = service.settings
    outbox = Outbox()  # replies leave in order without holding up the reading of frames
    clean = False
    try:
        await conn.send(service.connected(conn.id))
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                # A close the client chose (1000) ends its jobs, resumable or not; any other
                # end (a drop: 1006, a timeout...) lets resumable jobs wait for an `attach`.
                clean = message.get("code") == 1000
                break
            frame = message.get("text")
            if frame is None:
                frame = message.get("bytes") or b""
            await handle_frame(service, conn, frame, outbox.put)
    except (WebSocketDisconnect, ConnectionError, RuntimeError):
        pass
    finally:
        conn.open = False
        service.connections.discard(conn)
        if service.jobs is not None:
            await service.jobs.end_owner(conn, detach=not clean)
        await outbox.close(timeout=s.kill_grace + 1.0)


Answer = tuple[str | None, Callable[[], Awaitable[None]] | None]
"""What one request leaves to do: the response text (None for a notification), and what to
run once that response is out (a started job's announcement)."""


async def handle_frame(service: Service, conn: Connection, frame: str | bytes,
                       post: Callable[..., Awaitable[None]]) -> None:
    """Decode one frame and carry it out now; hand its reply to `post` (the connection's
    outbox), which sends it in order. Never raises: a bad frame gets an error, nothing more.

    Carrying out never waits for a send: a control acts when its frame is decoded, whatever
    the output backlog (the reply may wait; the action does not). A batch is answered with one
    array of the responses of its calls, sent before anything that follows from them (a
    started job's `process.started`), as a single request's is."""
    parsed = protocol.decode_frame(frame, service.settings.max_frame, service.settings.max_batch)
    if isinstance(parsed, protocol.Batch):
        answers = [await answer(service, conn, item) for item in parsed.items]
        reply = protocol.batch_json(text for text, _ in answers if text is not None)
        afters = [after for _, after in answers if after is not None]
    else:
        reply, after = await answer(service, conn, parsed)
        afters = [after] if after is not None else []
    if reply is not None or afters:
        # Inline when none of the connection's jobs streams yet: nothing of ours can be
        # backed up in front of this reply, so sending it here never holds the frame loop.
        streaming = service.jobs is not None and any(
            j.announced for j in service.jobs.owner_jobs(conn))
        await post(lambda: _send_then(conn, reply, afters), inline=not streaming)


async def _send_then(conn: Connection, text: str | None,
                     afters: list[Callable[[], Awaitable[None]]]) -> None:
    try:
        if text is not None:
            await conn.send(text)
    except Exception as e:  # the client left: the frame loop sees it and ends the connection
        log.debug("reply not sent: %s", e)
    finally:
        # Also when the reply could not be written (the client left): each `after` releases a
        # spawned job's pump, which ends the job and gives its slot back; one that fails must
        # not keep the next from running.
        for after in afters:
            try:
                await after()
            except Exception:  # a bug of ours: the connection and the other jobs go on
                log.exception("after a reply")


async def answer(service: Service, conn: Connection,
                 item: protocol.Request | protocol.ErrorReply) -> Answer:
    """Carry out one decoded request: its response text (None when nothing may be sent) and
    what to run after that response is out."""
    if isinstance(item, protocol.ErrorReply):
        return (item.to_json() if item.should_send else None), None
    req = item
    try:
        result, after = await dispatch(service, conn, req)
    except protocol.RpcError as e:
        return req.error_from(e).to_json() if not req.notification else None, None
    except Exception as e:  # a bug of ours must not take the connection down
        log.exception("internal error handling %s", req.method)
        error = req.error(protocol.INTERNAL_ERROR, f"internal error: {type(e).__name__}")
        return (None if req.notification else error.to_json()), None
    return req.reply(result), after


async def dispatch(service: Service, conn: Connection, req: protocol.Request):
    jobs = service.jobs
    if req.method == "execute":
        job = jobs.submit(conn, req.params, conn.send)
        return jobs.result_of(job), (lambda: jobs.begin(job))
    if req.method == "control":
        return await jobs.control(conn, req.params.job_id, req.params.type)
    if req.method == "jobs":
        rows = [j.describe(jobs.position(j) if j.state == "queued" else 0)
                for j in jobs.owner_jobs(conn)]
        return protocol.JobsResult(jobs=rows), None
    if req.method == "attach":
        return jobs.attach(conn, req.params)
    if req.method == "ping":
        return protocol.PingResult(time=time.time()), None
    raise protocol.RpcError(protocol.METHOD_NOT_FOUND, f"method not found: {req.method}")


__all__ = ["create_app", "Service", "SUBPROTOCOL", "BEARER_PREFIX"]

