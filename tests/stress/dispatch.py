"""Spread one run's tests over several executor services, by capacity, surviving lost servers.

Why per-server queues with stealing instead of one shared queue: a shared queue balances well but
gives no say over *where* long tests go. Here tests are dealt out up front, longest expected
duration first, each to the server whose share of the work (assigned seconds / weight) would stay
smallest; each server then runs its own queue, up to `concurrency` at a time. Estimates are wrong
often (a model answers slowly, a host is loaded), so a server whose queue runs dry steals half of
the pending queue of the server that is furthest behind (pending expected seconds / weight), from
the short end: the pytest-xdist `worksteal` model. `steal=False` keeps the deal as dealt.

Why a lost server does not fail its tests: a server that dies or drops the connection says
nothing about the tests it was running. `run_one` signals the loss by raising `ServerLost` (any
`ConnectionError`/`OSError`, or the client's `ConnectionLost`, counts too); the server is taken out
of rotation, its pending queue is dealt to the live servers, and the test that was running is
re-queued at the front of another live server's queue, within a per-test and a total retry
budget. If no live server is left, every test not yet finished is reported LOST with the reason.
Each test ends in exactly one final state: completed (run_one returned), lost, error (run_one
raised something else: a harness bug, not retried), cancelled (halt `now`/`stop(now=True)` while
running) or not_run (halted before it started).

A lost server stays out unless a `probe` is given: then it is probed every `probe_interval`
seconds (at most `max_probes` times) while the run goes on, and rejoins, stealing work like any
idle server, once the probe answers True. A rejoining server gets only the workers it is missing:
a worker still inside a run_one from before the loss keeps its slot.

Why a refusal is not a loss: a server that answers "command not allowed", "executable not found"
or "unauthorized" is alive but cannot run that test, and it refuses in milliseconds, so left in
rotation it would steal and refuse everything. run_one raises `ServerRefused`; the test moves to
a server that has not refused it (never back), and the refusing server is benched (out for the
rest of the run, no probe) once another server runs what it refused, or at once when the refusal
says `bench`. Why not bench at the first refusal: when no server allows a test's executable, the
test is at fault, not the servers, and benching each in turn would empty the fleet; such a test
ends LOST ("refused by every server...") and the fleet stays. Refusals use no retry budget (a
server refuses a test at most once).

The dispatcher never waits without a bound of its own making except on `run_one`: a run_one that
never returns would hang it, so the harness's run_one must enforce its own limits, or rely on
`hang_grace`: items with a `timeout` still running `timeout + hang_grace` seconds after starting
make the dispatcher ask the `probe` whether their server is alive; a failed probe (or no probe)
counts the server as lost and the item is retried elsewhere, a live answer waits another
`probe_interval`, for at most `overdue_limit` seconds in all (`OVERDUE_LIMIT`): a run_one still
running then, while its server answers, is stuck on the harness's side, so it is cancelled and
the item ends ERROR (not retried; the server stays in). Given a probe, hang detection is on by
default (`HANG_GRACE`); pass `hang_grace=None` to switch it off.
"""

from __future__ import annotations

import asyncio
import collections
import math
import statistics
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import websockets

from cc_executor import aio
from cc_executor.client import (
    ConnectionLost,
    Event,
    ExecutorClient,
    ExecutorError,
    JobHandle,
    JobObserver,
)
from cc_executor.protocol import (
    COMMAND_NOT_ALLOWED,
    SPAWN_FAILED,
    TOO_MANY_JOBS,
    UNAUTHORIZED,
    ErrorReason,
)
from stress.run.flaky import HaltRule, halt_reason
from stress.service.preflight import AccessCheck, access_refusal

T = TypeVar("T")

COMPLETED, LOST, ERROR, CANCELLED, NOT_RUN = "completed", "lost", "error", "cancelled", "not_run"
MIN_EXPECTED = 1e-3
"""Expected seconds never count as less than this when dealing (zero estimates still spread)."""
CANCEL_WAIT = 10.0
"""Seconds to wait for a cancelled run_one to return."""
HANG_GRACE = 30.0
"""With a probe and no `hang_grace` given: seconds past an item's timeout before the dispatcher
probes its server (the harness's own guards fire well before; this is the backstop)."""
OVERDUE_LIMIT = 300.0
"""Seconds past `timeout + hang_grace` an item is waited for while its server answers the probe;
then its run_one is cancelled and the item ends ERROR (a server that answers is not the hang)."""
AUTO: Any = "auto"


class ServerLost(ConnectionError):
    """Raised by run_one: the server died or the connection to it broke; the test did not finish."""

    def __init__(self, server: str, detail: str):
        super().__init__(f"server {server} lost: {detail}")
        self.server = server
        self.detail = detail


class ServerRefused(ServerLost):
    """Raised by run_one: the server refused the test for a reason about itself (command not
    allowed, executable not found, unauthorized). The test goes to a server that has not refused
    it; `bench=True` takes the refusing server out at once (see the module doc)."""

    def __init__(self, server: str, detail: str, *, bench: bool = False):
        ConnectionError.__init__(self, f"server {server} refused: {detail}")
        self.server = server
        self.detail = detail
        self.bench = bench


LOST_EXCEPTIONS: tuple[type[BaseException], ...] = (ServerLost, OSError, ConnectionLost)
"""What counts as "the server is gone" when run_one raises it (OSError covers ConnectionError
and TimeoutError)."""


