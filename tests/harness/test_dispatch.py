"""Multi-server dispatch (`stress.dispatch`).

Two layers. The dealing/stealing/retry rules are checked first with in-process `run_one`
coroutines: run_one is the Dispatcher's input (the harness supplies it), so a coroutine that sleeps
or raises is the contract itself, and it lets hypothesis try many fleets quickly. Then the real
thing: several `python -m cc_executor` processes on loopback ports, run_one going through the
public client, servers SIGKILLed (with their job trees) or SIGSTOPped mid-run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cc_executor.client import ExecutorClient
from conftest import wait_until
from service_fixture import START_TIMEOUT, ServiceProcess, launch, wait_gone
from stress.dispatch import (CANCELLED, COMPLETED, ERROR, HANG_GRACE, LOST, NOT_RUN, ClientPool,
                             Dispatcher, ServerLost, ServerRefused, ServerSpec, TestItem,
                             coefficient_of_variation, deal, expected_duration, unfit_servers)
from stress.run.flaky import HaltRule


def specs(*weights: float, concurrency: tuple[int, ...] | None = None) -> list[ServerSpec]:
    conc = concurrency or (1,) * len(weights)
    return [ServerSpec(f"ws://127.0.0.1:{9000 + i}/ws", None, w, c, name=f"s{i}")
            for i, (w, c) in enumerate(zip(weights, conc))]


def items(n: int, expected: float = 1.0) -> list[TestItem]:
    return [TestItem(f"t{i:02d}", expected) for i in range(n)]


def run(coro, timeout: float = 30.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


# ---- values and the deal ----------------------------------------------------------------------


def test_server_specs_parse_weight_and_concurrency_and_refuse_bad_ones():
    s = ServerSpec.parse("ws://127.0.0.1:8004/ws@2:3", token="t")
    assert (s.url, s.weight, s.concurrency, s.token, s.name) == \
        ("ws://127.0.0.1:8004/ws", 2.0, 3, "t", "ws://127.0.0.1:8004/ws")
    assert ServerSpec.parse("ws://h:1/ws").weight == 1.0
    assert ServerSpec.parse("ws://user@h:1/ws").url == "ws://user@h:1/ws"  # userinfo, no weight
    with pytest.raises(ValueError, match="URL\\[@WEIGHT\\[:CONCURRENCY\\]\\]"):
        ServerSpec.parse("ws://h:1/ws@2:x")
    with pytest.raises(ValueError, match="weight must be a number > 0, got 0"):
        ServerSpec.parse("ws://h:1/ws@0")
    with pytest.raises(ValueError, match="must start with ws://"):
        ServerSpec.parse("http://h:1/ws")
    with pytest.raises(ValueError, match="concurrency must be a whole number >= 1"):
        ServerSpec("ws://h:1/ws", concurrency=0)
    with pytest.raises(ValueError, match="server given twice"):
        Dispatcher([ServerSpec("ws://h:1/ws"), ServerSpec("ws://h:1/ws")], lambda s, i: None)


def test_the_deal_follows_weights_and_puts_the_longest_first():
    dealt = deal(items(12), specs(1, 2, 3))
    assert [len(v) for v in dealt.values()] == [2, 4, 6]
    mixed = [TestItem("short", 1), TestItem("long", 9), TestItem("mid", 5), TestItem("mid2", 4)]
    dealt = deal(mixed, specs(1, 1))
    assert [i.key for i in dealt["s0"]] == ["long", "short"]  # 9 + 1 against 5 + 4
    assert [i.key for i in dealt["s1"]] == ["mid", "mid2"]
    zero = deal(items(6, expected=0.0), specs(1, 2))  # no estimates at all still spread by weight
    assert [len(v) for v in zero.values()] == [2, 4]


def test_expected_duration_prefers_history_then_the_timeout():
    assert expected_duration("a", 30.0, {"a": 2.5}) == 2.5
    assert expected_duration("b", 30.0, {"a": 2.5}) == 30.0
    assert expected_duration("b", None, {}, default=7.0) == 7.0


def test_coefficient_of_variation():
    assert coefficient_of_variation([]) is None and coefficient_of_variation([3.0]) == 0.0
    assert coefficient_of_variation([1.0, 1.0, 1.0]) == 0.0
    assert coefficient_of_variation([1.0, 3.0]) == pytest.approx(0.5)


def test_bad_items_are_refused_by_key():
    d = Dispatcher(specs(1), lambda s, i: asyncio.sleep(0))
    with pytest.raises(ValueError, match="'t00' given twice"):
        run(d.run([TestItem("t00", 1), TestItem("t00", 2)]))
    with pytest.raises(ValueError, match="item 'x': expected duration must be a finite number >= 0"):
        run(Dispatcher(specs(1), lambda s, i: asyncio.sleep(0)).run([TestItem("x", float("nan"))]))


# ---- the rules, with in-process run_one ------------------------------------------------------------


def test_an_idle_server_steals_half_of_the_busiest_queue():
    durations = {f"t{i:02d}": (0.05 if i % 2 == 0 else 0.0) for i in range(12)}

    async def run_one(spec, item):
        await asyncio.sleep(durations[item.key] if spec.name == "s0" else 0)
        return spec.name

    report = run(Dispatcher(specs(1, 1), run_one).run(items(12)))
    s0, s1 = report.servers
    assert s1.steals_in >= 1 and s0.steals_out == s1.steals_in
    assert s0.tests_run + s1.tests_run == 12 and s1.tests_run > 6
    assert all(d.state == COMPLETED and d.value == d.server for d in report.results)


def test_a_lost_server_is_retired_and_its_tests_move_within_the_budgets():
    async def run_one(spec, item):
        await asyncio.sleep(0.001)
        if spec.name == "s0":
            raise ServerLost(spec.name, "connection reset")
        return "ok"

    report = run(Dispatcher(specs(1, 1, 1), run_one).run(items(9)))
    s0 = report.servers[0]
    assert not s0.alive and s0.lost_reason == "connection reset" and s0.lost_items == 1
    assert {d.state for d in report.results} == {COMPLETED}
    moved = [d for d in report.results if len(d.tries) == 2]
    assert len(moved) == 1 and moved[0].tries[0] == "s0" and moved[0].server != "s0"
    assert report.retries_used == 1 and sum(s.retries for s in report.servers) == 1

    # Every server fails: the per-test limit and the total budget both end in LOST, with reasons.
    async def always_lost(spec, item):
        raise ConnectionResetError("peer reset")

    report = run(Dispatcher(specs(1, 1, 1), always_lost, max_retries_per_test=1).run(items(2)))
    assert {d.state for d in report.results} == {LOST}
    assert all("ConnectionResetError: peer reset" in d.reason for d in report.results)
    assert all(not s.alive for s in report.servers)

    report = run(Dispatcher(specs(1, 1, 1, 1), always_lost, retry_budget=0).run(items(1)))
    assert report.results[0].reason.endswith("the run's retry budget of 0 is spent")


def test_other_exceptions_are_errors_of_that_test_and_not_retried():
    async def run_one(spec, item):
        if item.key == "t01":
            raise KeyError("bug in run_one")
        return 1

    report = run(Dispatcher(specs(1, 1), run_one).run(items(3)))
    states = {d.item.key: (d.state, d.reason, len(d.tries)) for d in report.results}
    assert states["t01"] == (ERROR, "run_one raised KeyError: 'bug in run_one'", 1)
    assert all(s.alive for s in report.servers)


def test_when_every_server_is_lost_the_rest_is_reported_lost_not_hung():
    started = Counter()

    async def run_one(spec, item):
        started[spec.name] += 1
        await asyncio.sleep(0.001)
        raise ServerLost(spec.name, "gone")

    report = run(Dispatcher(specs(1, 2), run_one).run(items(10)), timeout=10)
    assert len(report.results) == 10 and {d.state for d in report.results} == {LOST}
    assert sum(started.values()) <= 3  # one try per server, plus one retry of the first loss
    never = [d for d in report.results if not d.tries]
    assert never and all(d.reason.startswith("no live server left") for d in never)


def test_halt_soon_lets_running_tests_finish_and_now_cancels_them():
    async def run_one(spec, item):
        await asyncio.sleep(0.05 if item.key != "t00" else 0.0)
        return item.key not in ("t00", "t01")  # the first two fail

    soon = run(Dispatcher(specs(1, 1), run_one, halt=HaltRule.parse("soon,fail=1"),
                          is_failure=lambda ok: not ok).run(items(8)))
    states = Counter(d.state for d in soon.results)
    assert soon.halted.startswith("--halt soon,fail=1: 1 of 1")
    assert states[CANCELLED] == 0 and states[COMPLETED] == 2 and states[NOT_RUN] == 6
    assert all(d.reason.startswith("not run: --halt") for d in soon.by_state(NOT_RUN))

    now = run(Dispatcher(specs(1, 1), run_one, halt=HaltRule.parse("now"),
                         is_failure=lambda ok: not ok).run(items(8)))
    states = Counter(d.state for d in now.results)
    assert states[CANCELLED] == 1 and states[COMPLETED] == 1 and states[NOT_RUN] == 6


def test_stop_now_cancels_and_a_run_one_that_returns_on_cancel_keeps_its_value():
    async def run_one(spec, item):
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "partial"  # what the harness's runner does: record what it had

    async def main():
        d = Dispatcher(specs(1, 1), run_one)
        task = asyncio.ensure_future(d.run(items(4)))
        await asyncio.sleep(0.05)
        d.stop("interrupted by SIGINT", now=True)
        return await task

    report = run(main(), timeout=10)
    assert Counter(d.state for d in report.results) == {CANCELLED: 2, NOT_RUN: 2}
    assert {d.value for d in report.by_state(CANCELLED)} == {"partial"}
    assert report.halted == "interrupted by SIGINT"


def test_a_refusing_server_moves_its_tests_and_is_benched_once_another_runs_one():
    calls = Counter()

    async def run_one(spec, item):
        calls[spec.name] += 1
        if spec.name == "s0":  # misconfigured: refuses at once, so it would steal everything
            raise ServerRefused(spec.name, "command not allowed: sh")
        await asyncio.sleep(0.02)
        return spec.name

    report = run(Dispatcher(specs(1, 1, 1), run_one).run(items(12)))
    s0 = report.servers[0]
    assert all(d.state == COMPLETED and d.server != "s0" for d in report.results)
    assert not s0.alive and s0.benched and s0.tests_run == 0 and s0.rejoins == 0
    assert s0.lost_reason.startswith("benched: refused t") and "which s" in s0.lost_reason
    assert s0.refused == calls["s0"] and calls["s0"] <= 12  # at most once per test
    refused = [d for d in report.results if d.tries[0] == "s0"]
    assert refused and all(len(d.tries) == 2 for d in refused)
    assert report.retries_used == 0  # a refusal uses no retry budget


def test_a_test_every_server_refuses_is_lost_and_benches_nobody():
    async def run_one(spec, item):
        if item.key == "t01":  # the test's fault: no server allows what it runs
            raise ServerRefused(spec.name, "command not allowed: python9")
        await asyncio.sleep(0.01)
        return spec.name

    report = run(Dispatcher(specs(1, 1, 1), run_one, retry_budget=0).run(items(6)))
    bad = report.results[1]
    assert bad.state == LOST and sorted(bad.tries) == ["s0", "s1", "s2"]
    assert bad.reason.startswith("refused by every live server it was offered to (s")
    assert "command not allowed: python9" in bad.reason
    assert all(d.state == COMPLETED for d in report.results if d is not bad)
    assert all(s.alive and not s.benched for s in report.servers)  # no cascade
    assert sum(s.refused for s in report.servers) == 3


def test_unauthorized_benches_at_once_and_refusals_follow_stealing_rules():
    async def run_one(spec, item):
        if spec.name == "s1":
            raise ServerRefused(spec.name, "unauthorized: HTTP 401", bench=True)
        await asyncio.sleep(0.01)
        return spec.name

    report = run(Dispatcher(specs(1, 1), run_one).run(items(4)))
    s1 = report.servers[1]
    assert s1.benched and s1.refused == 1 and s1.lost_reason == "benched: unauthorized: HTTP 401"
    assert all(d.state == COMPLETED and d.server == "s0" for d in report.results)


def test_with_a_probe_an_overdue_item_is_waited_for_while_its_server_answers():
    answers = {"s0": True, "s1": False}
    probes = Counter()

    async def probe(spec):
        probes[spec.name] += 1
        return answers[spec.name]

    async def run_one(spec, item):
        await asyncio.sleep(0.6 if item.key == "t00" else 10)
        return spec.name

    assert Dispatcher(specs(1), run_one, probe=probe).hang_grace == HANG_GRACE  # on by default
    assert Dispatcher(specs(1), run_one, probe=probe, hang_grace=None).hang_grace is None
    assert Dispatcher(specs(1), run_one).hang_grace is None
    work = [TestItem("t00", 1.0, timeout=0.1), TestItem("t01", 1.0, timeout=0.1)]
    d = Dispatcher(specs(1, 1), run_one, probe=probe, hang_grace=0.1, probe_interval=0.1,
                   max_probes=0, steal=False, max_retries_per_test=0)
    report = run(d.run(work), timeout=20)
    slow, hung = report.results
    # s0 answers its probe: t00 is slow, not lost (it ran 0.6 s against a 0.2 s limit).
    assert (slow.state, slow.server) == (COMPLETED, "s0") and probes["s0"] >= 2
    # s1 does not: its server is lost, after one probe.
    assert hung.state == LOST and probes["s1"] == 1
    assert "within 0.2 s (timeout 0.1 s + grace 0.1 s) and its probe failed" in hung.reason
    assert report.servers[0].alive and not report.servers[1].alive


def test_an_overdue_item_whose_server_keeps_answering_is_cancelled_as_an_error_at_the_bound():
    probes = Counter()
    cancelled = []

    async def probe(spec):
        probes[spec.name] += 1
        return True

    async def run_one(spec, item):
        if item.key == "t00":
            try:
                await asyncio.sleep(3600)  # stuck on the harness's side; the server is fine
            except asyncio.CancelledError:
                cancelled.append(item.key)
                raise
        return spec.name

    with pytest.raises(ValueError, match="overdue_limit"):
        Dispatcher(specs(1), run_one, probe=probe, overdue_limit=-1)
    work = [TestItem("t00", 1.0, timeout=0.1), TestItem("t01", 1.0, timeout=0.1)]
    d = Dispatcher(specs(1), run_one, probe=probe, hang_grace=0.1, probe_interval=0.05,
                   overdue_limit=0.3, steal=False)
    t = time.monotonic()
    report = run(d.run(work), timeout=10)
    assert time.monotonic() - t < 5
    stuck, after = report.results
    assert stuck.state == ERROR and stuck.server == "s0" and cancelled == ["t00"]
    assert "run_one for t00 still running" in stuck.reason
    assert "overdue limit 0.3 s) although s0 answered its probe: stuck in the harness" in stuck.reason
    assert stuck.ended - stuck.started >= 0.5 and probes["s0"] >= 2
    # Not the server's fault: it stays in and runs the next item.
    assert after.state == COMPLETED and after.server == "s0"
    assert report.servers[0].alive and report.servers[0].lost_reason is None


def test_the_pool_benches_a_server_that_refuses_the_token_as_the_preflight_words_it():
    from http import HTTPStatus

    import websockets.asyncio.server as ws_server

    async def go():
        async with ws_server.serve(lambda ws: ws.close(), "127.0.0.1", 0,
                                   process_request=lambda conn, req: conn.respond(
                                       HTTPStatus.UNAUTHORIZED, "no\n")) as srv:
            port = srv.sockets[0].getsockname()[1]
            spec = ServerSpec(f"ws://127.0.0.1:{port}/ws", "wrong", 1, 1, name="s0")
            pool = ClientPool(open_timeout=5, hang_quiet=None)
            try:
                with pytest.raises(ServerRefused) as info:
                    async with pool.client(spec):
                        pass
            finally:
                await pool.close()
            return spec, info.value

    spec, e = run(go(), timeout=20)
    assert e.bench and e.detail == (f"unauthorized: refused the token (HTTP 401); give it the token "
                                    f"its service was started with: --server-token {spec.url}=T")


def test_servers_missing_an_executable_others_allow_are_left_out_before_the_run():
    allows = {"a": ["sh", "claude"], "b": ["echo", "claude"], "c": ["claude", "sh", "echo"], "d": None}
    assert unfit_servers(allows, ["/bin/sh", "echo"]) == {
        "a": "it does not allow echo (it allows claude, sh), which c allows",
        "b": "it does not allow sh (it allows claude, echo), which c allows"}
    assert unfit_servers(allows, ["claude"]) == {}
    # Nobody allows python9: the tests' problem, not the servers'.
    assert unfit_servers(allows, ["sh", "python9"]) == {
        "b": "it does not allow sh (it allows claude, echo), which a, c allow"}
    # Nobody covers all: leave everyone in (refusals move tests at run time).
    assert unfit_servers({"a": ["sh"], "b": ["echo"]}, ["sh", "echo"]) == {}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(1, 4), st.integers(1, 3)), min_size=1, max_size=4),
       st.integers(0, 25), st.sets(st.integers(0, 40), max_size=6), st.booleans(),
       st.integers(0, 3), st.one_of(st.none(), st.integers(0, 4)),
       st.sets(st.integers(0, 40), max_size=6))
def test_every_item_ends_exactly_once_whatever_fails(fleet, n, failing_calls, steal, per_test, budget,
                                                     refusing_calls):
    servers = [ServerSpec(f"ws://h:{i}/ws", None, w, c, name=f"s{i}") for i, (w, c) in enumerate(fleet)]
    calls = Counter()
    finished = Counter()
    refused: dict[str, set[str]] = {}

    async def run_one(spec, item):
        call = sum(calls.values())
        calls[item.key] += 1
        assert spec.name not in refused.get(item.key, set()), "offered again to a server that refused it"
        await asyncio.sleep(0)
        if call in refusing_calls:
            refused.setdefault(item.key, set()).add(spec.name)
            raise ServerRefused(spec.name, f"call {call}")
        if call in failing_calls:
            raise ServerLost(spec.name, f"call {call}")
        finished[item.key] += 1
        return spec.name

    d = Dispatcher(servers, run_one, steal=steal, max_retries_per_test=per_test, retry_budget=budget)
    report = run(d.run(items(n)), timeout=20)
    assert [r.item.key for r in report.results] == [f"t{i:02d}" for i in range(n)]
    for r in report.results:
        assert r.state in (COMPLETED, LOST)
        assert len(r.tries) == calls[r.item.key]
        if r.state == COMPLETED:
            assert finished[r.item.key] == 1 and r.server == r.tries[-1] == r.value
        else:
            assert finished[r.item.key] == 0 and r.reason
    assert report.retries_used <= (budget if budget is not None else report.retries_used)
    assert sum(s.tests_run for s in report.servers) == len(report.completed)
    if any(s.alive for s in report.servers):
        assert all(len(r.tries) - len(refused.get(r.item.key, ())) == per_test + 1
                   or "budget" in r.reason or "refused" in r.reason for r in report.lost)
    for s in report.servers:  # benched only after another server ran what it refused
        if s.benched:
            assert any(s.name in refused.get(r.item.key, ()) and r.state == COMPLETED
                       for r in report.results)


# ---- real services on loopback --------------------------------------------------------------------


def _wait_url(svc: ServiceProcess) -> ServiceProcess:
    def url() -> str | None:
        text = svc.stdout_path.read_text()
        return text.splitlines()[0] if text.endswith("\n") else None

    wait_until(lambda: url() or not svc.alive(), START_TIMEOUT, interval=0.02)
    found = url()
    assert found, f"server did not print its URL:\n{svc.stderr()}"
    svc.url = found
    return svc


@pytest.fixture(scope="module")
def fleet_services(tmp_path_factory):
    """Six servers started at once (A, B, C stay up; V1-V3 are for killing)."""
    home = tmp_path_factory.mktemp("fleet")
    names = ["A", "B", "C", "V1", "V2", "V3"]
    procs = {n: launch(home / n, allow=("sleep", "sh")) for n in names}
    try:
        for svc in procs.values():
            _wait_url(svc)
        yield procs
    finally:
        problems = []
        for name, svc in procs.items():
            if svc.alive():
                svc.signal(signal.SIGCONT)
                rc = svc.stop()
                if rc != 0:
                    problems.append(f"{name} exited {rc} on SIGTERM")
            if "Traceback" in svc.stderr():
                problems.append(f"{name} logged a traceback:\n{svc.stderr()[-2000:]}")
        assert not problems, problems


def spec_of(svc: ServiceProcess, name: str, weight: float = 1, concurrency: int = 1) -> ServerSpec:
    return ServerSpec(svc.url, None, weight, concurrency, name=name)


def marking_run_one(pool: ClientPool, marks: Path, seconds):
    """run_one through the public client: `sh -c` that marks start and end in a file per item."""
    marks.mkdir(parents=True, exist_ok=True)

    async def run_one(spec: ServerSpec, item: TestItem):
        script = f'echo "start $SRV" >> "$MARK"; sleep {seconds(item)}; echo "end $SRV" >> "$MARK"'
        async with pool.client(spec) as client:
            res = await client.execute(args=["sh", "-c", script], timeout=item.timeout or 30,
                                       env={"SRV": spec.name, "MARK": str(marks / item.key)})
        if not res.ok:
            raise AssertionError(f"{item.key} on {spec.name}: {res.reason} exit {res.exit_code}: "
                                 f"{res.stderr_text[:200]}")
        return res

    return run_one


def marks_of(marks: Path, key: str) -> list[str]:
    p = marks / key
    return p.read_text().splitlines() if p.exists() else []


def kill_server_and_jobs(svc: ServiceProcess) -> list[int]:
    """SIGKILL a server and every job process under it (freeze it first so none is added)."""
    os.kill(svc.pid, signal.SIGSTOP)
    kids = psutil.Process(svc.pid).children(recursive=True)
    mine = os.getpgid(0)
    groups = set()
    for k in kids:
        try:
            groups.add(os.getpgid(k.pid))
        except ProcessLookupError:
            pass
    os.kill(svc.pid, signal.SIGKILL)
    for g in groups - {mine}:
        try:
            os.killpg(g, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for k in kids:
        try:
            os.kill(k.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    svc.proc.wait(10)
    return [k.pid for k in kids]


async def poll(predicate, timeout: float, what: str):
    """Await until `predicate()` is truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)



