"""Control latency behind an output backlog, against the same controls on a quiet connection.

    .venv/bin/python benchmarks/bench_control.py [--rounds N]

Two jobs flood stdout on one connection whose client has stopped reading, so every send of the
server to it waits (the backlog). The client then sends PAUSE and RESUME to the jobs in turn,
`--rounds` of each, and a CANCEL of each at the end. The latency of one control is the server's
own timestamp of the action (the event log's `at`: when the signal went to the process group)
minus the moment the client sent the frame; same host, same clock. The baseline, measured in
the same run on the same server: the same controls to two `sleep` jobs on a connection whose
client reads everything.

Target printed against: backlog p99 < 100 ms. The service runs with its default settings.
Exits 0 whatever the figures (a measurement, not a test).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import pct, service  # noqa: E402

FLOOD = ("import sys\nchunk = b'x' * 65536\n"
         "while True:\n    sys.stdout.buffer.write(chunk); sys.stdout.flush()\n")


class EventLog:
    """Tail of the service's JSON-lines event log: the `at` of each control, by (kind, job)."""

    def __init__(self, path: Path):
        self.path, self.offset, self.seen = path, 0, {}

    def poll(self) -> None:
        if not self.path.exists():
            return
        with open(self.path) as f:
            f.seek(self.offset)
            text = f.read()
        end = text.rfind("\n") + 1
        self.offset += len(text[:end].encode())
        for line in text[:end].splitlines():
            e = json.loads(line)
            if "at" in e:
                self.seen[(e["event"], e["job_id"], e["at"])] = e["at"]

    async def wait(self, kind: str, job_id: str, after: float, timeout: float = 10.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            hits = [at for (k, j, at) in self.seen if k == kind and j == job_id and at >= after]
            if hits:
                return min(hits)
            await asyncio.sleep(0.002)
        raise TimeoutError(f"{kind} of {job_id} not acted on within {timeout} s")


def blocked_in_write(pid: int) -> bool:
    try:
        return "pipe_write" in Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False


async def open_jobs(url: str, argv: list[str], reading: bool):
    ws = await connect(url, compression=None, max_queue=1, max_size=2**24, ping_interval=None)
    await ws.recv()  # connected
    for i in range(2):
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": i, "method": "execute",
                                  "params": {"args": argv}}))
    jobs: dict[int, tuple[str, int]] = {}
    ids: dict[str, int] = {}  # job_id -> request id, for jobs admission queued first
    deadline = time.monotonic() + 120
    while len(jobs) < 2:
        msg = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
        if "id" in msg:
            result = msg["result"]
            if "pid" in result:
                jobs[msg["id"]] = (result["job_id"], result["pid"])
            else:
                ids[result["job_id"]] = msg["id"]
        elif msg.get("method") == "process.started" and msg["params"]["job_id"] in ids:
            params = msg["params"]
            jobs[ids[params["job_id"]]] = (params["job_id"], params["pid"])
    reader = asyncio.create_task(drain(ws)) if reading else None
    return ws, [jobs[0], jobs[1]], reader


async def drain(ws) -> None:
    try:
        async for _ in ws:
            pass
    except Exception:
        pass


async def measure(ws, log: EventLog, jobs, rounds: int) -> list[float]:
    took, rid = [], 100
    for r in range(rounds):
        for kind in ("PAUSE", "RESUME"):
            job_id = jobs[r % 2][0]
            rid += 1
            sent = time.time()
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "method": "control",
                                      "params": {"type": kind, "job_id": job_id}}))
            took.append(await log.wait(kind.lower(), job_id, sent - 0.001) - sent)
    for job_id, _ in jobs:
        rid += 1
        sent = time.time()
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "method": "control",
                                  "params": {"type": "CANCEL", "job_id": job_id}}))
        took.append(await log.wait("cancel", job_id, sent - 0.001) - sent)
    return took


async def scenario(url: str, log: EventLog, rounds: int, backlog: bool) -> list[float]:
    argv = ["python3", "-c", FLOOD] if backlog else ["sleep", "60"]
    ws, jobs, reader = await open_jobs(url, argv, reading=not backlog)
    try:
        if backlog:
            deadline = time.monotonic() + 30
            while not all(blocked_in_write(pid) for _, pid in jobs):
                if time.monotonic() > deadline:
                    raise RuntimeError("the flood never backed up")
                await asyncio.sleep(0.05)
        return await measure(ws, log, jobs, rounds)
    finally:
        ws.transport.abort()
        if reader is not None:
            reader.cancel()


def report(name: str, took: list[float]) -> None:
    ms = [t * 1000 for t in took]
    print(f"{name:<28} n={len(ms):4d}  p50 {pct(ms, 0.50):7.2f} ms  p99 {pct(ms, 0.99):7.2f} ms"
          f"  max {max(ms):7.2f} ms")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=100, help="PAUSE/RESUME pairs per scenario")
    args = ap.parse_args()
    rounds = max(1, min(args.rounds, 10_000))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with service(["python3", "sleep"], work) as srv:
            log = EventLog(work / "logs" / "cc_executor.jsonl")
            quiet = await scenario(srv.url, log, rounds, backlog=False)
            backed = await scenario(srv.url, log, rounds, backlog=True)
    report("quiet connection (baseline)", quiet)
    report("behind an output backlog", backed)
    p99 = pct([t * 1000 for t in backed], 0.99)
    ratio = p99 / max(pct([t * 1000 for t in quiet], 0.99), 1e-6)
    print(f"backlog p99 / baseline p99 = {ratio:.2f}x; target p99 < 100 ms: "
          f"{'met' if p99 < 100 else 'NOT met'} ({p99:.2f} ms)")


if __name__ == "__main__":
    asyncio.run(main())
