"""A network blip under a harness run fails no test (issue 11): the harness's connection resumes.

Between the harness (`python -m stress.local --server ...`) and a real service sits a loopback
TCP relay of our own; mid-run it resets every connection through it at once, as a flaky network
would. The harness reconnects and re-attaches its jobs (`ExecutorClient(resume=True)`): every
test passes, each ran exactly once (no retry: its side effect happened once), and the output
the report keeps is whole.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

from conftest import REPO, wait_until
from test_harness_scale import Run, suite_file


def marked_tests(marks: Path, prefix: str, n: int, seconds: float) -> list[dict]:
    """Tests that leave a side effect: "start" and "end" lines in marks/<id>."""
    marks.mkdir(exist_ok=True)
    return [{"id": f"{prefix}{i}", "expected_patterns": [f"done-{i}"], "timeout": 30,
             "command": f"echo start >> {marks}/{prefix}{i}; sleep {seconds}; "
                        f"echo end >> {marks}/{prefix}{i}; echo done-{i}"} for i in range(n)]


def side_effects(marks: Path, ids: list[str]) -> dict[str, list[str]]:
    return {i: (marks / i).read_text().split() if (marks / i).exists() else [] for i in ids}


class Relay:
    """127.0.0.1:<port> -> the service, in a thread with its own loop; `cut()` resets every
    connection relayed so far (RST both ways: SO_LINGER 0 via transport.abort)."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.loop = asyncio.new_event_loop()
        self.pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self.accepted = 0
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _serve(self, reader, writer) -> None:
        self.accepted += 1
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.pairs.append((writer, up_w))

        async def pipe(src, dst):
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

    def cut(self) -> int:
        """Reset every relayed connection now; returns how many there were."""
        async def reset() -> int:
            pairs, self.pairs = self.pairs, []
            for a, b in pairs:
                for w in (a, b):
                    sock = w.get_extra_info("socket")
                    try:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))
                    except (OSError, AttributeError):  # that side is closed already
                        pass
                    w.transport.abort()
            return len(pairs)
        return asyncio.run_coroutine_threadsafe(reset(), self.loop).result(10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_a_network_blip_mid_run_fails_no_test_and_reruns_nothing(tmp_path, executor_service):
    svc = executor_service(allow=["sh"])
    relay = Relay(svc.port)
    try:
        marks = tmp_path / "marks"
        tests = marked_tests(marks, "n", 4, 1.5)
        for t in tests:  # output before and after the blip, all of which the report must keep
            t["command"] = t["command"].replace("sleep 1.5;", "seq 1 200; sleep 1.5; seq 201 400;")
        s = suite_file(tmp_path / "n.json", "blip", tests)
        argv = [sys.executable, "-m", "stress.local", str(s), "--out", str(tmp_path / "out"),
                "--max-load", "1000", "--quiet", "--concurrency", "4",
                "--server", f"ws://127.0.0.1:{relay.port}/ws"]
        proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, stdin=subprocess.DEVNULL)
        try:
            def streaming() -> bool:  # every job's reply and first output reached the harness
                files = list((tmp_path / "out").glob("*/outputs/n*.stdout"))
                return len(files) == 4 and all(b"200\n" in f.read_bytes() for f in files)

            assert wait_until(streaming, 60, 0.02), "the tests never started"
            assert relay.cut() >= 1
            out, err = proc.communicate(timeout=90)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        assert proc.returncode == 0, out + err
        assert relay.accepted >= 2  # it did reconnect through the relay
        r = Run.only(tmp_path / "out")
        assert {t["status"] for t in r.json["tests"]} == {"passed"}
        effects = side_effects(marks, [f"n{i}" for i in range(4)])
        assert all(e == ["start", "end"] for e in effects.values()), effects  # once each
        for i in range(4):
            text = next((tmp_path / "out").glob(f"*/outputs/n{i}.stdout")).read_text()
            assert text == "".join(f"{k}\n" for k in range(1, 401)) + f"done-{i}\n"
    finally:
        relay.close()
