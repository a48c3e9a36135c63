"""`python -m cc_executor.client -- CMD ARGS...`: run one command on a service, stream its output
to this terminal, and exit with its exit code."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

import websockets

from .connection import DEFAULT_URL, ExecutorClient
from .errors import ExecutorError

NOT_LOGGED_IN = b"Not logged in"
NOT_LOGGED_IN_HINT = (
    "cc_executor: the Claude CLI on the service has no credentials. Either give it real ones "
    "(ANTHROPIC_API_KEY in the service's environment, or run `claude` and /login as the "
    "service's user) and restart the service, or try it with a simulated model: "
    "`./dev serve --model local`.")
EPILOG = """\
The command runs on the service, not here: it must be on the service's allow-list (--allow on
the service; `claude` by default). Exit status: the command's own; 128+N when a signal N ended
it; 2 when the service could not be reached or refused the request.

Example (with `python -m cc_executor --allow echo` running):
  python -m cc_executor.client -- echo hello
"""


class _Watch:
    """Looks for the CLI's "Not logged in" across output chunks (it may be split)."""

    def __init__(self) -> None:
        self.tail = b""
        self.seen = False

    def feed(self, data: bytes) -> None:
        if not self.seen:
            window = self.tail + data
            self.seen = NOT_LOGGED_IN in window
            self.tail = window[-len(NOT_LOGGED_IN):]


async def _cli(ns: argparse.Namespace) -> int:
    client = await ExecutorClient.connect(ns.url, ns.token)
    try:
        job = await client.start(args=ns.cmd, cwd=ns.cwd, timeout=ns.timeout,
                                 stall_timeout=ns.stall_timeout)
        out, err = sys.stdout.buffer, sys.stderr.buffer
        end: dict = {}
        watch = _Watch()
        async for ev in job:
            if ev.kind == "output":
                f = out if ev.stream == "stdout" else err
                f.write(ev.data)
                f.flush()
                watch.feed(ev.data)
            elif ev.kind == "completed":
                end = ev.params
        if end.get("reason") not in ("exited", None):
            print(f"cc_executor: job ended: {end.get('reason')}"
                  f"{' - ' + end['error'] if end.get('error') else ''}", file=sys.stderr)
        code = end.get("exit_code", 1)
        if watch.seen and code != 0:
            print(NOT_LOGGED_IN_HINT, file=sys.stderr)
        return code if code >= 0 else 128 - code
    finally:
        await client.close()


def refusal_text(e: websockets.InvalidStatus) -> str:
    """`HTTP 401: missing token ...`: the status and what the service's body says about it."""
    response = e.response
    body = (response.body or b"").decode(errors="replace").strip()
    try:
        said = json.loads(body).get("error") or body
    except (ValueError, AttributeError):
        said = body
    text = f"HTTP {response.status_code}" + (f": {said}" if said else "")
    if response.status_code == 401:
        text += " (give the service's token with --token or CC_EXECUTOR_TOKEN)"
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cc_executor.client",
                                description="Run one command on a cc_executor service and stream "
                                            "its output here.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=os.environ.get("CC_EXECUTOR_URL", DEFAULT_URL),
                   help="the service's WebSocket URL, as it printed it (env CC_EXECUTOR_URL; "
                        "default %(default)s)")
    p.add_argument("--token", default=os.environ.get("CC_EXECUTOR_TOKEN"),
                   help="the service's bearer token, if it has one (env CC_EXECUTOR_TOKEN; "
                        "default: none)")
    p.add_argument("--cwd", metavar="DIR",
                   help="working directory on the service's host (default: the service's)")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="end the command after this many seconds in total (default: the "
                        "service's default_timeout, none unless set)")
    p.add_argument("--stall-timeout", type=float, metavar="SECONDS",
                   help="end the command after this many seconds without output (default: "
                        "none)")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS",
                   help="the command and its arguments, after --")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
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
    except websockets.InvalidStatus as e:
        print(f"cc_executor: {ns.url} refused the connection: {refusal_text(e)}",
              file=sys.stderr)
        return 2
    except (OSError, websockets.InvalidHandshake, websockets.InvalidURI) as e:
        print(f"cc_executor: cannot connect to {ns.url}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
