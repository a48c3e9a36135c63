"""Starting the child: `Popen` in its own session, its stdin, its output's destination, and a
clear `SpawnError` when it cannot start.

Apart from the runner because it is the one synchronous, blocking step of a run (fork and exec),
and the only place that chooses between pipes and capture files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from ..containment import JobBox
from .spec import RunSpec, SpawnError

_devnull_fd = -1


def _devnull() -> int:
    """/dev/null opened once for every child's stdin (close-on-exec here; the child's dup2
    onto fd 0 clears that), instead of an open and a close per start."""
    global _devnull_fd
    if _devnull_fd < 0:
        _devnull_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    return _devnull_fd


def _capture_file() -> int:
    """An anonymous temp file (no name, gone when closed), opened read-write."""
    tmp = tempfile.gettempdir()
    try:
        return os.open(tmp, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except (AttributeError, OSError):
        fd, path = tempfile.mkstemp(prefix="cc_executor-")
        os.unlink(path)
        return fd


def _placed(spec: RunSpec, argv: list[str], env: dict[bytes, bytes],
            box: JobBox | None) -> list[str]:
    """`argv` as exec'd: behind the box's wrapper (joins the job's cgroups, sets rlimits) when
    there is one. The program is resolved first, as Popen would, so that a missing or
    non-executable program is still a SpawnError and not the wrapper's exit 127."""
    if box is None or not box.needs_wrap:
        return argv
    if spec.cwd is not None and not os.path.isdir(spec.cwd):
        raise _spawn_error(spec, argv, FileNotFoundError(2, "No such file", spec.cwd))
    prog = argv[0]
    if "/" in prog:
        path = prog if os.path.isabs(prog) else os.path.join(spec.cwd or os.getcwd(), prog)
        if not os.path.exists(path):
            raise _spawn_error(spec, argv, FileNotFoundError(2, "No such file", prog))
        if os.path.isdir(path) or not os.access(path, os.X_OK):
            raise _spawn_error(spec, argv, PermissionError(13, "Permission denied", prog))
    else:
        search = env.get(b"PATH", os.fsencode(os.defpath)).decode(errors="replace")
        path = shutil.which(prog, path=search)
        if path is None:
            raise _spawn_error(spec, argv, FileNotFoundError(2, "No such file", prog))
    return box.wrap([path, *argv[1:]])


def spawn(spec: RunSpec, argv: list[str], env: dict[bytes, bytes],
          box: JobBox | None = None) -> tuple[subprocess.Popen, tuple[int, int] | None]:
    """Start `argv` as a session leader. Returns the process and, with `capture_to="file"`, the
    capture files (stdout, stderr), now the caller's to read and close. Raises SpawnError.

    In a bare `box` (membership only) the child is spawned from inside the job's cgroup (see
    `containment.box`); in any other box, behind its wrapper."""
    if box is not None and box.bare:
        try:
            box.enter()
        except OSError:
            pass  # cannot step in (a foreign cgroup rule): the wrapper joins it instead
        else:
            try:
                return _popen(spec, argv, env)
            finally:
                box.leave()
    return _popen(spec, _placed(spec, argv, env, box), env)


def _popen(spec: RunSpec, argv: list[str],
           env: dict[bytes, bytes]) -> tuple[subprocess.Popen, tuple[int, int] | None]:
    files: tuple[int, int] | None = None
    if spec.capture and spec.capture_to == "file":
        files = (_capture_file(), _capture_file())
        out, err = files
    else:
        out = err = subprocess.PIPE if spec.capture else None
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if spec.input is not None
            else None if spec.inherit_stdin else _devnull(),
            stdout=out,
            stderr=err,
            cwd=spec.cwd,
            env=env,
            start_new_session=True,
            close_fds=True,
            bufsize=0,
        )
    except OSError as e:
        for fd in files or ():
            os.close(fd)
        raise _spawn_error(spec, argv, e) from e
    return proc, files


def _spawn_error(spec: RunSpec, argv: list[str], e: OSError) -> SpawnError:
    if isinstance(e, FileNotFoundError):
        missing = spec.cwd if spec.cwd and not os.path.isdir(spec.cwd) else argv[0]
        what = "working directory" if missing == spec.cwd else "executable"
        return SpawnError(f"{what} not found: {missing}")
    if isinstance(e, PermissionError):
        return SpawnError(f"permission denied: {e.filename or argv[0]}")
    if isinstance(e, NotADirectoryError):
        return SpawnError(f"not a directory: {spec.cwd}")
    return SpawnError(f"cannot start {argv[0]}: {e.strerror or e}")