@dataclass(frozen=True)
class ServerSpec:
    """One executor service. `weight` is its share of the work relative to the others;
    `concurrency` how many tests it runs at once. Identical hosts: weight = concurrency."""

    url: str
    token: str | None = None
    weight: float = 1.0
    concurrency: int = 1
    name: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.startswith(("ws://", "wss://")):
            raise ValueError(f"server URL must start with ws:// or wss://, got {self.url!r}")
        w = self.weight
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w <= 0:
            raise ValueError(f"server weight must be a number > 0, got {w!r} for {self.url}")
        c = self.concurrency
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise ValueError(f"server concurrency must be a whole number >= 1, got {c!r} for {self.url}")
        if not self.name:
            object.__setattr__(self, "name", self.url)

    @classmethod
    def parse(cls, text: str, token: str | None = None) -> ServerSpec:
        """`URL`, `URL@WEIGHT` or `URL@WEIGHT:CONCURRENCY`, e.g. ws://10.0.0.2:8004/ws@2:2."""
        url, weight, conc = text.strip(), 1.0, 1
        head, sep, tail = url.rpartition("@")
        if sep and tail and tail[0].isdigit():
            wtext, _, ctext = tail.partition(":")
            try:
                weight = float(wtext)
                conc = int(ctext) if ctext else 1
            except ValueError:
                raise ValueError(f"bad --server {text!r}: expected URL[@WEIGHT[:CONCURRENCY]], "
                                 "e.g. ws://127.0.0.1:8004/ws@2:2") from None
            url = head
        return cls(url, token, weight, conc)

    def __str__(self) -> str:
        return f"{self.name}@{self.weight:g}:{self.concurrency}"


@dataclass(frozen=True)
class TestItem:
    """One unit of work (for the harness: one attempt of one test). `expected` orders and deals
    it (history median, else the timeout); `payload` is whatever run_one needs."""

    __test__ = False  # not a pytest class

    key: str
    expected: float
    timeout: float | None = None
    payload: Any = field(default=None, compare=False)


def expected_duration(test_id: str, timeout: float | None, medians: Mapping[str, float],
                      default: float = 60.0) -> float:
    """History median when known, else the timeout as a proxy, else `default`."""
    if test_id in medians:
        return float(medians[test_id])
    return float(timeout) if timeout is not None else default


@dataclass
class Dispatched(Generic[T]):
    """The final state of one item."""

    item: TestItem
    state: str
    value: T | None = None
    server: str | None = None
    """Where it completed (or, lost/cancelled, where it last ran)."""
    tries: list[str] = field(default_factory=list)
    """Every server it started on, in order (more than one after a retry)."""
    reason: str = ""
    started: float | None = None
    ended: float | None = None
    """Seconds since the dispatch began, of the final try."""

    def to_json(self) -> dict[str, Any]:
        return {"key": self.item.key, "state": self.state, "server": self.server,
                "tries": list(self.tries), "reason": self.reason,
                "started": _r(self.started), "ended": _r(self.ended)}


@dataclass
class ServerStats:
    name: str
    url: str
    weight: float
    concurrency: int
    dealt: int = 0
    tests_run: int = 0
    """Items that completed here."""
    busy: float = 0.0
    """Slot-seconds spent inside run_one."""
    idle: float = 0.0
    """Slot-seconds alive but not running anything."""
    steals_in: int = 0
    steals_out: int = 0
    """Items taken from / by other servers' queues."""
    retries: int = 0
    """Items re-queued here after their server was lost."""
    lost_items: int = 0
    """Items that were running here when it was lost."""
    completion: float | None = None
    """Seconds from the start to this server's last completed item."""
    alive: bool = True
    lost_reason: str | None = None
    lost_at: float | None = None
    rejoins: int = 0
    refused: int = 0
    """Items it refused (ServerRefused); each moved to another server."""
    benched: bool = False
    """Out for the rest of the run because it refuses work others run (never probed back)."""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url, "weight": self.weight,
                "concurrency": self.concurrency, "dealt": self.dealt, "tests_run": self.tests_run,
                "busy": _r(self.busy), "idle": _r(self.idle), "steals_in": self.steals_in,
                "steals_out": self.steals_out, "retries": self.retries,
                "lost_items": self.lost_items, "completion": _r(self.completion),
                "alive": self.alive, "lost_reason": self.lost_reason, "lost_at": _r(self.lost_at),
                "rejoins": self.rejoins, "refused": self.refused, "benched": self.benched}


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def coefficient_of_variation(values: Sequence[float]) -> float | None:
    """pstdev / mean; 0 for one value; None for none (or a zero mean)."""
    if not values:
        return None
    mean = statistics.fmean(values)
    if len(values) == 1:
        return 0.0
    return statistics.pstdev(values) / mean if mean > 0 else None


@dataclass
class DispatchReport(Generic[T]):
    results: list[Dispatched[T]]
    """One per item, in the order the items were given."""
    servers: list[ServerStats]
    makespan: float
    """Seconds from the start to the last item's end."""
    halted: str | None = None
    retries_used: int = 0

    @property
    def fairness(self) -> float | None:
        """Coefficient of variation of per-server completion times (live servers that completed
        something). 0 = every server finished together."""
        return coefficient_of_variation(
            [s.completion for s in self.servers if s.alive and s.completion is not None])

    def by_state(self, state: str) -> list[Dispatched[T]]:
        return [d for d in self.results if d.state == state]

    @property
    def lost(self) -> list[Dispatched[T]]:
        return self.by_state(LOST)

    @property
    def completed(self) -> list[Dispatched[T]]:
        return self.by_state(COMPLETED)

    def to_json(self) -> dict[str, Any]:
        return {"makespan": _r(self.makespan), "fairness_cv": _r(self.fairness),
                "halted": self.halted, "retries_used": self.retries_used,
                "servers": [s.to_json() for s in self.servers],
                "items": [d.to_json() for d in self.results]}


@dataclass(frozen=True)
class DispatchEvent:
    """For progress lines: start, finish, steal, server_lost, requeue, rejoin, halt."""

    kind: str
    server: str | None
    key: str | None
    detail: str
    at: float


