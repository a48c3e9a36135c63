"""How many tests a fleet worker runs at once, and what its GPUs are worth: rules from hardware.

Pure functions of the hardware reading the worker's executor gives in `/health`
(`cc_executor.hardware`), so the rule can be read, tested and overridden (`--slots`, `--gpus`,
`--gpu-weight`) without a cluster.

The slot rule: `min(CLAUDE_PER_CORE x cores, available memory // MEMORY_PER_CLAUDE)`, at least 1.
Measured on this project's 2-core hosts (Claude Code CLI 2.1.x, `claude -p ... --output-format
stream-json --verbose` against the loopback model server, `/usr/bin/time -f %M`, 3 runs): a peak
RSS of 313-319 MiB and ~0.6 s of CPU per run, then waiting on the model. So memory, not cores,
is what runs out first on a small host: MEMORY_PER_CLAUDE gives each slot 512 MiB (the measured
peak plus room for the tools a session starts), and two slots per core keep the cores busy while
most runs wait on the API. The service's own admission control still holds jobs back when the
host is under pressure, so a generous slot count cannot overload a host; a stingy one wastes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CLAUDE_PER_CORE = 2
MEMORY_PER_CLAUDE = 512 * 1024 * 1024
"""Bytes of available memory per slot (measured peak RSS of `claude -p`: ~320 MiB)."""

GPU_WEIGHTS: dict[str, float] = {
    "H200": 4.5, "H100": 4.0, "A100": 2.0, "L40S": 1.5, "L40": 1.3, "A10G": 1.0, "A10": 1.0,
    "L4": 1.0, "V100": 1.0, "RTX 4090": 1.5, "RTX 3090": 0.9, "T4": 0.5,
}
"""Relative throughput of a GPU model (an A10/L4 = 1), matched as a word in nvidia-smi's name,
longest first. Unknown models weigh 1. Rough public figures for inference work; a site with its
own measurements passes `--gpu-weight`."""


@dataclass(frozen=True)
class Capacity:
    """What a worker advertises, and where each figure came from (shown in the report)."""

    slots: int
    slots_source: str
    gpus: int
    gpu_models: tuple[str, ...]
    gpu_weight: float
    gpu_source: str

    def to_json(self) -> dict[str, Any]:
        return {"slots": self.slots, "slots_source": self.slots_source, "gpus": self.gpus,
                "gpu_models": list(self.gpu_models), "gpu_weight": self.gpu_weight,
                "gpu_source": self.gpu_source}


def slots_from_hardware(hw: Mapping[str, Any]) -> tuple[int, str]:
    """The default slot count from `/health`'s `hardware`, and the rule's arithmetic in words."""
    cores = int(hw.get("cores") or 1)
    avail = int(hw.get("memory_available") or 0)
    by_cores = CLAUDE_PER_CORE * cores
    by_memory = avail // MEMORY_PER_CLAUDE
    slots = max(1, min(by_cores, by_memory))
    why = (f"hardware: min({CLAUDE_PER_CORE} x {cores} cores, {avail / 2**30:.1f} GiB available "
           f"/ {MEMORY_PER_CLAUDE // 2**20} MiB per claude) = {slots}")
    return slots, why


def gpu_weight(model: str) -> float:
    """The table's weight for one GPU model name (1.0 when no entry matches)."""
    name = model.upper()
    for key in sorted(GPU_WEIGHTS, key=len, reverse=True):
        if key in name:
            return GPU_WEIGHTS[key]
    return 1.0


def derive(hw: Mapping[str, Any], *, slots: int | None = None, gpus: int | None = None,
           weight: float | None = None) -> Capacity:
    """A worker's capacity: flags beat the hardware; the source of each figure is kept."""
    if slots is not None:
        n_slots, slots_source = slots, "--slots"
    else:
        n_slots, slots_source = slots_from_hardware(hw)
    found: Sequence[Mapping[str, Any]] = hw.get("gpus") or []
    models = tuple(str(g.get("model", "?")) for g in found)
    if gpus is not None:
        n_gpus, gpu_source = gpus, "--gpus"
    else:
        n_gpus, gpu_source = len(found), "nvidia-smi" if found else "none found"
    if weight is not None:
        w = weight
    else:
        w = round(sum(gpu_weight(m) for m in models) / len(models), 3) if models else 1.0
    return Capacity(n_slots, slots_source, n_gpus, models, w, gpu_source)
