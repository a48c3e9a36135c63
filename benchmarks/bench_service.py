"""The service end to end against websocketd and a plain pipe, measured in the same run.

    .venv/bin/python benchmarks/bench_service.py [--quick] [--figures 1,2,3,4] [--no-results]
                                                 [--no-websocketd] [--loop asyncio|uvloop]

Starts `python -m cc_executor --port 0` and, per figure, `websocketd` running the same command,
all on 127.0.0.1 with ephemeral ports, then takes four figures (see benchmarks/README.md):

1. `echo hi`: connect -> execute -> completion, p50/p90 over --echo-rounds, and its parts;
2. ~256 MiB of 76-character base64 lines, MiB/s, every byte sha256-checked;
3. one 16 MiB line, time to receive it intact;
4. 100 clients each running a command that prints 2,000 lines over ~2 s: wall time until all
   have every byte, and the server's peak RSS.

Ours is measured twice: through a minimal WebSocket client (`_common.MiniWs`, the same one
websocketd gets, so the client never sets the pace) and through `cc_executor.client` (what an
agent sees). Figure 1 adds a third pair, ours and websocketd each through an ordinary client
(`websockets`' own `connect`), which is what its <= 1.3x target is judged on. The sides run interleaved, round by round, so a noisy neighbour hurts them alike.
Prints a table and writes it to benchmarks/results.md. Exits 0 whatever the figures (a
measurement, not a test); 1 only when bytes arrived wrong or missing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import selectors
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common  # noqa: E402
from websockets.asyncio.client import connect as ws_connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from cc_executor.client import ExecutorClient  # noqa: E402

MiB = 1 << 20
LIMIT = 120.0  # no single measurement may take longer than this
perf = time.perf_counter


class WrongOutput(Exception):
    """The bytes received are not the bytes the command printed."""


def _check(name: str, n: int, digest: str, want: common.Payload) -> None:
    if n != want.size or digest != want.sha256:
        raise WrongOutput(f"{name}: got {n} bytes sha256 {digest[:16]}, want {want.size} bytes "
                          f"sha256 {want.sha256[:16]}")


# ---- one run of a command through each side ------------------------------------------------

@dataclass
class Marks:
    """Moments of one run, seconds after the client began to connect."""

    open: float = 0.0
    connected: float = 0.0
    reply: float = 0.0
    started: float = 0.0
    first: float = 0.0
    end: float = 0.0


class OursReader:
    """What both of our raw-protocol clients do with each message: time the marks, check and
    hash stdout, keep the completion. `feed(text)` returns the completion's params once it came."""

    def __init__(self, m: Marks, t0: float):
        self.m, self.t0 = m, t0
        self.h = hashlib.sha256()
        self.n = 0

    def feed(self, text: str | bytes) -> dict | None:
        m, msg = self.m, json.loads(text)
        method = msg.get("method")
        if method == "process.output":
            p = msg["params"]
            if not m.first:
                m.first = perf() - self.t0
            if p["type"] != "stdout":
                raise WrongOutput(f"stderr: {p['data'][:200]!r}")
            if p["offset"] != self.n:
                raise WrongOutput(f"offset {p['offset']} where {self.n} bytes had arrived")
            b64 = p.get("data_base64")
            data = base64.b64decode(b64) if b64 is not None else p["data"].encode()
            self.h.update(data)
            self.n += len(data)
        elif method == "process.completed":
            return msg["params"]
        elif method == "process.started":
            m.started = perf() - self.t0
        elif method == "connected":
            m.connected = perf() - self.t0
        elif "result" in msg:
            m.reply = perf() - self.t0
        elif "error" in msg:
            raise WrongOutput(f"execute refused: {msg['error']}")
        return None


async def ours_raw(url: str, want: common.Payload) -> Marks:
    """The minimal client (`common.MiniWs`) speaking our protocol: the server's cost, with the
    least client work that still parses every notification and checks every byte.

    It sends `execute` as soon as the upgrade is answered, without waiting for `connected`
    (the server reads it after sending `connected`): one round trip less than a client that
    waits, as a latency-minded client would do."""
    m = Marks()
    end = None
    t0 = perf()
    reader = OursReader(m, t0)
    ws = await common.MiniWs.connect(url)
    try:
        m.open = perf() - t0
        ws.send_text(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "execute",
                                 "params": {"args": want.argv}}))
        while end is None:
            batch = await ws.batch()
            if not batch:
                raise WrongOutput("the server closed the connection before the completion")
            for frame in batch:
                end = reader.feed(frame)
                if end is not None:
                    break
        m.end = perf() - t0
    finally:
        ws.close()
    if end["exit_code"] != 0:
        raise WrongOutput(f"ended without success: {end}")
    _check("ours (raw)", reader.n, reader.h.hexdigest(), want)
    return m