@pytest.mark.anyio
async def test_real_servers_get_tests_in_proportion_to_weight(fleet_services, tmp_path):
    a, b, c = (fleet_services[n] for n in "ABC")
    pool = ClientPool()
    try:
        # Stealing off: exactly the deal, 1:2:3.
        servers = [spec_of(a, "A", 1), spec_of(b, "B", 2), spec_of(c, "C", 3)]
        run_one = marking_run_one(pool, tmp_path / "m1", lambda i: 0.05)
        report = await asyncio.wait_for(
            Dispatcher(servers, run_one, steal=False).run(items(12)), 60)
        assert [s.tests_run for s in report.servers] == [2, 4, 6]
        assert all(d.state == COMPLETED and len(d.tries) == 1 for d in report.results)

        # Capacity = weight (concurrency 1, 2, 3) with stealing on: shares stay near 1:2:3.
        servers = [spec_of(a, "A", 1, 1), spec_of(b, "B", 2, 2), spec_of(c, "C", 3, 3)]
        run_one = marking_run_one(pool, tmp_path / "m2", lambda i: 0.2)
        report = await asyncio.wait_for(Dispatcher(servers, run_one).run(items(24)), 60)
        counts = [s.tests_run for s in report.servers]
        assert sum(counts) == 24 and all(d.state == COMPLETED for d in report.results)
        for got, want in zip(counts, (4, 8, 12)):
            assert abs(got - want) <= 3, counts
        assert counts[0] < counts[2], counts
        for d in report.results:  # each ran once, on the server the report names
            assert marks_of(tmp_path / "m2", d.item.key) == [f"start {d.server}", f"end {d.server}"]
    finally:
        await pool.close()


