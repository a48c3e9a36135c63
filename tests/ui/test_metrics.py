"""GET /metrics: Prometheus text that prometheus_client's own parser reads, counting a real job
run through cc_executor.client, and /health's access rule unless a metrics token is set."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

import pytest
import websockets
from conftest import wait_until
from prometheus_client.parser import text_string_to_metric_families
from service_fixture import http_status

from cc_executor.client import ExecutorClient


def scrape(svc, token: str | None = None) -> dict[str, dict[tuple, float]]:
    """name -> {sorted label items: value}, over every sample of every family."""
    req = urllib.request.Request(svc.http + "/metrics",
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def run_echo(url: str, *words: str) -> bytes:
    async def go():
        async with await ExecutorClient.connect(url) as client:
            result = await client.execute(args=["echo", *words], timeout=30)
            assert result.exit_code == 0
            return result.stdout
    return asyncio.run(go())


def refused_status(url: str, **kw) -> int:
    """The HTTP status of a refused upgrade (fails the test if the upgrade succeeds)."""
    async def go() -> int:
        with pytest.raises(websockets.InvalidStatus) as e:
            async with websockets.connect(url, open_timeout=10, **kw):
                pass
        return e.value.response.status_code
    return asyncio.run(go())


def test_metrics_count_a_job_and_a_refusal(executor_service):
    svc = executor_service(allow=["echo"])
    out = run_echo(svc.url, "metrics", "please")
    assert out == b"metrics please\n"
    assert refused_status(svc.url, origin="http://evil.example") == 403

    # The completion is counted on the loop turn after it went out: poll, bounded.
    def counted():
        m = scrape(svc)
        done = m.get("cc_executor_jobs_completed_total", {}).get((("reason", "exited"),))
        return m if done == 1.0 else None
    m = wait_until(counted, 10.0, interval=0.05)
    assert m, scrape(svc)
    assert m["cc_executor_jobs_started_total"][()] == 1.0
    assert m["cc_executor_job_output_bytes_total"][(("stream", "stdout"),)] == len(out)
    assert m["cc_executor_job_duration_seconds_count"][(("reason", "exited"),)] == 1.0
    assert m["cc_executor_job_wait_seconds_count"][(("reason", "exited"),)] == 1.0
    assert m["cc_executor_jobs_running"][()] == 0.0
    assert m["cc_executor_jobs_queued"][()] == 0.0
    assert m["cc_executor_jobs_detached"][()] == 0.0
    assert m["cc_executor_upgrades_refused_total"][(("reason", "origin"),)] == 1.0
    assert m["cc_executor_build_info"][(("model", "real"), ("version", "0.1.0"))] == 1.0
    # Host gauges come from the load monitor's first sample (taken at start).
    assert wait_until(lambda: "cc_executor_host_load1" in scrape(svc), 10.0, interval=0.1)
    host = scrape(svc)
    assert host["cc_executor_host_cpu_cores"][()] >= 1
    assert host["cc_executor_host_memory_total_bytes"][()] > 0
    # No label carries a job's identity.
    labels = {k for series in host.values() for key in series for k, _ in key}
    assert labels <= {"reason", "stream", "signal", "kind", "resource", "version", "model", "le"}


def test_metrics_follow_the_health_rule_unless_a_metrics_token_is_set(executor_service):
    # (A service token alone leaves /metrics open: test_first_hour's refusal test.)
    svc = executor_service("--metrics-token", "scrape-me")
    for headers, want in (({}, "missing token"), ({"Authorization": "Bearer nope"},
                                                    "invalid token")):
        req = urllib.request.Request(svc.http + "/metrics", headers=headers)
        try:
            urllib.request.urlopen(req, timeout=5)
            raise AssertionError("/metrics answered without the right token")
        except urllib.error.HTTPError as e:
            assert e.code == 401
            assert want in e.read().decode()
    assert "cc_executor_jobs_running" in scrape(svc, token="scrape-me")
    assert http_status(svc.http + "/health") == 200


def test_metrics_count_holds_timeouts_stalls_and_cancels(executor_service):
    svc = executor_service("--max-jobs", "1", allow=["sleep"])

    async def go():
        async with await ExecutorClient.connect(svc.url) as client:
            first = await client.start(args=["sleep", "5"], timeout=0.5)
            second = await client.start(args=["sleep", "5"])  # held: max_jobs
            assert (await first.result()).reason == "timeout"
            await second.cancel()
            assert (await second.result()).reason == "cancelled"
            third = await client.start(args=["sleep", "5"], stall_timeout=0.3)
            assert (await third.result()).reason == "stalled"
    asyncio.run(go())

    def counted():
        m = scrape(svc)
        return m if len(m.get("cc_executor_jobs_completed_total", {})) == 3 else None
    m = wait_until(counted, 10.0, interval=0.05)
    assert m, scrape(svc)
    done = m["cc_executor_jobs_completed_total"]
    assert done == {(("reason", "timeout"),): 1.0, (("reason", "cancelled"),): 1.0,
                    (("reason", "stalled"),): 1.0}
    assert m["cc_executor_admission_held_total"] == {(("signal", "max_jobs"),): 1.0}
    assert m["cc_executor_job_timeouts_total"] == {(("kind", "run"),): 1.0}
    assert m["cc_executor_job_stalls_total"][()] == 1.0
    assert m["cc_executor_job_cancels_total"][()] == 1.0
    # The held job waited for the first one's timeout before its own end.
    assert m["cc_executor_job_wait_seconds_sum"][(("reason", "cancelled"),)] > 0.3


def test_a_dropped_resumable_job_is_counted_as_detached_until_it_expires(executor_service):
    svc = executor_service(allow=["sleep"])

    async def start_and_drop():
        client = await ExecutorClient.connect(svc.url)
        await client.start(args=["sleep", "30"], detach_timeout=1.0)
        client.abort()  # a dropped transport, not a clean close: the job detaches
    asyncio.run(start_and_drop())

    def gauge(name):
        return scrape(svc).get(name, {}).get(())
    assert wait_until(lambda: gauge("cc_executor_jobs_detached") == 1.0, 10.0, interval=0.05)
    assert gauge("cc_executor_jobs_running") == 1.0
    # Nobody attached within detach_timeout: ended as a disconnect always was.
    assert wait_until(lambda: gauge("cc_executor_jobs_detached") == 0.0, 15.0, interval=0.1)
    assert wait_until(lambda: scrape(svc).get("cc_executor_jobs_completed_total", {}).get(
        (("reason", "cancelled"),)) == 1.0, 10.0, interval=0.1)