async def ours_client(url: str, want: common.Payload) -> Marks:
    """`cc_executor.client` as an agent uses it, streaming (hashing each batch as it comes)."""
    m = Marks()
    h = hashlib.sha256()
    n = 0
    end: dict = {}
    t0 = perf()
    client = await ExecutorClient.connect(url)
    m.open = m.connected = perf() - t0
    try:
        job = await client.start(args=want.argv)
        m.reply = perf() - t0
        async for ev in job:
            if ev.kind == "output":
                if not m.first:
                    m.first = perf() - t0
                if ev.stream != "stdout":
                    raise WrongOutput(f"stderr: {ev.data[:200]!r}")
                data = ev.data
                h.update(data)
                n += len(data)
            elif ev.kind == "started":
                m.started = perf() - t0
            elif ev.kind == "completed":
                end = ev.params
        m.end = perf() - t0
    finally:
        await client.close()
    if end.get("exit_code") != 0:
        raise WrongOutput(f"ended without success: {end}")
    _check("ours (client)", n, h.hexdigest(), want)
    return m


async def wsd(url: str, want: common.Payload) -> Marks:
    """websocketd through the same minimal client: one text frame per line, newline stripped;
    the server closing the connection ends the run."""
    m = Marks()
    h = hashlib.sha256()
    n = 0
    t0 = perf()
    ws = await common.MiniWs.connect(url)
    try:
        m.open = m.connected = m.reply = m.started = perf() - t0
        while batch := await ws.batch():
            if not n:
                m.first = perf() - t0
            chunk = b"\n".join(batch) + b"\n"
            h.update(chunk)
            n += len(chunk)
        m.end = perf() - t0
    finally:
        ws.close()
    _check("websocketd", n, h.hexdigest(), want)
    return m


async def ours_websockets(url: str, want: common.Payload) -> Marks:
    """An ordinary client: `websockets`' `connect`, `execute` sent once the upgrade is
    answered, every notification parsed, the completion ends the run (the close handshake is
    not timed: the job is over and its output in hand)."""
    m = Marks()
    end = None
    t0 = perf()
    reader = OursReader(m, t0)
    async with ws_connect(url, compression=None, max_size=None) as ws:
        m.open = perf() - t0
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "execute",
                                  "params": {"args": want.argv}}))
        while end is None:
            end = reader.feed(await ws.recv())
        m.end = perf() - t0
    if end["exit_code"] != 0:
        raise WrongOutput(f"ended without success: {end}")
    _check("ours (websockets)", reader.n, reader.h.hexdigest(), want)
    return m


async def wsd_websockets(url: str, want: common.Payload) -> Marks:
    """websocketd through the same ordinary client; its closing the connection ends the run."""
    m = Marks()
    h = hashlib.sha256()
    n = 0
    t0 = perf()
    async with ws_connect(url, compression=None, max_size=None) as ws:
        m.open = m.connected = m.reply = m.started = perf() - t0
        try:
            while True:
                line = await ws.recv(decode=False)
                if not n:
                    m.first = perf() - t0
                h.update(line + b"\n")
                n += len(line) + 1
        except ConnectionClosed:
            pass
        m.end = perf() - t0
    _check("websocketd (websockets)", n, h.hexdigest(), want)
    return m


async def plain(_url: str, want: common.Payload) -> Marks:
    """The floor: spawn with a pipe, read to EOF, reap. Blocking on purpose (no loop cost)."""
    m = Marks()
    h = hashlib.sha256()
    n = 0
    t0 = perf()
    proc = subprocess.Popen(want.argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            bufsize=0)
    while chunk := proc.stdout.read(1 << 20):
        if not n:
            m.first = perf() - t0
        h.update(chunk)
        n += len(chunk)
    rc = proc.wait()
    m.end = perf() - t0
    proc.stdout.close()
    if rc != 0:
        raise WrongOutput(f"plain: exit status {rc}")
    _check("plain", n, h.hexdigest(), want)
    return m


