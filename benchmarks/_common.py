"""What the service benchmarks share: starting the servers, the inputs, and the bookkeeping.

Kept apart from `bench_service.py` so that each benchmark script reads as a list of figures,
not as process plumbing. Everything here runs on 127.0.0.1 with ephemeral ports, and every
process it starts is ended by pid (never by name) when its context exits.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def pct(values: list[float], q: float) -> float:
    """The q-quantile by nearest rank: no interpolation, so it is always a measured value."""
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def free_port() -> int:
    """A port the kernel just gave out. For websocketd, which reads `--port=0` as port 80."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with status {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.01)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM by pid, wait, then SIGKILL: ours shuts down gracefully, websocketd at once."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class Server:
    proc: subprocess.Popen
    url: str

    @property
    def pid(self) -> int:
        return self.proc.pid


@contextlib.contextmanager
def service(allow: list[str], workdir: Path, *extra: str) -> Iterator[Server]:
    """`python -m cc_executor --port 0`, as a user starts it, with its default settings
    (admission included: a benchmark that switched it off would hide what users get); yields
    once it printed its URL.
    """
    argv = [PYTHON, "-m", "cc_executor", "--port", "0",
            "--log-dir", str(workdir / "logs"), "--run-dir", str(workdir / "run"),
            "--env-file", str(workdir / "no.env"), *extra]
    for name in allow:
        argv += ["--allow", name]
    with _url_server(argv, workdir, "service") as server:
        yield server


@contextlib.contextmanager
def stack_floor(workdir: Path) -> Iterator[Server]:
    """`stack_floor.py`: our protocol's least on our stack, none of our machinery (see there)."""
    argv = [PYTHON, str(Path(__file__).with_name("stack_floor.py"))]
    with _url_server(argv, workdir, "stack_floor") as server:
        yield server


@contextlib.contextmanager
def _url_server(argv: list[str], workdir: Path, name: str) -> Iterator[Server]:
    """Start a server that prints its ws:// URL first; stop it (by pid) on the way out."""
    err = open(workdir / f"{name}.stderr", "wb")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                            cwd=workdir)
    try:
        url = _first_line(proc, 30.0)
        if not url.startswith("ws://"):
            raise RuntimeError(f"{name} printed {url!r}, not its URL; see {err.name}")
        yield Server(proc, url)
    finally:
        stop(proc)
        err.close()


def _first_line(proc: subprocess.Popen, timeout: float) -> str:
    box: list[bytes] = []
    t = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)
    t.start()
    t.join(timeout)
    if not box:
        raise TimeoutError(f"the service printed nothing in {timeout}s")
    return box[0].decode().strip()


def websocketd_path() -> str | None:
    return shutil.which("websocketd")


@contextlib.contextmanager
def websocketd(argv: list[str], workdir: Path) -> Iterator[Server]:
    """websocketd serving `argv` (one process per connection, one text frame per line)."""
    exe = websocketd_path()
    assert exe, "websocketd is not installed"
    port = free_port()
    err = open(workdir / f"websocketd-{port}.stderr", "wb")
    proc = subprocess.Popen([exe, f"--port={port}", "--address=127.0.0.1", "--loglevel=error",
                             *argv], stdout=subprocess.DEVNULL, stderr=err,
                            stdin=subprocess.DEVNULL)
    try:
        wait_port(port, proc, 10.0)
        yield Server(proc, f"ws://127.0.0.1:{port}/")
    finally:
        stop(proc, 5.0)
        err.close()


def websocketd_version() -> str:
    exe = websocketd_path()
    if not exe:
        return "not installed"
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "websocketd"],
                             capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out = ""
    return out or "unknown version"


class PeakRss:
    """Samples one process's RSS every `interval` in a thread; `peak` is the highest seen."""

    def __init__(self, pid: int, interval: float = 0.01):
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


@dataclass(frozen=True)
class Payload:
    """A file a command prints, and what the receiver must end up with."""

    argv: list[str]
    size: int
    sha256: str


def b64_lines(workdir: Path, mib: int, seed: int = 20240501) -> Payload:
    """`base64 -w 76` of seeded random bytes: ~`mib` MiB of 76-character lines.

    Python's `base64.encodebytes` wraps at 76 too, so the expected digest is computed here,
    independently of the producer.
    """
    raw = mib * (1 << 20) * 3 // 4 // 57 * 57  # whole 57-byte groups: every line is full
    path = workdir / f"random-{mib}.bin"
    data = random.Random(seed).randbytes(raw)
    path.write_bytes(data)
    encoded = base64.encodebytes(data)
    return Payload(["base64", "-w", "76", str(path)], len(encoded),
                   hashlib.sha256(encoded).hexdigest())