@pytest.mark.anyio
async def test_stealing_evens_out_a_skewed_suite_on_real_servers(fleet_services, tmp_path):
    servers = [spec_of(fleet_services[n], n) for n in "ABC"]
    # Equal estimates deal round-robin, so every third test (all on A) is the slow one.
    slow = {f"t{i:02d}" for i in range(0, 12, 3)}
    pool = ClientPool()
    try:
        results = {}
        for steal in (False, True):
            run_one = marking_run_one(pool, tmp_path / f"steal-{steal}",
                                      lambda i: 0.4 if i.key in slow else 0.02)
            results[steal] = await asyncio.wait_for(
                Dispatcher(servers, run_one, steal=steal).run(items(12)), 60)
    finally:
        await pool.close()
    off, on = results[False], results[True]
    assert [s.tests_run for s in off.servers] == [4, 4, 4] and off.servers[0].steals_out == 0
    assert on.servers[0].steals_out >= 1 and on.servers[0].tests_run < 4
    assert on.makespan < 0.8 * off.makespan, (on.makespan, off.makespan)
    assert on.fairness < off.fairness, (on.fairness, off.fairness)
    assert all(d.state == COMPLETED for r in (on, off) for d in r.results)
    assert on.servers[0].busy < off.servers[0].busy
    assert off.servers[1].idle > on.servers[1].idle


