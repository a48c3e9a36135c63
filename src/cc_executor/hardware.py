"""The host's hardware as the service reports it in `/health` and `connected`.

Why the service says it, and not the client that wants it: capacity belongs to the host that runs
the jobs. A fleet worker (`stress.worker`) sits beside its executor and derives its default slots
from this reading, and the harness's per-worker report shows it; a remote client has no other way
to learn what the machine behind a WebSocket has.

What is read: the cores this process may run on (its CPU affinity, which a container's cpuset
narrows, not the machine's count), total and available memory, the load averages, and GPUs from
`nvidia-smi --query-gpu` when that program exists (absent otherwise: no GPU is not an error).
The service takes memory and load from its latest load sample (`from_reading`, at most one
sample interval old) rather than reading them again: `read_hardware` costs ~0.1 ms (psutil parses
/proc/meminfo), and `connected` is on every connection's way to its first job. The GPU list is
read once, by `detect_gpus`, because `nvidia-smi` takes a few hundred milliseconds and GPUs do
not come and go while a service runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

import psutil

from cc_executor.load import LoadReading
from cc_executor.protocol import Gpu, Hardware

NVIDIA_SMI = "nvidia-smi"
GPU_QUERY = ["--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"]
GPU_TIMEOUT = 10.0
"""Seconds `nvidia-smi` may take before the GPUs are reported unknown (a wedged driver)."""


def usable_cores() -> int:
    """Cores this process may run on: its affinity mask when the platform has one."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def parse_gpus(text: str) -> list[Gpu]:
    """`nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits` output ->
    GPUs. A line that does not parse is skipped (a driver message is not a GPU); a memory of
    `[N/A]` is None."""
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 3 or not parts[0].isdigit() or not parts[1]:
            continue
        mem = int(float(parts[2])) if parts[2].replace(".", "", 1).isdigit() else None
        gpus.append(Gpu(index=int(parts[0]), model=parts[1], memory_mib=mem))
    return gpus


def detect_gpus(argv0: str | None = None, timeout: float = GPU_TIMEOUT) -> list[Gpu] | None:
    """The host's GPUs, or None when `nvidia-smi` is absent, fails or hangs (reported absent,
    never an error: a host without GPUs is the common case)."""
    exe = argv0 or shutil.which(NVIDIA_SMI)
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, *GPU_QUERY], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return parse_gpus(done.stdout) or None


def read_hardware(gpus: Sequence[Gpu] | None) -> Hardware:
    """The hardware now; `gpus` as `detect_gpus` found them at start-up."""
    mem = psutil.virtual_memory()
    load = tuple(round(x, 2) for x in os.getloadavg())
    return Hardware(cores=usable_cores(), memory_total=mem.total, memory_available=mem.available,
                    load=load, gpus=list(gpus) if gpus else None)


def from_reading(reading: LoadReading, cores: int, gpus: Sequence[Gpu] | None) -> Hardware:
    """The same figures from a load sample the service already took (`cores`: `usable_cores()`,
    read once)."""
    return Hardware(cores=cores, memory_total=reading.mem_total,
                    memory_available=reading.mem_available,
                    load=(round(reading.load1, 2), round(reading.load5, 2),
                          round(reading.load15, 2)), gpus=list(gpus) if gpus else None)