async def plain_many(want: common.Payload, clients: int) -> float:
    """`clients` children at once, every pipe drained by one selector, until all are reaped."""
    t0 = perf()
    sel = selectors.DefaultSelector()
    procs = []
    state: dict[int, tuple[hashlib._Hash, list[int]]] = {}
    for _ in range(clients):
        p = subprocess.Popen(want.argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                             bufsize=0)
        procs.append(p)
        fd = p.stdout.fileno()
        state[fd] = (hashlib.sha256(), [0])
        sel.register(fd, selectors.EVENT_READ)
    open_fds = len(procs)
    deadline = time.monotonic() + LIMIT
    while open_fds and time.monotonic() < deadline:
        for key, _ in sel.select(1.0):
            data = os.read(key.fd, 1 << 20)
            h, count = state[key.fd]
            if data:
                h.update(data)
                count[0] += len(data)
            else:
                sel.unregister(key.fd)
                open_fds -= 1
    for p in procs:
        p.wait(LIMIT)
    wall = perf() - t0
    for p in procs:
        h, count = state[p.stdout.fileno()]
        p.stdout.close()
        _check("plain", count[0], h.hexdigest(), want)
    sel.close()
    return wall


Side = Callable[[str, common.Payload], Awaitable[Marks]]


async def bounded(coro: Awaitable, what: str):
    try:
        return await asyncio.wait_for(coro, LIMIT)
    except asyncio.TimeoutError:
        raise WrongOutput(f"{what}: no end after {LIMIT:.0f}s") from None


# ---- figures --------------------------------------------------------------------------------

@dataclass
class Row:
    figure: str
    unit: str
    ours: float | None
    wsd: float | None
    plain: float | None
    target: str
    ok: bool | None  # None: no baseline to compare with
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """Against websocketd; against the plain pipe when there is no websocketd figure."""
        base = self.wsd or self.plain
        if self.ours is None or not base:
            return None
        return self.ours / base


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _rotate(items: list, i: int) -> list:
    k = i % len(items)
    return items[k:] + items[:k]