@pytest.mark.anyio
async def test_a_server_killed_mid_run_loses_no_test(fleet_services, tmp_path):
    a, b, victim = fleet_services["A"], fleet_services["B"], fleet_services["V1"]
    servers = [spec_of(a, "A"), spec_of(b, "B"), spec_of(victim, "V1", 1, 2)]
    marks = tmp_path / "marks"
    pool = ClientPool()
    run_one = marking_run_one(pool, marks, lambda i: 0.3)
    job_pids: list[int] = []

    def victim_mid_test() -> bool:
        return any(marks_of(marks, k) == ["start V1"] for k in (f"t{i:02d}" for i in range(12)))

    async def killer():
        await poll(victim_mid_test, 30, "a test running on V1")
        job_pids.extend(kill_server_and_jobs(victim))

    try:
        kill = asyncio.ensure_future(killer())
        report = await asyncio.wait_for(Dispatcher(servers, run_one).run(items(12)), 60)
        await asyncio.wait_for(kill, 5)
    finally:
        await pool.close()
    assert job_pids, "the victim had no job processes when it was killed"
    assert wait_gone(job_pids, 10) == []
    v1 = report.servers[2]
    assert not v1.alive and v1.lost_items >= 1 and "connection lost" in v1.lost_reason
    assert all(d.state == COMPLETED for d in report.results), [(d.item.key, d.state, d.reason) for d in report.results]
    moved = [d for d in report.results if d.tries[0] == "V1" and d.server != "V1"]
    assert len(moved) == v1.lost_items and all(d.server in ("A", "B") for d in moved)
    for d in report.results:  # exactly one full run per test, on the server the report names
        lines = marks_of(marks, d.item.key)
        assert lines[-2:] == [f"start {d.server}", f"end {d.server}"], (d.item.key, lines)
        assert sum(ln.startswith("end") for ln in lines) == 1, (d.item.key, lines)
        assert lines[:-2] in ([], ["start V1"]), (d.item.key, lines)
    # The test seen mid-sleep on V1 was cut there and ran again elsewhere. (A second one sent to
    # V1 as it was frozen may never have started there: moved, but with no cut run.)
    assert any(marks_of(marks, d.item.key)[0] == "start V1" for d in moved)
    assert sum(s.tests_run for s in report.servers) == 12