def one_line(workdir: Path, mib: int, seed: int = 16) -> Payload:
    """One line of `mib` MiB (base64 alphabet, no newline inside) plus its newline."""
    n = mib * (1 << 20)
    data = base64.b64encode(random.Random(seed).randbytes(n * 3 // 4 + 3))[:n] + b"\n"
    path = workdir / f"line-{mib}.txt"
    path.write_bytes(data)
    return Payload(["cat", str(path)], len(data), hashlib.sha256(data).hexdigest())


PACED_SCRIPT = r"""
use strict; use Time::HiRes qw(time sleep);
$| = 1;
my ($n, $secs, $burst, $pad) = @ARGV;
my $t0 = time;
for (my $i = 0; $i < $n; $i += $burst) {
    my $wait = $t0 + $i * $secs / $n - time;
    sleep($wait) if $wait > 0;
    for my $j ($i .. ($i + $burst < $n ? $i + $burst : $n) - 1) {
        printf "%08d %s\n", $j, $pad;
    }
}
"""
PACED_PAD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=+a"  # 67


def paced_lines(workdir: Path, lines: int, seconds: float, burst: int = 10) -> Payload:
    """A perl script printing `lines` 77-byte lines, `burst` at a time, evenly over `seconds`,
    each line written (flushed) on its own. Perl starts in ~2 ms; a Python producer would put
    100 interpreter start-ups into the figure."""
    path = workdir / "paced.pl"
    path.write_text(PACED_SCRIPT)
    data = "".join(f"{j:08d} {PACED_PAD}\n" for j in range(lines)).encode()
    assert len(data) == lines * 77
    return Payload(["perl", str(path), str(lines), str(seconds), str(burst), PACED_PAD], len(data),
                   hashlib.sha256(data).hexdigest())


def machine_info(loop_name: str) -> dict[str, str]:
    import uvicorn
    import websockets

    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uvicorn / websockets": f"{uvicorn.__version__} / {websockets.__version__}",
        "websocketd": websocketd_version(),
        "client event loop": loop_name,
    }


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    """Inputs live in /dev/shm when it exists: the producers then never wait for a disk."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="cc_exec_bench_", dir=base) as tmp:
        yield Path(tmp)


# ---- a minimal WebSocket client ------------------------------------------------------------

class MiniWs(asyncio.Protocol):
    """The least a WebSocket client can do per frame, so the client never sets the pace.

    Why not the `websockets` library: websocketd sends one frame per line (3.5 million frames
    for figure 2) and the library spends ~20 us on each, which would measure the client, not
    the server. Here one `data_received` call parses every complete frame in the chunk, and the
    reader wakes once per chunk (`batch()`), not once per frame. Enough of RFC 6455 for these
    benchmarks: text/binary messages (fragmented or not), ping -> pong, close -> close.
    """

    def __init__(self, max_pending: int = 8 << 20):
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._handshake = True
        self._opened: asyncio.Future = asyncio.get_running_loop().create_future()
        self._ready: list = []
        self._pending_bytes = 0
        self._max_pending = max_pending
        self._paused = False
        self._waiter: asyncio.Future | None = None
        self._fragments: list[bytes] = []
        self._frag_op = 0
        self.closed = False

    @classmethod
    async def connect(cls, url: str, timeout: float = 10.0) -> "MiniWs":
        rest = url.split("://", 1)[1]
        hostport, _, path = rest.partition("/")
        host, _, port = hostport.rpartition(":")
        loop = asyncio.get_running_loop()
        _, proto = await asyncio.wait_for(
            loop.create_connection(cls, host, int(port)), timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        proto.transport.write(
            f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n".encode())
        await asyncio.wait_for(proto._opened, timeout)
        return proto

    # -- asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc) -> None:
        self.closed = True
        if not self._opened.done():
            self._opened.set_exception(ConnectionError(f"closed during the handshake: {exc}"))
        self._wake()

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if self._handshake:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[:buf.find(b"\r\n")])
            del buf[:end + 4]
            self._handshake = False
            if b" 101 " not in status:
                self._opened.set_exception(ConnectionError(f"upgrade refused: {status!r}"))
                self.transport.close()
                return
            self._opened.set_result(None)
        ready = self._ready
        i, n = 0, len(buf)
        while n - i >= 2:
            b0, b1 = buf[i], buf[i + 1]
            size = b1 & 0x7F
            head = 2
            if size == 126:
                if n - i < 4:
                    break
                size = int.from_bytes(buf[i + 2:i + 4], "big")
                head = 4
            elif size == 127:
                if n - i < 10:
                    break
                size = int.from_bytes(buf[i + 2:i + 10], "big")
                head = 10
            if n - i < head + size:
                break
            payload = bytes(buf[i + head:i + head + size])
            i += head + size
            op = b0 & 0x0F
            if op in (1, 2) and b0 & 0x80:
                ready.append(payload)
                self._pending_bytes += size
            elif op in (0, 1, 2):
                if op:
                    self._frag_op = op
                self._fragments.append(payload)
                if b0 & 0x80:
                    ready.append(b"".join(self._fragments))
                    self._pending_bytes += len(ready[-1])
                    self._fragments = []
            elif op == 9:
                self._send_frame(0xA, payload)
            elif op == 8:
                if not self.closed:
                    self._send_frame(0x8, payload[:2])
                self.transport.close()
                self.closed = True
                break
        del buf[:i]
        if ready:
            self._wake()
            if self._pending_bytes > self._max_pending and not self._paused:
                self._paused = True
                self.transport.pause_reading()

    # -- use
    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def batch(self) -> list[bytes]:
        """Every message that arrived since the last call, in order; [] once closed."""
        while not self._ready and not self.closed:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        out, self._ready = self._ready, []
        self._pending_bytes = 0
        if self._paused:
            self._paused = False
            self.transport.resume_reading()
        return out

    def send_text(self, text: str) -> None:
        self._send_frame(0x1, text.encode())

    def _send_frame(self, op: int, payload: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        n = len(payload)
        head = bytes([0x80 | op])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
        else:
            head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
        mask = os.urandom(4)
        full = (mask * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(full, "big")).to_bytes(n, "big")
        self.transport.write(head + mask + masked)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._send_frame(0x8, (1000).to_bytes(2, "big"))
            self.transport.close()
        self.closed = True


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU of one process so far (0 for None): what a server spent on a run."""
    if pid is None:
        return 0.0
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system
