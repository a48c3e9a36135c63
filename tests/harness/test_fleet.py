"""Fleet runs on Dask: a real `dask scheduler` (started with the shipped tests/stress/cluster/dask.yaml)
and real `python -m stress.worker --start-executor` processes on loopback, each with its own real
executor; the harness (`python -m stress.local --cluster ...`) as a user runs it.

One cluster for the whole module (starting one costs seconds): workers `a` (1 slot), `b` (2 slots)
and `g` (1 slot, one declared GPU). The tests run in file order; the kill test ends `g`, and the
test after it checks that a GPU test is then reported not run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import REPO, marked_pids, wait_until
from stress import cli
from stress.cluster import capacity
from stress.cluster.fleet_run import cv, lost_busy, task_prefix, unroutable
from test_harness import SCHEMA, schema_errors

pytestmark = pytest.mark.slow

PY = sys.executable
DASK = str(Path(PY).with_name("dask"))
RUN_TIMEOUT = 120
CONFIG = REPO / "tests" / "stress" / "cluster" / "dask.yaml"


def _env() -> dict[str, str]:
    env = dict(os.environ, CC_EXECUTOR_ALLOW="sh", CC_EXECUTOR_THROTTLE="0", DASK_CONFIG=str(CONFIG))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO / "tests"),
                                        env.get("PYTHONPATH", "")])
    return env


class Cluster:
    """A scheduler and named workers, each its own process group; `close` ends them all."""

    def __init__(self, home: Path):
        self.home = home
        self.procs: dict[str, subprocess.Popen] = {}
        self.address = ""

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.home / f"{name}.log", "wb")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                             env=_env(), cwd=self.home, start_new_session=True)
        log.close()
        self.procs[name] = p
        return p

    def log(self, name: str) -> str:
        return (self.home / f"{name}.log").read_text(errors="replace")

    def start(self, workers: dict[str, list[str]], scheduler: tuple[str, ...] = ()) -> None:
        self._spawn("scheduler", [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0",
                                  "--no-dashboard", *scheduler])
        found = wait_until(lambda: re.search(r"(tcp|tls)://127\.0\.0\.1:\d+", self.log("scheduler")),
                           30, 0.05)
        assert found, self.log("scheduler")
        self.address = found.group(0)
        for name, extra in workers.items():
            self.start_worker(name, extra, wait=False)
        for name in workers:
            self.wait_joined(name)

    def start_worker(self, name: str, extra: list[str], wait: bool = True) -> subprocess.Popen:
        p = self._spawn(name, [PY, "-m", "stress.worker", self.address, "--start-executor",
                               "--name", name, "--log-dir", str(self.home / f"{name}-logs"), *extra])
        if wait:
            self.wait_joined(name)
        return p

    def wait_joined(self, name: str) -> None:
        assert wait_until(lambda: "joined" in self.log(name) or self.procs[name].poll() is not None,
                          60, 0.05), self.log(name)
        assert self.procs[name].poll() is None, self.log(name)

    def executor_of(self, name: str) -> psutil.Process:
        kids = psutil.Process(self.procs[name].pid).children()
        return next(k for k in kids if "cc_executor" in " ".join(k.cmdline()))

    def close(self) -> None:
        for name, p in reversed(list(self.procs.items())):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    before = set(marked_pids())
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.start({"a": ["--slots", "1"], "b": ["--slots", "2"], "g": ["--slots", "1", "--gpus", "1"]})
        yield c
    finally:
        c.close()
        left = wait_until(lambda: not (set(marked_pids()) - before), 20, 0.1)
        assert left, f"left running: {set(marked_pids()) - before}"


def harness(*args: str, out: Path) -> subprocess.CompletedProcess:
    argv = [PY, "-m", "stress.local", *args, "--out", str(out), "--no-history", "--quiet"]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                          stdin=subprocess.DEVNULL, env=_env())


def suite(path: Path, tests: list[dict]) -> Path:
    path.write_text(json.dumps({"name": path.stem, "tests": tests}))
    return path


def report(out: Path) -> dict:
    [folder] = [d for d in out.iterdir() if d.is_dir()]
    doc = json.loads((folder / "report.json").read_text())
    assert schema_errors(doc, SCHEMA) == []
    doc["_md"] = (folder / "report.md").read_text()
    return doc


def sleeper(i: int, seconds: float, **extra) -> dict:
    return {"id": f"t{i}", "command": f"sleep {seconds}; echo done-{i}",
            "expected_patterns": [f"done-{i}"], "timeout": 60, **extra}


def overlap(attempts: list[dict]) -> int:
    """Most attempts running at the same moment."""
    edges = sorted([(a["started_at"], 1) for a in attempts]
                   + [(a["started_at"] + a["duration"], -1) for a in attempts])
    most = now = 0
    for _, d in edges:
        now += d
        most = max(most, now)
    return most


# ---------------------------------------------------------------------------------------------
# Pure rules


def test_slots_follow_cores_and_memory_and_flags_win():
    gib = 2**30
    assert capacity.slots_from_hardware({"cores": 8, "memory_available": 64 * gib})[0] == 16
    assert capacity.slots_from_hardware({"cores": 8, "memory_available": 2 * gib})[0] == 4
    assert capacity.slots_from_hardware({"cores": 1, "memory_available": 0})[0] == 1
    cap = capacity.derive({"cores": 2, "memory_available": 8 * gib,
                           "gpus": [{"model": "NVIDIA H100 80GB HBM3"}, {"model": "NVIDIA L4"}]})
    assert (cap.slots, cap.gpus, cap.gpu_weight, cap.gpu_source) == (4, 2, 2.5, "nvidia-smi")
    assert capacity.derive({}, slots=3, gpus=1, weight=0.5).to_json()["slots_source"] == "--slots"


def test_routing_names_the_missing_resource_and_keys_keep_one_prefix_per_test(tmp_path):
    from dask.utils import key_split
    from stress.run.plan import build_plan, load_suites

    path = suite(tmp_path / "r.json", [sleeper(1, 0, requires=["gpu"]), sleeper(2, 0),
                                       {"id": "e", "args": ["echo", "hi"], "timeout": 5}])
    gpu, plain, echo = build_plan(load_suites([str(path)], complex_mode=False), [], None)
    workers = {"tcp://x:1": {"name": "w", "resources": {"claude": 2, "allow.sh": 2}}}
    assert "'gpu'" in unroutable(gpu, workers) and unroutable(plain, workers) is None
    assert "an executor allowing echo" in unroutable(echo, workers)
    workers["tcp://y:1"] = {"name": "v", "resources": {"claude": 1, "allow.echo": 1, "gpu": 1}}
    assert unroutable(echo, workers) is None
    assert unroutable(gpu, workers) == ("no worker of the cluster has all it needs (v lacks an "
                                        "executor allowing sh; w lacks 'gpu')")
    assert key_split(f"{task_prefix(gpu)}-3-{'ab12cd34'}") == task_prefix(gpu) != task_prefix(plain)
    assert cv([2.0, 2.0]) == 0.0 and cv([1.0, 3.0]) == 0.5


@pytest.mark.parametrize("args, word", [
    (["--server", "ws://127.0.0.1:1/ws", "--server", "ws://127.0.0.1:2/ws"], "--cluster"),
    (["--server", "ws://127.0.0.1:1/ws@2"], "--cluster"),
    (["--servers", "3"], "--cluster"),
    (["--weights", "1,2"], "--cluster"),
    (["--retry-budget", "2"], "allowed-failures"),
    (["--cluster", "tcp://10.1.2.3:8786"], "TLS"),
    (["--cluster", "local:0"], "local:N"),
])
def test_old_multi_server_forms_and_unsafe_clusters_fail_with_one_line(args, word, capsys):
    assert cli.main(["smoke", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and word in err, err


def test_unreachable_scheduler_is_one_line_naming_it_and_exit_3(tmp_path):
    r = harness(str(suite(tmp_path / "s.json", [sleeper(1, 0)])), "--cluster", "tcp://127.0.0.1:9",
                "--cluster-timeout", "2", out=tmp_path / "out")
    assert r.returncode == 3, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "tcp://127.0.0.1:9" in lines[0], r.stderr


def test_a_worker_refuses_a_scheduler_off_loopback_without_tls():
    r = subprocess.run([PY, "-m", "stress.worker", "tcp://10.1.2.3:8786", "--start-executor"],
                       capture_output=True, text=True, timeout=60, env=_env(), stdin=subprocess.DEVNULL)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "tcp://10.1.2.3:8786" in lines[0] and "TLS" in lines[0], r.stderr


@pytest.mark.parametrize("flag, value, word", [
    ("--gpus", "-1", "--gpus"), ("--gpu-weight", "0", "--gpu-weight"),
    ("--gpu-weight", "nan", "--gpu-weight"), ("--slots", "0", "--slots")])
def test_a_worker_refuses_counts_no_test_could_match_before_starting_anything(flag, value, word,
                                                                               capsys):
    from stress.cluster import worker

    # 127.0.0.1:9 is never reached: the flags are judged first.
    assert worker.main(["tcp://127.0.0.1:9", "--start-executor", flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and word in err, err


def test_a_lost_worker_was_busy_with_the_tests_it_lost_until_it_died():
    t0 = 1000.0
    starts = [(1001.0, {"key": "k1", "worker": "tcp://g:1"}),   # finished there: its own duration
              (1002.0, {"key": "k2", "worker": "tcp://g:1"}),   # running when g died at t0 + 5
              (1004.5, {"key": "k3", "worker": "tcp://g:1"}),
              (1003.0, {"key": "k4", "worker": "tcp://h:1"}),   # another worker's
              (990.0, {"key": "k5", "worker": "tcp://g:1"})]    # a clock behind: at most its life
    assert lost_busy(starts, "tcp://g:1", {"k1"}, t0, 5.0) == 3.0 + 0.5 + 5.0
    assert lost_busy(starts, "tcp://h:1", set(), t0, 1.0) == 0.0  # started after h died


def test_a_run_on_one_host_imports_no_dask(tmp_path):
    """Without --cluster the harness is what it was: Dask is not even imported."""
    path = suite(tmp_path / "one.json", [sleeper(1, 0)])
    code = ("import sys; from stress import cli; "
            f"rc = cli.main([{str(path)!r}, '--out', {str(tmp_path / 'o')!r}, '--no-history', '--quiet']); "
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')); "
            "print(rc, loaded)")
    r = subprocess.run([PY, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                       env=_env(), stdin=subprocess.DEVNULL)
    assert r.stdout.strip().splitlines()[-1] == "0 []", r.stdout + r.stderr


# ---------------------------------------------------------------------------------------------
# On the cluster


def test_slots_are_followed_and_gpu_tests_run_only_on_the_gpu_worker(cluster, tmp_path):
    tests = [sleeper(i, 0.5) for i in range(12)] + [sleeper(i, 0.3, requires=["gpu"]) for i in (90, 91)]
    r = harness(str(suite(tmp_path / "s.json", tests)), "--cluster", cluster.address, out=tmp_path / "o")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = report(tmp_path / "o")
    attempts = [t["attempts"][0] for t in doc["tests"]]
    assert all(a["status"] == "passed" for a in attempts)
    assert {doc["tests"][i]["attempts"][0]["server"] for i in (12, 13)} == {"g"}
    rows = {w["name"]: w for w in doc["servers"]["servers"]}
    assert {n: (w["concurrency"], w["slots_source"], w["gpus"]) for n, w in rows.items()} == {
        "a": (1, "--slots", 0), "b": (2, "--slots", 0), "g": (1, "--slots", 1)}
    for name, slots in (("a", 1), ("b", 2), ("g", 1)):
        mine = [a for a in attempts if a["server"] == name]
        assert overlap(mine) <= slots, (name, mine)
    assert rows["b"]["tests_run"] > rows["a"]["tests_run"]
    assert sum(w["tests_run"] for w in rows.values()) == 14
    assert doc["servers"]["mode"] == "cluster" and doc["servers"]["fairness_cv"] is not None
    # started with --no-dashboard: its HTTP port answers, but there is no dashboard to name
    assert doc["service"]["scheduler"] == cluster.address and doc["service"]["dashboard"] is None
    assert "## Workers" in doc["_md"] and "| 2 (--slots) |" in doc["_md"]
    assert f"Dask cluster {cluster.address}, scheduler {cluster.address}; see Workers" in doc["_md"]


def test_idle_workers_steal_from_one_stuck_behind_a_long_test(cluster, tmp_path):
    tests = [sleeper(0, 3.0)] + [sleeper(i, 0.1) for i in range(1, 17)]
    r = harness(str(suite(tmp_path / "s.json", tests)), "--cluster", cluster.address, out=tmp_path / "o")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = report(tmp_path / "o")
    rows = doc["servers"]["servers"]
    assert sum(w["steals_in"] for w in rows) >= 1 and sum(w["steals_out"] for w in rows) >= 1
    # No short test waited behind the long one: each started before the long one ended.
    long = doc["tests"][0]["attempts"][0]
    long_end = long["started_at"] + long["duration"]
    late = [t["id"] for t in doc["tests"][1:] if t["attempts"][0]["started_at"] >= long_end]
    assert late == [], (late, rows)


def test_a_worker_killed_mid_run_its_tests_complete_once_elsewhere(cluster, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    tests = [{"id": f"m{i}", "timeout": 60, "expected_patterns": [f"done-{i}"],
              "command": f"echo start >> {marks}/m{i}; sleep 1; echo end >> {marks}/m{i}; echo done-{i}"}
             for i in range(10)]
    executor = cluster.executor_of("g")
    argv = [PY, "-m", "stress.local", str(suite(tmp_path / "k.json", tests)), "--cluster",
            cluster.address, "--out", str(tmp_path / "o"), "--no-history"]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env=_env())
    try:
        assert wait_until(lambda: executor.children(recursive=True), 60, 0.02), "g never ran a job"
        doomed = executor.children(recursive=True)
        os.killpg(cluster.procs["g"].pid, signal.SIGKILL)
        killed_at = time.monotonic()
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, out + err
    # The executor ended with its worker, and with it the job it was running.
    assert wait_until(lambda: not executor.is_running() and not any(p.is_running() for p in doomed),
                      20, 0.05), "g's executor or its job outlived the worker"
    assert time.monotonic() - killed_at < 60
    ends = {t["id"]: (marks / t["id"]).read_text().split().count("end") for t in tests}
    assert set(ends.values()) == {1}, ends
    doc = report(tmp_path / "o")
    assert all(t["status"] == "passed" for t in doc["tests"])
    assert doc["servers"]["retried"], "the test g was running should be listed as retried"
    assert "retried after a worker was lost" in out
    g = next(w for w in doc["servers"]["servers"] if w["name"] == "g")
    assert not g["alive"]
    # g was running a test when it died: that time was busy, not idle (its result never came)
    assert g["busy"] > 0 and g["idle"] < g["concurrency"] * g["lost_at"], g


def test_a_worker_killed_beside_a_running_executor_leaves_no_job_going(cluster, executor_service,
                                                                      tmp_path):
    """The executor outlives the worker here (it was not started by it): the worker's jobs must
    still end, because a fleet task's connection does not resume (detach_timeout 0)."""
    svc = executor_service("--token", "fleet-tok", allow=["sh"])
    cluster._spawn("x", [PY, "-m", "stress.worker", cluster.address, "--executor", svc.url,
                         "--token", "fleet-tok", "--slots", "2", "--name", "x"])
    assert wait_until(lambda: "joined" in cluster.log("x"), 60, 0.05), cluster.log("x")
    marks = tmp_path / "marks"
    marks.mkdir()
    tests = [{"id": f"x{i}", "timeout": 60, "expected_patterns": [f"done-{i}"],
              "command": f"sleep 1; echo end >> {marks}/x{i}; echo done-{i}"} for i in range(6)]
    service = psutil.Process(svc.pid)
    argv = [PY, "-m", "stress.local", str(suite(tmp_path / "x.json", tests)), "--cluster",
            cluster.address, "--out", str(tmp_path / "o"), "--no-history", "--quiet"]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env=_env())
    try:
        assert wait_until(lambda: service.children(), 60, 0.02), "x never ran a job"
        doomed = service.children(recursive=True)
        os.killpg(cluster.procs["x"].pid, signal.SIGKILL)
        # the executor lives on, and ends the dead worker's jobs at once
        assert wait_until(lambda: not any(p.is_running() for p in doomed), 10, 0.05), doomed
        assert service.is_running()
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, out + err
    ends = {t["id"]: (marks / t["id"]).read_text().split().count("end") for t in tests}
    assert set(ends.values()) == {1}, ends