async def figure_echo(report: Report, service: common.Server, wsd_srv: common.Server | None,
                      rounds: int, payload: common.Payload, floor: common.Server) -> None:
    sides: dict[str, tuple[Side, str, int | None]] = {
        "ours (raw)": (ours_raw, service.url, service.pid),
        "ours (client)": (ours_client, service.url, service.pid),
        "ours (websockets)": (ours_websockets, service.url, service.pid),
        "stack floor (websockets)": (ours_websockets, floor.url, floor.pid),
        "plain": (plain, "", None)}
    if wsd_srv:
        sides["websocketd"] = (wsd, wsd_srv.url, wsd_srv.pid)
        sides["websocketd (websockets)"] = (wsd_websockets, wsd_srv.url, wsd_srv.pid)
    marks: dict[str, list[Marks]] = {name: [] for name in sides}
    cpu: dict[str, float] = {name: 0.0 for name in sides}  # server process CPU, seconds
    for _ in range(10):  # warm: imports, page cache, the server's first-use paths
        for fn, url, _pid in sides.values():
            await bounded(fn(url, payload), "warm-up")
    names = list(sides)
    for i in range(rounds):
        for name in _rotate(names, i):
            fn, url, pid = sides[name]
            c0 = common.cpu_seconds(pid)
            marks[name].append(await bounded(fn(url, payload), name))
            cpu[name] += common.cpu_seconds(pid) - c0

    def q(name: str, qq: float, attr: str = "end") -> float | None:
        if name not in marks:
            return None
        return common.pct([getattr(m, attr) for m in marks[name]], qq) * 1e3

    # Each of ours against websocketd through the same client; the target (<= 1.3x)
    # is for an ordinary client, the others are shown against the same bar.
    for variant, against in (("ours (websockets)", "websocketd (websockets)"),
                             ("ours (raw)", "websocketd"), ("ours (client)", "websocketd")):
        for label, qq in (("p50", 0.5), ("p90", 0.9)):
            ours, base = q(variant, qq), q(against, qq)
            target = "<= 1.3x websocketd" if label == "p50" else "-"
            ok = None if base is None or label != "p50" else ours <= 1.3 * base
            report.rows.append(Row(f"echo hi, connect -> end, {label}, {variant}", "ms",
                                   ours, base, q("plain", qq), target, ok))
    # The same protocol on the same stack without our machinery (`stack_floor.py`): what the
    # stack and the protocol cost by themselves, and what the service adds to them.
    for label, qq in (("p50", 0.5), ("p90", 0.9)):
        report.rows.append(Row(f"echo hi, connect -> end, {label}, stack floor (websockets)",
                               "ms", q("stack floor (websockets)", qq),
                               q("websocketd (websockets)", qq), q("plain", qq), "-", None))
    ours, floor_p50 = q("ours (websockets)", 0.5), q("stack floor (websockets)", 0.5)
    report.details.append(
        f"Ours (websockets) against the stack floor, p50: {ours:.2f} / {floor_p50:.2f} ms = "
        f"{ours / floor_p50:.2f}x; the floor against websocketd is the row above.")

    def part(name: str, start: str, stop: str) -> str:
        ms = [getattr(m, stop) - (getattr(m, start) if start else 0.0) for m in marks[name]]
        return f"{statistics.median(ms) * 1e3:.2f}"

    # Where the time goes: the median of each part, run by run. For ours the request is sent
    # as soon as the upgrade is answered (raw) or after `connected` (client), so "spawn" is
    # request -> reply: decode, allow-list, spawn, registry, event log, the reply frame.
    lines = [f"`echo hi`, where the time goes (median ms of each part over {rounds} runs; "
             "server CPU is the server process alone, children excluded):", "",
             "| side | handshake | -> execute reply (spawn) | -> first output | -> end "
             "| total | server CPU per run |", "|---|---|---|---|---|---|---|"]
    for name in ("ours (websockets)", "ours (raw)", "ours (client)", "stack floor (websockets)",
                 "websocketd (websockets)", "websocketd", "plain"):
        if name not in marks:
            continue
        server_cpu = "-" if sides[name][2] is None else f"{cpu[name] / rounds * 1e3:.2f}"
        if name.startswith(("ours", "stack floor")):
            cells = [part(name, "", "open"), part(name, "open", "reply"),
                     part(name, "reply", "first"), part(name, "first", "end")]
        elif name.startswith("websocketd"):
            cells = [part(name, "", "open"), "(with first output)", part(name, "open", "first"),
                     part(name, "first", "end")]
        else:
            cells = ["-", "(with first output)", part(name, "", "first"),
                     part(name, "first", "end")]
        lines.append(f"| {name} | " + " | ".join([*cells, part(name, "", "end"), server_cpu])
                     + " |")
    report.details.append("\n".join(lines))


async def figure_stream(report: Report, title: str, unit: str, service: str,
                        wsd_url: str | None, rounds: int, payload: common.Payload,
                        throughput: bool, target_ratio: float,
                        wsd_payload: common.Payload | None = None) -> None:
    """`wsd_payload`: a smaller input of the same shape for websocketd, whose one frame per
    line makes 256 MiB take minutes; a rate does not depend on the size once past start-up."""
    wsd_payload = wsd_payload or payload
    sides: dict[str, tuple[Side, str]] = {"ours (raw)": (ours_raw, service),
                                          "ours (client)": (ours_client, service),
                                          "plain": (plain, "")}
    if wsd_url:
        sides["websocketd"] = (wsd, wsd_url)
    times: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for i in range(rounds):
        for name in _rotate(names, i):
            fn, url = sides[name]
            given = wsd_payload if name == "websocketd" else payload
            times[name].append((await bounded(fn(url, given), name)).end)

    def fig(name: str) -> float | None:
        if name not in times:
            return None
        t = statistics.median(times[name])
        size = (wsd_payload if name == "websocketd" else payload).size
        return size / t / MiB if throughput else t * 1e3

    for variant in ("ours (raw)", "ours (client)"):
        ours, base = fig(variant), fig("websocketd")
        if throughput:
            target = f">= {target_ratio:g}x websocketd"
            ok = None if base is None else ours >= target_ratio * base
        else:
            target = f"<= {target_ratio:g}x websocketd"
            ok = None if base is None else ours <= target_ratio * base
        report.rows.append(Row(f"{title}, {variant}", unit, ours, base, fig("plain"),
                               target, ok))


async def many(fn: Side, url: str, payload: common.Payload, clients: int) -> float:
    t0 = perf()
    await bounded(asyncio.gather(*(fn(url, payload) for _ in range(clients))), "many clients")
    return perf() - t0