def deal(items: Sequence[TestItem], servers: Sequence[ServerSpec]) -> dict[str, list[TestItem]]:
    """Longest first, each to the server whose weighted share would stay smallest (LPT)."""
    load = [0.0] * len(servers)
    out: dict[str, list[TestItem]] = {s.name: [] for s in servers}
    for item in sorted(items, key=lambda i: -i.expected):
        e = max(item.expected, MIN_EXPECTED)
        i = min(range(len(servers)),
                key=lambda k: ((load[k] + e) / servers[k].weight, -servers[k].weight, k))
        load[i] += e
        out[servers[i].name].append(item)
    return out


class _Entry:
    __slots__ = ("item", "tries", "retries", "final", "started", "refused_by")

    def __init__(self, item: TestItem) -> None:
        self.item = item
        self.tries: list[str] = []
        self.retries = 0
        self.final: Dispatched | None = None
        self.started: float | None = None
        self.refused_by: dict[str, str] = {}
        """Server name -> what it said; the item never goes back to these."""


class _Server:
    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self.stats = ServerStats(spec.name, spec.url, spec.weight, spec.concurrency)
        self.queue: collections.deque[_Entry] = collections.deque()
        self.alive = True
        self.alive_since = 0.0
        self.alive_time = 0.0
        self.workers: set[asyncio.Task] = set()
        """Its worker tasks still running (one may outlive a loss inside its run_one)."""

    def pending_share(self) -> float:
        return sum(max(e.item.expected, MIN_EXPECTED) for e in self.queue) / self.spec.weight

    def may_run(self, entry: _Entry) -> bool:
        return self.spec.name not in entry.refused_by