def test_with_no_gpu_worker_left_a_gpu_test_is_reported_not_run(cluster, tmp_path):
    assert wait_until(lambda: cluster.procs["g"].poll() is not None, 10, 0.05)
    tests = [sleeper(1, 0.1), sleeper(2, 0.1, requires=["gpu"])]
    r = harness(str(suite(tmp_path / "s.json", tests)), "--cluster", cluster.address, out=tmp_path / "o")
    doc = report(tmp_path / "o")
    t2 = doc["tests"][1]
    assert t2["status"] == "skipped" and "no worker of the cluster has 'gpu'" in t2["attempts"][0]["message"]
    assert doc["tests"][0]["status"] == "passed", r.stdout + r.stderr


def test_local_cluster_starts_workers_with_their_own_executors_and_leaves_nothing(tmp_path):
    before = set(marked_pids())
    tests = [sleeper(i, 0.3) for i in range(6)]
    r = harness(str(suite(tmp_path / "s.json", tests)), "--cluster", "local:2", out=tmp_path / "o")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = report(tmp_path / "o")
    rows = doc["servers"]["servers"]
    assert sorted(w["name"] for w in rows) == ["local-1", "local-2"]
    assert all(w["slots_source"].startswith("hardware:") for w in rows)
    assert len({w["executor"] for w in rows}) == 2
    assert wait_until(lambda: not (set(marked_pids()) - before), 20, 0.1)