async def figure_many(report: Report, service: common.Server, wsd_srv: common.Server | None,
                      rounds: int, payload: common.Payload, clients: int) -> None:
    walls: dict[str, list[float]] = {"ours (raw)": [], "ours (client)": [], "websocketd": [],
                                     "plain": []}
    rss: dict[str, list[int]] = {"ours (raw)": [], "ours (client)": [], "websocketd": []}
    cpu: dict[str, list[float]] = {name: [] for name in walls}
    for i in range(rounds):
        order = ["ours (raw)", "ours (client)", "websocketd", "plain"]
        for name in _rotate(order, i):
            c0 = time.process_time()
            if name == "plain":
                walls[name].append(await plain_many(payload, clients))
            elif name.startswith("websocketd"):
                if wsd_srv is None:
                    continue
                with common.PeakRss(wsd_srv.pid) as peak:
                    walls[name].append(await many(wsd, wsd_srv.url, payload, clients))
                rss[name].append(peak.peak)
            else:
                fn = ours_raw if name == "ours (raw)" else ours_client
                with common.PeakRss(service.pid) as peak:
                    walls[name].append(await many(fn, service.url, payload, clients))
                rss[name].append(peak.peak)
            cpu[name].append(time.process_time() - c0)

    def med(d: dict, name: str, scale: float = 1.0) -> float | None:
        return statistics.median(d[name]) * scale if d.get(name) else None

    title = f"{clients} clients x {payload.size // 77:,} lines over ~2 s"
    for variant in ("ours (raw)", "ours (client)"):
        ours, base = med(walls, variant), med(walls, "websocketd")
        report.rows.append(Row(f"{title}, wall, {variant}", "s", ours, base,
                               med(walls, "plain"), "<= 1.1x websocketd",
                               None if base is None else ours <= 1.1 * base))
        peak = max(rss[variant]) / MiB
        report.rows.append(Row(f"{title}, server peak RSS, {variant}", "MiB", peak,
                               max(rss["websocketd"]) / MiB if rss["websocketd"] else None,
                               None, "<= 100 MiB", peak <= 100))
    report.details.append(
        f"{title}: CPU seconds the benchmark's own client process used per run (median): " +
        ", ".join(f"{name} {med(cpu, name):.2f}" for name in walls if cpu[name]) +
        ". The clients share the 2 cores with the servers and the producers.")


# ---- output -----------------------------------------------------------------------------------

def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 1000 else f"{v:.2f}" if v < 100 else f"{v:.1f}"


def render(report: Report, info: dict[str, str], argv: list[str]) -> tuple[str, str]:
    head = ["figure", "unit", "ours", "websocketd", "plain", "ratio", "target", "result"]
    body = []
    for r in report.rows:
        verdict = "-" if r.ok is None else "PASS" if r.ok else "MISS"
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x"
        body.append([r.figure, r.unit, _fmt(r.ours), _fmt(r.wsd), _fmt(r.plain), ratio,
                     r.target, verdict])
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    text = "\n".join(
        "  ".join(c.ljust(w) if i in (0, 1, 6) else c.rjust(w) for i, (c, w) in
                  enumerate(zip(row, widths)))
        for row in [head, *body])
    md = ["# Service benchmark: latest results", "",
          "Written by `benchmarks/bench_service.py` (see `benchmarks/README.md` for what each "
          "figure means). Command: `" + " ".join(["benchmarks/bench_service.py", *argv]) + "`.",
          ""]
    md += [f"- {k}: {v}" for k, v in info.items()]
    md += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(row) + " |" for row in body]
    for d in report.details:
        md += ["", d]
    if report.errors:
        md += ["", "Errors:", ""] + [f"- {e}" for e in report.errors]
    return text, "\n".join(md) + "\n"


# ---- main -------------------------------------------------------------------------------------