class Dispatcher(Generic[T]):
    """Runs items on servers through `run_one(server, item)`; see the module doc. One `run` per object."""

    def __init__(
        self,
        servers: Sequence[ServerSpec],
        run_one: Callable[[ServerSpec, TestItem], Awaitable[T]],
        *,
        steal: bool = True,
        retry_budget: int | None = None,
        max_retries_per_test: int = 2,
        halt: HaltRule | None = None,
        is_failure: Callable[[T], bool] | None = None,
        probe: Callable[[ServerSpec], Awaitable[bool]] | None = None,
        probe_interval: float = 5.0,
        probe_timeout: float = 10.0,
        max_probes: int = 12,
        hang_grace: float | None = AUTO,
        overdue_limit: float | None = OVERDUE_LIMIT,
        lost_exceptions: tuple[type[BaseException], ...] = LOST_EXCEPTIONS,
        on_event: Callable[[DispatchEvent], None] | None = None,
    ) -> None:
        if not servers:
            raise ValueError("at least one server is needed")
        names = [s.name for s in servers]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"server given twice: {', '.join(sorted(dup))} (give each a different URL or name)")
        if retry_budget is not None and retry_budget < 0:
            raise ValueError(f"retry_budget must be >= 0 or None, got {retry_budget}")
        if max_retries_per_test < 0:
            raise ValueError(f"max_retries_per_test must be >= 0, got {max_retries_per_test}")
        if probe_interval <= 0 or probe_timeout <= 0 or max_probes < 0:
            raise ValueError("probe_interval and probe_timeout must be > 0, max_probes >= 0")
        self._servers = [_Server(s) for s in servers]
        self._run_one = run_one
        self.steal = steal
        self.retry_budget = retry_budget
        self.max_retries_per_test = max_retries_per_test
        self.halt_rule = halt
        self._is_failure = is_failure or (lambda value: False)
        self._probe = probe
        self.probe_interval, self.probe_timeout, self.max_probes = probe_interval, probe_timeout, max_probes
        if hang_grace is AUTO:
            hang_grace = HANG_GRACE if probe is not None else None
        if hang_grace is not None and not hang_grace >= 0:
            raise ValueError(f"hang_grace must be >= 0 or None, got {hang_grace}")
        self.hang_grace = hang_grace
        if overdue_limit is not None and not overdue_limit >= 0:
            raise ValueError(f"overdue_limit must be >= 0 or None, got {overdue_limit}")
        self.overdue_limit = overdue_limit
        self._lost_types = lost_exceptions
        self._on_event = on_event
        self._entries: list[_Entry] = []
        self._open = 0
        self._done = 0
        self._failed = 0
        self._retries_used = 0
        self._halt: str | None = None
        self._halt_now = False
        self._changed = asyncio.Event()
        self._workers: set[asyncio.Task] = set()
        self._probes: set[asyncio.Task] = set()
        self._inflight: dict[asyncio.Task, tuple[_Server, _Entry]] = {}
        self._cancelled_by_us: set[asyncio.Task] = set()
        self._t0 = 0.0
        self._last_end = 0.0
        self._started = False

    # ---- public ------------------------------------------------------------------------------

    @property
    def servers(self) -> list[ServerStats]:
        return [s.stats for s in self._servers]

    def stop(self, reason: str, *, now: bool = False) -> None:
        """Start no more items; with `now`, cancel the running ones too (e.g. on Ctrl-C)."""
        self._begin_halt(reason, now)

    async def run(self, items: Iterable[TestItem]) -> DispatchReport[T]:
        if self._started:
            raise RuntimeError("a Dispatcher runs once; make a new one")
        self._started = True
        items = list(items)
        seen: set[str] = set()
        for it in items:
            if it.key in seen:
                raise ValueError(f"item key {it.key!r} given twice; keys must be unique")
            seen.add(it.key)
            if not (isinstance(it.expected, int | float) and math.isfinite(it.expected) and it.expected >= 0):
                raise ValueError(f"item {it.key!r}: expected duration must be a finite number >= 0, got {it.expected!r}")
        loop = asyncio.get_running_loop()
        self._t0 = loop.time()
        self._entries = [_Entry(it) for it in items]
        self._open = len(self._entries)
        by_key = {e.item.key: e for e in self._entries}
        for srv in self._servers:
            srv.alive_since = 0.0
        for name, dealt in deal(items, [s.spec for s in self._servers]).items():
            srv = self._server(name)
            srv.queue.extend(by_key[it.key] for it in dealt)
            srv.stats.dealt = len(dealt)
        if self._halt is None and self._open:  # stop() before run(): nothing starts
            for srv in self._servers:
                self._start_workers(srv)
        try:
            while self._workers:
                done, _ = await asyncio.wait(set(self._workers), return_when=asyncio.FIRST_COMPLETED)
                self._workers -= done
                for t in done:
                    if not t.cancelled() and t.exception() is not None:
                        raise t.exception()  # a bug in the dispatcher itself: surface it
        finally:
            for t in list(self._workers) + list(self._probes):
                t.cancel()
            await asyncio.gather(*self._workers, *self._probes, return_exceptions=True)
            self._probes.clear()
        why = self._halt or "not run"
        for e in self._entries:
            if e.final is None:
                self._finalize(e, NOT_RUN, reason=f"not run: {why}")
        end = self._now()
        makespan = max(self._last_end, 0.0) if self._entries else 0.0
        for srv in self._servers:
            if srv.alive:
                srv.alive_time += end - srv.alive_since
            srv.stats.idle = max(0.0, srv.alive_time * srv.spec.concurrency - srv.stats.busy)
        return DispatchReport([e.final for e in self._entries], self.servers,  # type: ignore[misc]
                              makespan, self._halt, self._retries_used)

    # ---- internals ---------------------------------------------------------------------------

    def _now(self) -> float:
        return asyncio.get_running_loop().time() - self._t0

    def _emit(self, kind: str, server: str | None, key: str | None, detail: str = "") -> None:
        if self._on_event is not None:
            self._on_event(DispatchEvent(kind, server, key, detail, self._now()))

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _server(self, name: str) -> _Server:
        return next(s for s in self._servers if s.spec.name == name)

    def _live(self) -> list[_Server]:
        return [s for s in self._servers if s.alive]

    def _start_workers(self, srv: _Server) -> None:
        """Up to `concurrency` workers: after a rejoin, a worker still inside an old run_one
        holds its slot (else the server would run more than `concurrency` at once)."""
        for _ in range(srv.spec.concurrency - len(srv.workers)):
            task = asyncio.ensure_future(self._worker(srv))
            srv.workers.add(task)
            task.add_done_callback(srv.workers.discard)
            self._workers.add(task)

    def _victim(self, thief: _Server) -> _Server | None:
        cands = [s for s in self._servers if s is not thief and s.alive
                 and any(thief.may_run(e) for e in s.queue)]
        return max(cands, key=lambda s: s.pending_share(), default=None)

    def _take(self, srv: _Server) -> _Entry | None:
        for i, e in enumerate(srv.queue):
            if srv.may_run(e):
                del srv.queue[i]
                return e
        if not self.steal:
            return None
        victim = self._victim(srv)
        if victim is None:
            return None
        mine = [e for e in victim.queue if srv.may_run(e)]
        n = max(1, len(mine) // 2)
        stolen = mine[-n:]  # the short end
        for e in stolen:
            victim.queue.remove(e)
        srv.queue.extend(stolen[1:])
        srv.stats.steals_in += n
        victim.stats.steals_out += n
        self._emit("steal", srv.spec.name, None, f"{n} from {victim.spec.name}")
        return stolen[0]

    async def _worker(self, srv: _Server) -> None:
        while srv.alive and self._halt is None and self._open > 0:
            entry = self._take(srv)
            if entry is None:
                await self._changed.wait()
                continue
            await self._run_entry(srv, entry)

    async def _run_entry(self, srv: _Server, entry: _Entry) -> None:
        item, name = entry.item, srv.spec.name
        entry.tries.append(name)
        entry.started = t0 = self._now()
        self._emit("start", name, item.key)
        task = asyncio.ensure_future(self._run_one(srv.spec, item))
        self._inflight[task] = (srv, entry)
        lost: BaseException | None = None
        stuck: str | None = None
        try:
            limit = None
            if self.hang_grace is not None and item.timeout is not None:
                limit = item.timeout + self.hang_grace
            done, _ = await asyncio.wait({task}, timeout=limit)
            while not done:
                # Past the limit: hung, or only slow? A server that answers its probe is slow.
                answered = self._probe is not None and await self._probe_once(srv.spec)
                if task.done():
                    break
                if answered:
                    assert limit is not None
                    left = (None if self.overdue_limit is None
                            else t0 + limit + self.overdue_limit - self._now())
                    if left is None or left > 0:
                        wait = self.probe_interval if left is None else min(self.probe_interval, left)
                        done, _ = await asyncio.wait({task}, timeout=wait)
                        continue
                    # Slow for this long while its server answers: stuck here, not there.
                    self._cancelled_by_us.discard(task)
                    task.cancel()
                    await asyncio.wait({task}, timeout=CANCEL_WAIT)
                    stuck = (f"run_one for {item.key} still running {self._now() - t0:.3g} s after "
                             f"it started (timeout {item.timeout:g} s + grace {self.hang_grace:g} s "
                             f"+ overdue limit {self.overdue_limit:g} s) although {name} answered "
                             f"its probe: stuck in the harness, cancelled")
                    if not task.done():
                        stuck += f" (and it did not return within {CANCEL_WAIT:g} s of that)"
                    break
                self._cancelled_by_us.discard(task)
                task.cancel()
                await asyncio.wait({task}, timeout=CANCEL_WAIT)
                lost = ServerLost(name, f"no answer for {item.key} within {limit:g} s "
                                        f"(timeout {item.timeout:g} s + grace {self.hang_grace:g} s)"
                                        + (" and its probe failed" if self._probe is not None else ""))
                break
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            self._inflight.pop(task, None)
            srv.stats.busy += self._now() - t0
        if stuck is not None:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: it is reported as stuck, whatever it raised
            self._finalize(entry, ERROR, server=name, reason=stuck)
            return
        if lost is None and task.done():
            if task.cancelled():
                if task in self._cancelled_by_us:
                    self._finalize(entry, CANCELLED, server=name, reason=f"cancelled: {self._halt}")
                else:
                    self._finalize(entry, ERROR, server=name, reason="run_one was cancelled")
                return
            exc = task.exception()
            if exc is None:
                if task in self._cancelled_by_us:
                    self._finalize(entry, CANCELLED, task.result(), name, f"cancelled: {self._halt}")
                else:
                    self._finalize(entry, COMPLETED, task.result(), name)
                return
            if isinstance(exc, ServerRefused):
                self._on_refused(srv, entry, exc)
                return
            if isinstance(exc, self._lost_types):
                lost = exc
            else:
                self._finalize(entry, ERROR, server=name,
                               reason=f"run_one raised {type(exc).__name__}: {exc}")
                return
        if lost is not None:
            self._on_lost(srv, entry, lost)

    def _on_lost(self, srv: _Server, entry: _Entry, exc: BaseException) -> None:
        name = srv.spec.name
        detail = exc.detail if isinstance(exc, ServerLost) else f"{type(exc).__name__}: {exc}"
        srv.stats.lost_items += 1
        if srv.alive:
            self._mark_dead(srv, detail)
        self._requeue(entry, f"server {name} lost ({detail})")

    def _mark_dead(self, srv: _Server, detail: str, *, bench: bool = False) -> None:
        now = self._now()
        srv.alive = False
        srv.alive_time += now - srv.alive_since
        srv.stats.alive = False
        srv.stats.lost_reason = detail
        srv.stats.lost_at = now
        srv.stats.benched = bench
        self._emit("server_lost", srv.spec.name, None, detail)
        pending = list(srv.queue)
        srv.queue.clear()
        live = self._live()
        for e in pending:
            if not live:
                self._finalize(e, LOST, reason=f"no live server left (last lost: {srv.spec.name}: {detail})")
            elif self._place(e, live, front=False) is None:
                self._finalize(e, LOST, reason=self._refused_reason(e))
        if not live:
            for t in self._probes:
                t.cancel()
        elif not bench and self._probe is not None and self.max_probes and self._halt is None:
            self._probes.add(asyncio.ensure_future(self._probe_loop(srv)))
        self._notify()

    def _place(self, entry: _Entry, live: list[_Server], *, front: bool) -> _Server | None:
        """Queue `entry` on the least loaded live server that has not refused it (preferring
        one it has not tried); None when every live server refused it."""
        able = [s for s in live if s.may_run(entry)]
        if not able:
            return None
        fresh = [s for s in able if s.spec.name not in entry.tries] or able
        e = max(entry.item.expected, MIN_EXPECTED)
        target = min(fresh, key=lambda s: (s.pending_share() + e / s.spec.weight, -s.spec.weight))
        if front:
            target.queue.appendleft(entry)
        else:
            target.queue.append(entry)
        return target

    @staticmethod
    def _refused_reason(entry: _Entry) -> str:
        said = "; ".join(f"{n}: {d}" for n, d in entry.refused_by.items())
        return f"refused by every live server it was offered to ({said})"

    def _on_refused(self, srv: _Server, entry: _Entry, exc: ServerRefused) -> None:
        name = srv.spec.name
        entry.refused_by[name] = exc.detail
        srv.stats.refused += 1
        if exc.bench and srv.alive:
            self._mark_dead(srv, f"benched: {exc.detail}", bench=True)
        last = entry.tries[-1] if entry.tries else None
        if self._halt is not None:
            self._finalize(entry, LOST, server=last,
                           reason=f"server {name} refused it ({exc.detail}); not retried: {self._halt}")
            return
        target = self._place(entry, self._live(), front=True)
        if target is None:
            self._finalize(entry, LOST, server=last, reason=self._refused_reason(entry))
            return
        self._emit("requeue", target.spec.name, entry.item.key, f"server {name} refused it ({exc.detail})")
        self._notify()

    def _bench_refusers(self, entry: _Entry, ran_on: str) -> None:
        """`entry` ran on `ran_on` after others refused it: those refusals were about the
        servers, so they sit out the rest of the run."""
        for name, detail in entry.refused_by.items():
            srv = self._server(name)
            if srv.alive:
                self._mark_dead(srv, f"benched: refused {entry.item.key} ({detail}), which "
                                     f"{ran_on} ran", bench=True)

    def _requeue(self, entry: _Entry, why: str) -> None:
        entry.retries += 1
        live = [s for s in self._live() if s.may_run(entry)]
        last = entry.tries[-1] if entry.tries else None
        if self._halt is not None:
            self._finalize(entry, LOST, server=last, reason=f"{why}; not retried: {self._halt}")
        elif entry.retries > self.max_retries_per_test:
            self._finalize(entry, LOST, server=last, reason=f"{why}; retried {entry.retries - 1} "
                           f"time(s), the per-test limit is {self.max_retries_per_test}")
        elif self.retry_budget is not None and self._retries_used >= self.retry_budget:
            self._finalize(entry, LOST, server=last,
                           reason=f"{why}; the run's retry budget of {self.retry_budget} is spent")
        elif not live:
            left = "no live server left" if not entry.refused_by else \
                "no live server left that has not refused it"
            self._finalize(entry, LOST, server=last, reason=f"{why}; {left}")
        else:
            self._retries_used += 1
            target = self._place(entry, live, front=True)
            assert target is not None
            target.stats.retries += 1
            self._emit("requeue", target.spec.name, entry.item.key, why)
            self._notify()

    async def _probe_once(self, spec: ServerSpec) -> bool:
        assert self._probe is not None
        try:
            return bool(await aio.wait_for(self._probe(spec), self.probe_timeout))
        except Exception:  # noqa: BLE001 - a failing probe is a "no"
            return False

    async def _probe_loop(self, srv: _Server) -> None:
        assert self._probe is not None
        for _ in range(self.max_probes):
            await asyncio.sleep(self.probe_interval)
            if self._open == 0 or self._halt is not None or not self._live():
                return
            ok = await self._probe_once(srv.spec)
            if ok and self._open > 0 and self._halt is None and self._live():
                srv.alive = True
                srv.alive_since = self._now()
                srv.stats.alive = True
                srv.stats.rejoins += 1
                self._emit("rejoin", srv.spec.name, None, "probe answered")
                self._start_workers(srv)
                self._notify()
                return

    def _finalize(self, entry: _Entry, state: str, value: Any = None, server: str | None = None,
                  reason: str = "") -> None:
        assert entry.final is None, f"{entry.item.key} finalized twice"
        now = self._now()
        entry.final = Dispatched(entry.item, state, value, server, list(entry.tries), reason,
                                 entry.started, now if entry.started is not None else None)
        self._open -= 1
        if entry.started is not None:
            self._last_end = max(self._last_end, now)
        if state == COMPLETED and server is not None:
            st = self._server(server).stats
            st.tests_run += 1
            st.completion = now
            if entry.refused_by:
                self._bench_refusers(entry, server)
        self._emit("finish", server, entry.item.key, state if not reason else f"{state}: {reason}")
        if state in (COMPLETED, LOST, ERROR):
            self._done += 1
            if state != COMPLETED or self._is_failure(value):
                self._failed += 1
            rule = self.halt_rule
            if rule is not None and self._halt is None:
                when = rule.should_halt(self._done, self._failed, len(self._entries))
                if when is not None:
                    self._begin_halt(halt_reason(rule, self._done, self._failed), when == "now")
        self._notify()

    def _begin_halt(self, reason: str, now: bool) -> None:
        if self._halt is None:
            self._halt = reason
            self._emit("halt", None, None, reason)
        if now and not self._halt_now:
            self._halt_now = True
            for task in list(self._inflight):
                self._cancelled_by_us.add(task)
                task.cancel()
        self._notify()


# ---------------------------------------------------------------------------------------------
# Connections for run_one

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
HANG_QUIET = 6.0
"""Seconds a connection with a job in flight may stay silent before the pool asks /health (a
live service sends a `progress` keepalive after 5 s of a job's silence, so it is not asked)."""
HEALTH_TIMEOUT = 2.0
HEALTH_TRIES = 2
"""A hung server is one whose /health did not answer HEALTH_TRIES times in a row, each within
HEALTH_TIMEOUT seconds (at most 4 s: it must fit in the runner's 5 s CANCEL wait)."""
WATCH_TICK = 0.25


class ServerFault(ConnectionLost):
    """Raised by the pool's client in place of a reply or an event that shows the *server* is at
    fault, so the runner takes its lost-connection path. `kind`: "shutdown" and "hung" come out
    of the block as ServerLost, "refused" as ServerRefused."""

    def __init__(self, kind: str, detail: str, *, bench: bool = False) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.bench = bench


def server_fault(error: ExecutorError) -> ServerFault | None:
    """An execute refusal that is about the server, not the test: shutting down (lost), or a
    command not allowed / executable not found / unauthorized (refused). Else None. Decided by
    the error's code and `data.reason`, never its wording."""
    code, reason = error.code, error.reason
    what = f"the service refused the job: {error.message}"
    if code == TOO_MANY_JOBS and reason == ErrorReason.SHUTTING_DOWN:
        return ServerFault("shutdown", what)
    if code == COMMAND_NOT_ALLOWED or (code == SPAWN_FAILED and reason == ErrorReason.EXECUTABLE_NOT_FOUND):
        return ServerFault("refused", what)
    if code == UNAUTHORIZED:
        return ServerFault("refused", what, bench=True)
    return None


async def health_ok(spec: ServerSpec, timeout: float = HEALTH_TIMEOUT) -> bool:
    """Whether the server's /health answers 200 with status ok within `timeout`. A server that
    cannot be asked over plain HTTP (wss://) counts as answering: no evidence, no verdict."""
    from stress.service.managed import ServiceError, fetch_json, health_url

    try:
        status, body = await fetch_json(health_url(spec.url), timeout=timeout)
    except ServiceError:
        return True
    except (OSError, asyncio.TimeoutError, ValueError, IndexError):
        return False
    return status == 200 and isinstance(body, dict) and body.get("status") == "ok"


def is_loopback(url: str) -> bool:
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    return host in LOOPBACK_HOSTS or host.startswith("127.")


class _Activity:
    """Something in flight on a connection: an execute request, or a job until its completion."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.ended = False


class _Watch:
    """What one `pool.client(spec)` block saw: the first server-level fault, what is in flight."""

    def __init__(self, pool: ClientPool, spec: ServerSpec, client: _WatchedClient) -> None:
        self.pool, self.spec, self.client = pool, spec, client
        self.fault: ServerFault | None = None
        self.activity: list[_Activity] = []
        self.answered = time.monotonic()
        self.local = is_loopback(spec.url)
        self.ended: list[str] = []
        """Processes of lost jobs this block ended ("pid: cmdline")."""

    def note(self, fault: ServerFault) -> ServerFault:
        if self.fault is None:
            self.fault = fault
        return fault

    async def alive(self) -> bool:
        for _ in range(self.pool.health_tries):
            try:
                ok = await aio.wait_for(self.pool.health(self.spec), self.pool.health_timeout + 1)
            except Exception:  # noqa: BLE001 - a failing check is a "no"
                ok = False
            if ok:
                self.answered = time.monotonic()
                return True
        return False

    def hung(self, detail: str) -> None:
        """Record the fault and drop the connection: every wait on it ends now (ConnectionLost)."""
        self.note(ServerFault("hung", detail))
        self.client.abort()

    async def end_job(self, tag: str | None) -> None:
        """A job this block gave up on (connection lost, server hung): on this host, end its
        tagged processes now, before the dispatcher retries it elsewhere (a SIGKILLed or stopped
        service leaves its job trees running, and a retry must not run beside them)."""
        if not tag or not self.local:
            return
        from stress.run.leftovers import end_leftovers

        self.ended += await asyncio.to_thread(end_leftovers, tag, 0.0)

    async def watchdog(self, quiet_limit: float) -> None:
        """Ask /health when a job in flight has been silent for `quiet_limit` s; no answer = hung."""
        while self.fault is None:
            await asyncio.sleep(WATCH_TICK)
            busy = [a for a in self.activity if not a.ended]
            if not busy:
                continue
            quiet = time.monotonic() - max(max(a.last for a in busy), self.answered)
            if quiet < quiet_limit:
                continue
            if not await self.alive() and self.fault is None and any(not a.ended for a in busy):
                self.hung(f"hung: nothing from the server for {quiet:.0f} s while running a job, "
                          f"and its /health did not answer ({self.pool.health_tries} tries of "
                          f"{self.pool.health_timeout:g} s)")


class _JobWatch(JobObserver):
    """Hooks on a pool job that report to the block's _Watch: its events mark activity (and a
    completion by the service's shutdown is a server fault), a lost job's processes are ended,
    and a CANCEL to a server that no longer answers /health drops the connection instead."""

    def __init__(self, watch: _Watch, tag: str | None) -> None:
        self.watch, self.tag, self.activity = watch, tag, _Activity()
        watch.activity.append(self.activity)

    async def on_event(self, job: JobHandle, ev: Event) -> None:
        self.activity.last = time.monotonic()
        if ev.kind == "completed":
            self.activity.ended = True
            if ev.params.get("reason") == "shutdown":
                why = ev.params.get("error") or ev.params.get("message") or "shutdown"
                raise self.watch.note(ServerFault(
                    "shutdown", f"the service shut down and ended the job ({why})"))

    async def on_lost(self, job: JobHandle, error: ConnectionLost) -> None:
        self.activity.ended = True
        if not (isinstance(error, ServerFault) and error.kind == "shutdown"):
            await self.watch.end_job(self.tag)

    async def before_control(self, job: JobHandle, kind: str) -> None:
        """The runner gives up on the job (its guard fired, or a halt). If the server does not
        answer /health either, it is hung: drop the connection instead of waiting on a CANCEL
        it will never answer; the block then ends as a lost server and the test is retried."""
        watch = self.watch
        if kind != "CANCEL" or self.activity.ended or watch.fault is not None:
            return
        if not await watch.alive():
            watch.hung("hung: the job went past its limits without a completion, and the "
                       f"server's /health did not answer ({watch.pool.health_tries} tries of "
                       f"{watch.pool.health_timeout:g} s)")
            raise ConnectionLost(watch.fault.detail if watch.fault else "hung")


class _WatchedClient(ExecutorClient):
    """The pool's client: execute refusals about the server become ServerFault, and jobs are
    watched (see _JobWatch). Outside a pool block it behaves as ExecutorClient."""

    watch: _Watch | None = None

    async def start(self, command: str | None = None, **kwargs: Any) -> JobHandle:
        watch = self.watch
        if watch is None:
            return await super().start(command, **kwargs)
        from stress.run.leftovers import JOB_TAG_VAR

        env = kwargs.get("env")
        tag = env.get(JOB_TAG_VAR) if isinstance(env, Mapping) else None
        pending = _Activity()
        watch.activity.append(pending)
        try:
            job = await super().start(command, observer=_JobWatch(watch, tag), **kwargs)
        except ServerFault:
            raise
        except ConnectionLost:
            await watch.end_job(tag)  # the request may have started it before the line broke
            raise
        except ExecutorError as e:
            fault = server_fault(e)
            if fault is None:
                raise
            raise watch.note(fault) from e
        finally:
            pending.ended = True
        return job


class ClientPool:
    """Open client connections per server, reused by the next item on that server.

    `async with pool.client(spec) as client:` connects (or reuses an idle connection). A failed
    connect, or the client's ConnectionLost inside the block, comes out as ServerLost, which is
    what the Dispatcher retries elsewhere. Close the pool when the run ends.

    The client also tells server faults from test results, whatever run_one makes of them:
    - a job ended by the service's shutdown, or refused with -32003 reason `shutting_down`: the
      server is going away (ServerLost), not the test failing;
    - "command not allowed", "executable not found", a 401/403 handshake: the server cannot run
      it (ServerRefused: the test goes elsewhere, the server is benched);
    - hung: a job in flight and `hang_quiet` s of silence, or the runner giving up on a job
      (its guard fired), and /health does not answer either: the connection is dropped and the
      block ends as ServerLost.
    A job given up on this way whose server is on this host (loopback) has its tagged processes
    (runner.JOB_TAG_VAR) ended at once, before the retry can start.
    """

    def __init__(self, *, open_timeout: float = 10.0, hang_quiet: float | None = HANG_QUIET,
                 health: Callable[[ServerSpec], Awaitable[bool]] | None = None,
                 health_timeout: float = HEALTH_TIMEOUT, health_tries: int = HEALTH_TRIES) -> None:
        self.open_timeout = open_timeout
        self.hang_quiet = hang_quiet
        self.health_timeout = health_timeout
        self.health_tries = max(1, health_tries)
        self.health = health or (lambda spec: health_ok(spec, health_timeout))
        self._idle: dict[str, list[ExecutorClient]] = collections.defaultdict(list)

    async def _connect(self, spec: ServerSpec) -> _WatchedClient:
        try:
            return await aio.wait_for(
                _WatchedClient.connect(spec.url, spec.token, open_timeout=self.open_timeout,
                                       ping_timeout=None),
                self.open_timeout + 5)
        except websockets.InvalidStatus as e:
            check = AccessCheck.of_refusal(spec.url, e)  # the preflight's classification
            if check.token_refused:
                raise ServerRefused(spec.name, f"unauthorized: {access_refusal(check)}", bench=True) from e
            raise ServerLost(spec.name, f"cannot connect: {type(e).__name__}: {e}") from e
        except (OSError, ConnectionLost, websockets.InvalidHandshake, websockets.InvalidURI,
                websockets.ConnectionClosed) as e:
            raise ServerLost(spec.name, f"cannot connect: {type(e).__name__}: {e}") from e

    @asynccontextmanager
    async def client(self, spec: ServerSpec) -> AsyncIterator[ExecutorClient]:
        idle = self._idle[spec.name]
        client: ExecutorClient | None = None
        while idle and client is None:
            c = idle.pop()
            if c.is_open:
                client = c
            else:
                await _close(c)
        if client is None:
            client = await self._connect(spec)
        watch = _Watch(self, spec, client)  # type: ignore[arg-type]
        client.watch = watch  # type: ignore[attr-defined]
        dog = (asyncio.ensure_future(watch.watchdog(self.hang_quiet))
               if self.hang_quiet is not None else None)
        reusable = False
        try:
            try:
                yield client
            except (ServerLost, ConnectionLost) as e:
                if watch.fault is None and isinstance(e, ServerLost):
                    raise
                raise _as_lost(spec, watch.fault, e) from e
            if watch.fault is not None:  # run_one made a result of it: still the server's fault
                raise _as_lost(spec, watch.fault, None)
            reusable = True
        finally:
            client.watch = None  # type: ignore[attr-defined]
            if dog is not None:
                dog.cancel()
                await asyncio.gather(dog, return_exceptions=True)
            if reusable and client.is_open:
                idle.append(client)
            else:
                # Unknown state (cancelled, lost, hung server): drop the socket now rather than
                # wait for a closing handshake a stopped server will never answer.
                await _close(client, abort=True)

    async def close(self) -> None:
        clients = [c for cs in self._idle.values() for c in cs]
        self._idle.clear()
        await asyncio.gather(*(_close(c) for c in clients))


def _as_lost(spec: ServerSpec, fault: ServerFault | None, e: BaseException | None) -> ServerLost:
    if fault is None:
        return ServerLost(spec.name, str(e))
    if fault.kind == "refused":
        return ServerRefused(spec.name, fault.detail, bench=fault.bench)
    return ServerLost(spec.name, fault.detail)


# ---- before the run ---------------------------------------------------------------------------


async def server_allows(spec: ServerSpec, *, open_timeout: float = 10.0) -> list[str] | None:
    """The executables a server allows (the `capabilities.allow` of its `connected`
    notification); None when it cannot be asked or does not say."""
    try:
        client = await aio.wait_for(
            ExecutorClient.connect(spec.url, spec.token, open_timeout=open_timeout,
                                   ping_interval=None),
            open_timeout + 5)
    except Exception:  # noqa: BLE001 - unreachable: no verdict here (the run reports it)
        return None
    try:
        allow = (client.session.get("capabilities") or {}).get("allow")
        return [str(a) for a in allow] if isinstance(allow, list) else None
    finally:
        await _close(client)


def unfit_servers(allows: Mapping[str, Sequence[str] | None], needed: Sequence[str]) -> dict[str, str]:
    """Servers to leave out before the run: those that do not allow an executable the plan needs
    while another server allows every needed executable any server allows. Server name -> why.

    Nobody is left out for an executable no server allows (the tests' problem, reported per
    test), nor when no server covers all (the dispatcher then moves refused tests at run time).
    Names compare by basename (a test may give /bin/sh where the allow-list says sh).
    """
    import os.path

    def names(seq: Sequence[str]) -> set[str]:
        return {os.path.basename(x) for x in seq}

    known = {n: names(a) for n, a in allows.items() if a is not None}
    want = names(needed)
    runnable = want & set().union(*known.values()) if known else set()
    full = [n for n, a in known.items() if runnable <= a]
    if not full:
        return {}
    out = {}
    for n, a in known.items():
        missing = sorted(runnable - a)
        if missing:
            has = ", ".join(sorted(allows[n] or ())) or "nothing"
            out[n] = (f"it does not allow {', '.join(missing)} (it allows {has}), which "
                      f"{', '.join(full)} allow{'s' if len(full) == 1 else ''}")
    return out


async def _close(client: ExecutorClient, *, abort: bool = False) -> None:
    try:
        if abort:
            client.abort()
        await aio.wait_for(client.close(), 5)
    except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - closing is best effort
        pass


__all__ = ["CANCELLED", "COMPLETED", "ClientPool", "DispatchEvent", "DispatchReport", "Dispatched",
           "Dispatcher", "ERROR", "HANG_GRACE", "HANG_QUIET", "LOST", "LOST_EXCEPTIONS", "NOT_RUN",
           "ServerFault", "ServerLost", "ServerRefused", "ServerSpec", "ServerStats", "TestItem",
           "coefficient_of_variation", "deal", "expected_duration", "health_ok", "server_allows",
           "server_fault", "unfit_servers"]