def test_a_worker_whose_executor_died_leaves_the_cluster_and_takes_no_test(cluster, tmp_path):
    """Left in, it would fail every test sent to it at once (and draw more, finishing fastest)."""
    cluster.start_worker("x", ["--slots", "4"])
    executor = cluster.executor_of("x")
    executor.kill()
    assert wait_until(lambda: cluster.procs["x"].poll() is not None, 20, 0.05), cluster.log("x")
    assert cluster.procs["x"].returncode == 3
    assert "x leaves the cluster: the executor it started (ws://127.0.0.1:" in cluster.log("x")
    r = harness(str(suite(tmp_path / "s.json", [sleeper(i, 0) for i in range(6)])), "--cluster",
                cluster.address, out=tmp_path / "o")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = report(tmp_path / "o")
    assert "x" not in {w["name"] for w in doc["servers"]["servers"]}


def test_a_worker_whose_name_is_taken_is_told_so_in_one_line(cluster):
    p = cluster.start_worker("dup", ["--name", "a"], wait=False)
    assert wait_until(lambda: p.poll() is not None, 60, 0.05), cluster.log("dup")
    lines = [x for x in cluster.log("dup").splitlines() if x.startswith("stress.worker")]
    assert p.returncode == 3 and lines == [
        f"stress.worker: the scheduler at {cluster.address} refused worker a: name taken, a"], lines


