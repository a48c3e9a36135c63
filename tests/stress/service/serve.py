"""`./dev serve [--model auto|local|real] [SERVICE FLAGS...]`: the service, with a model to try it.

Why here and not in the service: `python -m cc_executor` never fakes answers and never imports
the harness. A newcomer without credentials who runs `./dev serve` and then `claude -p "What is
2+2?"` would only read "Not logged in"; this launcher, which `./dev serve` runs, decides as the
harness does (`modelmode.resolve_mode`: auto means real when credentials exist, else local) and,
for local, starts the loopback model server (`python -m stress.model`) beside the service, gives
the service an environment that points its `claude` jobs at it (a dummy key, a scratch
`CLAUDE_CONFIG_DIR`, the user's own credentials removed) and `CC_EXECUTOR_MODEL=simulated`, so
`connected` and `/health` say `model: simulated`. A banner on stderr says the answers are
simulated.

Both children run in sessions of their own, so a terminal's Ctrl-C reaches the launcher only,
which passes SIGINT/SIGTERM/SIGHUP/SIGUSR1 to the service once; when the service exits, the
model server is stopped and the scratch directory removed, and the launcher exits with the
service's code.
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stress.model.cli_env import INHERITED_TO_REMOVE, claude_env
from stress.service.modelmode import LOCAL_MAX_RETRIES, MODES, resolve_mode

MODEL_START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)


def say(text: str) -> None:
    print(f"dev serve: {text}", file=sys.stderr, flush=True)


def start_model(python: str) -> tuple[subprocess.Popen, str]:
    """`python -m stress.model --quiet`, and the base URL it prints (bounded wait)."""
    proc = subprocess.Popen([python, "-m", "stress.model", "--quiet"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, start_new_session=True, text=True)
    deadline = time.monotonic() + MODEL_START_TIMEOUT
    line = ""
    while not line and proc.poll() is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([proc.stdout], [], [], remaining)[0]:
            break
        line = proc.stdout.readline().strip()  # the server prints its URL first, flushed
    if not line.startswith("http://"):
        stop(proc)
        raise RuntimeError(f"the loopback model server did not start (printed {line!r})")
    return proc, line


def stop(proc: subprocess.Popen) -> int | None:
    """SIGTERM, a bounded wait, SIGKILL by pid as the last resort."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def local_environment(url: str, config_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in INHERITED_TO_REMOVE}
    env.update(claude_env(url, config_dir=config_dir, max_retries=LOCAL_MAX_RETRIES))
    env["CLAUDE_CODE_TMPDIR"] = str(config_dir / "tmp")
    env["CC_EXECUTOR_MODEL"] = "simulated"
    return env


def run_service(python: str, flags: list[str], env: dict[str, str]) -> int:
    """The service in a session of its own, with our signals passed on; its exit code."""
    service = subprocess.Popen([python, "-m", "cc_executor", *flags], env=env,
                               start_new_session=True)

    def forward(signum, _frame) -> None:
        if service.poll() is None:
            service.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        return service.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop(service)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="./dev serve", add_help=False,
        description="Start the service; --model local also starts the loopback model server.")
    parser.add_argument("--model", choices=MODES, default="auto",
                        help="auto (default): real when credentials exist, else local")
    ns, flags = parser.parse_known_args(argv)
    python = sys.executable
    mode, why = resolve_mode(ns.model)
    if "-h" in flags or "--help" in flags:
        print("./dev serve [--model auto|local|real] [FLAGS...]\n  --model: what answers claude "
              "jobs: real (the CLI's credentials), local (a simulated model started beside the "
              "service), auto (default: real when credentials exist, else local)\n\nFLAGS, "
              "the service's own:", flush=True)
        os.execv(python, [python, "-m", "cc_executor", *flags])
    if mode == "real":
        say(f"model: real ({why})")
        os.execv(python, [python, "-m", "cc_executor", *flags])
    config_dir = Path(tempfile.mkdtemp(prefix="cc_executor_model_"))
    (config_dir / "tmp").mkdir()
    model = None
    try:
        model, url = start_model(python)
        say(f"model: SIMULATED ({why}). claude jobs are answered by the loopback model server "
            f"at {url}: arithmetic and echoes, not a real model. For real answers give the CLI "
            f"credentials (ANTHROPIC_API_KEY, or `claude` then /login) and use --model real.")
        return run_service(python, flags, local_environment(url, config_dir))
    except RuntimeError as e:
        say(str(e))
        return 1
    finally:
        if model is not None:
            stop(model)
        shutil.rmtree(config_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