async def run(ns: argparse.Namespace) -> Report:
    report = Report()
    figures = {int(x) for x in ns.figures.split(",")}
    have_wsd = common.websocketd_path() is not None and not ns.no_websocketd
    if not have_wsd:
        why = "left out (--no-websocketd)" if ns.no_websocketd else \
            "not installed (apt-get install websocketd)"
        msg = f"websocketd is {why}: ratios are against the plain pipe, targets not judged"
        print(msg, file=sys.stderr)
        report.errors.append(msg)
    with common.workdir() as tmp:
        echo = common.Payload(["echo", "hi"], 3, hashlib.sha256(b"hi\n").hexdigest())
        allow = ["echo", "base64", "cat", "perl"]
        with common.service(allow, tmp, *ns.service_arg) as srv:
            print(f"service: {srv.url} (pid {srv.pid})", file=sys.stderr)

            async def with_wsd(payload: common.Payload | None, body) -> None:
                if not have_wsd:
                    await body(None)
                    return
                with common.websocketd(payload.argv, tmp) as w:
                    await body(w)

            steps = []
            if 1 in figures:
                async def echo_figure(w: common.Server | None) -> None:
                    with common.stack_floor(tmp) as floor:
                        await figure_echo(report, srv, w, ns.echo_rounds, echo, floor)
                steps.append(("1 echo", echo, echo_figure))
            if 2 in figures:
                lines = common.b64_lines(tmp, ns.mib)
                wsd_lines = lines if ns.wsd_mib >= ns.mib else common.b64_lines(tmp, ns.wsd_mib)
                title = f"{lines.size / MiB:.0f} MiB of 76-char lines"
                if wsd_lines is not lines:
                    title += f" (websocketd: {wsd_lines.size / MiB:.0f} MiB)"
                steps.append(("2 stream", wsd_lines, lambda w: figure_stream(
                    report, title, "MiB/s", srv.url, w and w.url, ns.rounds, lines, True, 5.0,
                    wsd_lines)))
            if 3 in figures:
                line = common.one_line(tmp, ns.line_mib)
                steps.append(("3 one line", line, lambda w: figure_stream(
                    report, f"one {ns.line_mib} MiB line", "ms", srv.url, w and w.url,
                    ns.rounds, line, False, 2.0)))
            if 4 in figures:
                paced = common.paced_lines(tmp, ns.lines, ns.seconds)
                steps.append(("4 many", paced, lambda w: figure_many(
                    report, srv, w, ns.rounds, paced, ns.clients)))
            for name, payload, body in steps:
                t0 = perf()
                try:
                    await with_wsd(payload, body)
                except WrongOutput as e:
                    report.errors.append(f"figure {name}: {e}")
                    print(f"figure {name}: WRONG: {e}", file=sys.stderr)
                print(f"figure {name}: {perf() - t0:.1f}s", file=sys.stderr)
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="small sizes and few rounds, to try a change (~30 s); no results.md")
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio",
                    help="the clients' event loop (the service always picks its own)")
    ap.add_argument("--figures", default="1,2,3,4", help="which figures, e.g. 2,3")
    ap.add_argument("--echo-rounds", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3, help="runs per side for figures 2-4")
    ap.add_argument("--mib", type=int, default=256, help="figure 2: MiB of base64 (before "
                    "newlines)")
    ap.add_argument("--wsd-mib", type=int, default=64, help="figure 2: MiB for websocketd's "
                    "side (its rate, one frame per line, would make 256 MiB take minutes)")
    ap.add_argument("--line-mib", type=int, default=16, help="figure 3: MiB in the line")
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--lines", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--service-arg", action="append", default=[],
                    help="extra flag for `python -m cc_executor` (repeatable)")
    ap.add_argument("--no-websocketd", action="store_true",
                    help="compare with the plain pipe only, as when websocketd is missing")
    ap.add_argument("--results", default=str(Path(__file__).with_name("results.md")))
    ap.add_argument("--no-results", action="store_true", help="do not write results.md")
    argv = sys.argv[1:]
    ns = ap.parse_args(argv)
    if ns.quick:
        ns.echo_rounds, ns.rounds, ns.mib, ns.wsd_mib = 50, 1, 32, 16
        ns.no_results = True
    t0 = perf()
    load_before = os.getloadavg()[0]
    if ns.loop == "uvloop":
        import uvloop
        report = uvloop.run(run(ns))
    else:
        report = asyncio.run(run(ns))
    info = common.machine_info(ns.loop)
    info["benchmark wall time"] = f"{perf() - t0:.0f} s"
    info["1-min load average, start / end"] = (
        f"{load_before:.2f} / {os.getloadavg()[0]:.2f} (other work on the host skews the "
        "absolute figures; the sides run interleaved so the ratios suffer less)")
    text, md = render(report, info, argv)
    print(text)
    for d in report.details:
        print()
        print(d)
    for e in report.errors:
        print(f"ERROR: {e}")
    if not ns.no_results:
        Path(ns.results).write_text(md)
        print(f"\nwritten to {ns.results}")
    wrong = [e for e in report.errors if not e.startswith("websocketd is ")]
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