@pytest.mark.anyio
async def test_when_all_servers_die_remaining_tests_are_lost_and_nothing_hangs(fleet_services, tmp_path):
    v2, v3 = fleet_services["V2"], fleet_services["V3"]
    servers = [spec_of(v2, "V2"), spec_of(v3, "V3")]
    marks = tmp_path / "marks"
    pool = ClientPool()
    run_one = marking_run_one(pool, marks, lambda i: 0.5)
    killed: list[int] = []

    def both_mid_test() -> bool:
        lines = [ln for p in marks.glob("t*") for ln in p.read_text().splitlines()]
        return "start V2" in lines and "start V3" in lines

    async def killer():
        await poll(both_mid_test, 30, "tests running on V2 and V3")
        killed.extend(kill_server_and_jobs(v2))
        killed.extend(kill_server_and_jobs(v3))

    t0 = time.monotonic()
    try:
        kill = asyncio.ensure_future(killer())
        report = await asyncio.wait_for(Dispatcher(servers, run_one).run(items(8)), 60)
        await asyncio.wait_for(kill, 5)
    finally:
        await pool.close()
    assert time.monotonic() - t0 < 30
    assert wait_gone(killed, 10) == []
    assert all(not s.alive for s in report.servers)
    states = Counter(d.state for d in report.results)
    assert set(states) <= {COMPLETED, LOST} and states[LOST] >= 6
    for d in report.lost:
        assert "no live server left" in d.reason, d.reason