def test_with_every_worker_gone_the_run_ends_in_bounded_time_listing_lost_tests(cluster, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    tests = [{"id": f"z{i}", "timeout": 60, "expected_patterns": [f"done-{i}"],
              "command": f"sleep 3; echo end >> {marks}/z{i}; echo done-{i}"} for i in range(6)]
    executors = [cluster.executor_of(n) for n in ("a", "b")]
    argv = [PY, "-m", "stress.local", str(suite(tmp_path / "z.json", tests)), "--cluster",
            cluster.address, "--worker-wait", "2", "--out", str(tmp_path / "o"), "--no-history",
            "--quiet"]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env=_env())
    try:
        assert wait_until(lambda: all(e.children() for e in executors), 60, 0.02), "no jobs started"
        for name in ("a", "b"):
            os.killpg(cluster.procs[name].pid, signal.SIGKILL)
        killed_at = time.monotonic()
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert time.monotonic() - killed_at < 30
    assert proc.returncode == 1, out + err
    doc = report(tmp_path / "o")
    statuses = {t["id"]: t["status"] for t in doc["tests"]}
    assert set(statuses.values()) == {"lost"}, statuses
    assert all("no worker left in the cluster for 2 s" in t["attempts"][0]["message"]
               for t in doc["tests"])
    assert "## Lost" in doc["_md"]
    assert not any((marks / t["id"]).exists() for t in tests)  # none ran to its end anywhere
    assert wait_until(lambda: not any(e.is_running() for e in executors), 20, 0.05)


