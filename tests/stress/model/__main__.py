"""`python -m stress.model`: run the loopback model server until SIGINT or SIGTERM.

Prints its base URL (flushed) once it accepts connections, so a parent process can read one line and
connect. Fault options take the same arguments as the prompt directives and apply to every prompt
that does not set its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from stress.model.directives import DirectiveError
from stress.model.server import ModelServer, RecordedRequest


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stress.model",
        description="Anthropic-compatible model server on loopback for running the Claude Code CLI offline.",
        epilog="Fault values use the prompt directive syntax; see docs/model-server.md.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: a free ephemeral port)")
    parser.add_argument("--latency", metavar="DURATION", help="delay before every streamed delta, e.g. 20ms")
    parser.add_argument("--delay", metavar="DURATION", help="delay before the response starts, e.g. 2s")
    parser.add_argument("--stall", metavar="SPEC", nargs="?", const="",
                        help="hold streams silent mid-way: [DURATION|forever] [xN|always] [after=N]")
    parser.add_argument("--error", metavar="SPEC", help="fail with a status first: STATUS [xN|always] [retry-after=S]")
    parser.add_argument("--drop", metavar="SPEC", nargs="?", const="",
                        help="reset the connection mid-stream: [xN|always] [after=N]")
    parser.add_argument("--size", metavar="SIZE", help="append a checksummed block of SIZE to every reply, e.g. 1MiB")
    parser.add_argument("--faults", metavar="DIRECTIVES", default="",
                        help='directives applied to every prompt, e.g. "[[latency: 5ms]] [[error: 529 x2]]"')
    parser.add_argument("--fault-title-requests", action="store_true",
                        help="also apply faults to the CLI's session-title requests")
    parser.add_argument("--log", metavar="FILE", help="append one JSON line per request (with body) to FILE")
    parser.add_argument("--quiet", action="store_true", help="do not print a line per request to stderr")
    return parser


def faults_from_args(args: argparse.Namespace) -> str:
    """The server-wide directive string built from the individual fault flags."""
    parts = [args.faults]
    for name in ("latency", "delay", "stall", "error", "drop", "size"):
        value = getattr(args, name)
        if value is not None:
            parts.append(f"[[{name}: {value}]]" if value else f"[[{name}]]")
    return " ".join(p for p in parts if p)


async def serve(args: argparse.Namespace) -> int:
    log_file = open(args.log, "a", encoding="utf-8") if args.log else None

    def on_request(record: RecordedRequest) -> None:
        if not args.quiet:
            print(f"stress.model: {record.method} {record.path} kind={record.kind} status={record.status} "
                  f"outcome={record.outcome} faults={record.faults} sent={record.bytes_sent}",
                  file=sys.stderr, flush=True)
        if log_file:
            entry = record.summary()
            entry.update(headers=record.headers, body=record.body)
            log_file.write(json.dumps(entry) + "\n")
            log_file.flush()

    server = ModelServer(args.host, args.port, faults=faults_from_args(args),
                         fault_title_requests=args.fault_title_requests, on_request=on_request)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with server:
            print(server.url, flush=True)
            await stop.wait()
    finally:
        if log_file:
            log_file.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return asyncio.run(serve(args))
    except DirectiveError as exc:
        parser.error(str(exc))
    except (ValueError, OSError) as exc:
        print(f"stress.model: cannot start: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