@pytest.mark.anyio
async def test_a_hung_server_is_dropped_and_rejoins_when_its_probe_answers(fleet_services, tmp_path):
    a, c = fleet_services["A"], fleet_services["C"]
    servers = [spec_of(a, "A"), spec_of(c, "C")]
    marks = tmp_path / "marks"
    pool = ClientPool()
    run_one = marking_run_one(pool, marks, lambda i: 0.3)

    async def probe(spec: ServerSpec) -> bool:
        client = await ExecutorClient.connect(spec.url, spec.token, open_timeout=0.5)
        try:
            await asyncio.wait_for(client.ping(), 0.5)
            return True
        finally:
            await asyncio.wait_for(client.close(), 2)

    def on_event(ev):
        if ev.kind == "server_lost" and ev.server == "C":
            c.signal(signal.SIGCONT)  # it comes back; only the probe can tell the dispatcher

    def c_mid_test() -> bool:
        return any(marks_of(marks, f"t{i:02d}") == ["start C"] for i in range(16))

    async def freezer():
        await poll(c_mid_test, 30, "a test running on C")
        c.signal(signal.SIGSTOP)

    work = [TestItem(f"t{i:02d}", 1.0, timeout=1.0) for i in range(16)]
    d = Dispatcher(servers, run_one, hang_grace=0.5, probe=probe, probe_interval=0.2,
                   probe_timeout=2.0, on_event=on_event)
    try:
        freeze = asyncio.ensure_future(freezer())
        report = await asyncio.wait_for(d.run(work), 60)
        await asyncio.wait_for(freeze, 5)
    finally:
        c.signal(signal.SIGCONT)
        await pool.close()
    sc = report.servers[1]
    assert sc.lost_reason and "no answer for" in sc.lost_reason and "grace 0.5 s" in sc.lost_reason
    assert sc.rejoins == 1 and sc.alive and sc.steals_in >= 1
    after = [d for d in report.results if d.server == "C" and d.started > sc.lost_at]
    assert after, "C ran nothing after rejoining"
    assert all(d.state == COMPLETED for d in report.results)
    hung = [d for d in report.results if d.tries[0] == "C" and d.server != "C"]
    assert len(hung) == 1 and hung[0].server == "A"
    assert c.health()["status"] == "ok"