def _certificates(home: Path) -> list[str]:
    """A CA and one certificate for 127.0.0.1 signed by it (scheduler, worker and harness share
    it here); the --tls-* arguments."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=home, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "2", "-subj", "/CN=fleet-test-ca")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "leaf.key", "-out", "leaf.csr",
            "-subj", "/CN=127.0.0.1")
    (home / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                  "extendedKeyUsage=serverAuth,clientAuth\n")
    openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "leaf.pem", "-days", "2", "-extfile", "ext.cnf")
    return ["--tls-ca-file", str(home / "ca.pem"), "--tls-cert", str(home / "leaf.pem"),
            "--tls-key", str(home / "leaf.key")]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make certificates")
def test_a_tls_cluster_runs_with_certificates_and_refuses_a_client_without(tmp_path):
    before = set(marked_pids())
    tls = _certificates(tmp_path)
    c = Cluster(tmp_path)
    try:
        c.start({"t": ["--slots", "2", *tls]}, scheduler=("--protocol", "tls", *tls))
        assert c.address.startswith("tls://")
        path = str(suite(tmp_path / "s.json", [sleeper(i, 0.1) for i in range(4)]))
        r = harness(path, "--cluster", c.address, *tls, out=tmp_path / "o")
        assert r.returncode == 0, r.stdout + r.stderr
        assert {t["status"] for t in report(tmp_path / "o")["tests"]} == {"passed"}
        plain = harness(path, "--cluster", c.address.replace("tls://", "tcp://"),
                        "--cluster-timeout", "2", out=tmp_path / "plain")
        assert plain.returncode == 3 and "cannot reach the Dask scheduler" in plain.stderr, plain.stderr
    finally:
        c.close()
    assert wait_until(lambda: not (set(marked_pids()) - before), 20, 0.1)
