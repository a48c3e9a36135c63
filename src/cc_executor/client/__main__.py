"""`python -m cc_executor.client -- CMD ARGS...`: run one command on a service, stream its output
to this terminal, and exit with its exit code."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import websockets

from .connection import DEFAULT_URL, ExecutorClient
from .errors import ExecutorError


async def _cli(ns: argparse.Namespace) -> int:
    client = await ExecutorClient.connect(ns.url, ns.token)
    try:
        job = await client.start(args=ns.cmd, cwd=ns.cwd, timeout=ns.timeout,
                                 stall_timeout=ns.stall_timeout)
        out, err = sys.stdout.buffer, sys.stderr.buffer
        end: dict = {}
        async for ev in job:
            if ev.kind == "output":
                f = out if ev.stream == "stdout" else err
                f.write(ev.data)
                f.flush()
            elif ev.kind == "completed":
                end = ev.params
        if end.get("reason") not in ("exited", None):
            print(f"cc_executor: job ended: {end.get('reason')}"
                  f"{' - ' + end['error'] if end.get('error') else ''}", file=sys.stderr)
        code = end.get("exit_code", 1)
        return code if code >= 0 else 128 - code
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cc_executor.client",
                                description="Run one command on a cc_executor service.")
    p.add_argument("--url", default=os.environ.get("CC_EXECUTOR_URL", DEFAULT_URL))
    p.add_argument("--token", default=os.environ.get("CC_EXECUTOR_TOKEN"))
    p.add_argument("--cwd")
    p.add_argument("--timeout", type=float)
    p.add_argument("--stall-timeout", type=float)
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    ns = p.parse_args(argv)
    if ns.cmd and ns.cmd[0] == "--":
        ns.cmd = ns.cmd[1:]
    if not ns.cmd:
        p.error("give the command after --")
    try:
        return asyncio.run(_cli(ns))
    except ExecutorError as e:
        print(f"cc_executor: {e}", file=sys.stderr)
        return 2
    except (OSError, websockets.InvalidHandshake, websockets.InvalidURI) as e:
        print(f"cc_executor: cannot connect to {ns.url}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