@pytest.mark.anyio
async def test_a_rejoining_server_gets_only_the_workers_it_is_missing(fleet_services):
    a, c = fleet_services["A"], fleet_services["C"]
    servers = [spec_of(a, "A", 1, 1), spec_of(c, "C", 2, 2)]
    pool = ClientPool()
    running: Counter = Counter()
    most: Counter = Counter()
    dropped: list[str] = []

    async def run_one(spec: ServerSpec, item: TestItem):
        running[spec.name] += 1
        most[spec.name] = max(most[spec.name], running[spec.name])
        try:
            async with pool.client(spec) as client:
                job = await client.start(args=["sleep", "0.5"], timeout=30)
                if spec.name == "C" and not dropped and running["C"] == 2:
                    # This connection breaks while C's other worker is mid-test: C is lost, its
                    # probe answers at once, it rejoins while that old worker still runs.
                    dropped.append(item.key)
                    client.abort()
                res = await job.result()
        finally:
            running[spec.name] -= 1
        assert res.ok, (item.key, res.reason)
        return res

    async def probe(spec: ServerSpec) -> bool:
        return True

    d = Dispatcher(servers, run_one, probe=probe, probe_interval=0.05, hang_grace=None)
    try:
        report = await asyncio.wait_for(d.run(items(12)), 60)
    finally:
        await pool.close()
    sc = report.servers[1]
    assert dropped and sc.rejoins == 1 and sc.alive and sc.lost_items == 1
    assert all(r.state == COMPLETED for r in report.results)
    assert most["C"] <= 2, f"C ran {most['C']} tests at once with concurrency 2"
    assert sc.tests_run >= 3  # it did work again after rejoining


@pytest.mark.anyio
async def test_a_server_that_refuses_the_command_is_benched_and_others_run_its_tests(
        fleet_services, executor_service, tmp_path):
    bad = executor_service(allow=["echo"])  # misconfigured: the tests need sh
    servers = [spec_of(fleet_services["A"], "A"), spec_of(fleet_services["B"], "B"), spec_of(bad, "BAD")]
    marks = tmp_path / "marks"
    pool = ClientPool()
    try:
        report = await asyncio.wait_for(
            Dispatcher(servers, marking_run_one(pool, marks, lambda i: 0.1)).run(items(9)), 60)
    finally:
        await pool.close()
    assert all(d.state == COMPLETED and d.server in ("A", "B") for d in report.results), \
        [(d.item.key, d.state, d.reason) for d in report.results]
    sb = report.servers[2]
    assert sb.benched and not sb.alive and sb.tests_run == 0 and 1 <= sb.refused <= 9
    assert "command not allowed: sh" in sb.lost_reason and sb.lost_reason.startswith("benched: refused")
    for d in report.results:  # each ran once, where the report says
        assert marks_of(marks, d.item.key) == [f"start {d.server}", f"end {d.server}"]


@pytest.mark.anyio
async def test_a_frozen_server_is_found_by_its_silence_and_its_job_ended_before_the_retry(
        fleet_services, tmp_path):
    from stress.run.runner import tagged_processes

    a, c = fleet_services["A"], fleet_services["C"]
    servers = [spec_of(a, "A"), spec_of(c, "C")]
    marks = tmp_path / "marks"
    marks.mkdir()
    tag = f"{tmp_path.name}-frozen"
    pool = ClientPool(hang_quiet=0.5, health_timeout=0.5)

    async def run_one(spec: ServerSpec, item: TestItem):
        secs = 5 if spec.name == "C" else 0.2  # C's job must still run when the hang is found
        script = f'echo "start $SRV" >> "$MARK"; sleep {secs}; echo "end $SRV" >> "$MARK"'
        async with pool.client(spec) as client:
            res = await client.execute(args=["sh", "-c", script], timeout=30, env={
                "SRV": spec.name, "MARK": str(marks / item.key), "STRESS_JOB": f"{tag}/{item.key}"})
        assert res.ok, (item.key, res.reason)
        return res

    def c_mid_test() -> bool:
        return any(marks_of(marks, f"t{i:02d}") == ["start C"] for i in range(4))

    async def freezer():
        await poll(c_mid_test, 30, "a test running on C")
        c.signal(signal.SIGSTOP)

    t0 = time.monotonic()
    try:
        freeze = asyncio.ensure_future(freezer())
        report = await asyncio.wait_for(Dispatcher(servers, run_one).run(items(4)), 30)
        await asyncio.wait_for(freeze, 5)
        left = [tagged_processes(f"{tag}/t{i:02d}") for i in range(4)]
    finally:
        c.signal(signal.SIGCONT)
        await pool.close()
    assert time.monotonic() - t0 < 15
    sc = report.servers[1]
    assert not sc.alive and sc.lost_reason.startswith("hung: nothing from the server for")
    assert all(d.state == COMPLETED and d.server == "A" for d in report.results)
    frozen = [d for d in report.results if d.tries == ["C", "A"]]
    assert len(frozen) == 1
    # The job on the frozen server was ended before the retry: it never got to its "end".
    assert marks_of(marks, frozen[0].item.key) == ["start C", "start A", "end A"]
    assert left == [{}, {}, {}, {}]
