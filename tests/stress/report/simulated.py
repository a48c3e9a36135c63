"""Whether a run's Claude costs and tokens are real or simulated, and how to say so.

Why one place: with the loopback model (`--model local`, or `auto` without credentials) the
Claude CLI still prints `total_cost_usd` and token counts, computed from the fake model's usage
figures, and an offline run once reported "$37.22" as if it had been billed. Every place that
shows a cost or a token count (report.md, report.html, the terminal, the history) asks here and
writes the same label.

Imports nothing of the harness.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SIMULATED_MODES = frozenset({"local"})
"""Model modes whose answers (and so costs and tokens) come from the loopback model server."""
LABEL = "simulated"
NOTE = ("the loopback model answered, so costs and tokens are the CLI's arithmetic on made-up "
        "usage figures; nothing was billed")


def is_simulated(environment: Mapping[str, Any] | None = None, *, mode: str | None = None) -> bool:
    """True when the model that answered was the loopback one: the effective mode when known
    (`auto` resolves to `local` or `real`), else the requested one."""
    if mode is None:
        env = environment or {}
        mode = env.get("model_effective") or env.get("model_mode")
    return mode in SIMULATED_MODES


def cost_text(usd: float | None, simulated: bool, digits: int = 4) -> str:
    """`$0.1234`, or `$0.1234 (simulated)`; `-` when unknown."""
    if usd is None:
        return "-"
    return f"${usd:.{digits}f}" + (f" ({LABEL})" if simulated else "")


def totals_line(tool: str, totals: Mapping[str, Any] | None, simulated: bool) -> str | None:
    """The terminal's line about the Claude runs' cost and tokens, labelled when simulated."""
    if not totals or not totals.get("runs"):
        return None
    u = totals.get("usage") or {}
    tag = f" ({LABEL}: loopback model, nothing billed)" if simulated else ""
    return (f"{tool}: claude: {totals['runs']} runs, cost {cost_text(totals.get('total_cost_usd'), False)}, "
            f"{u.get('input_tokens', 0):,} input and {u.get('output_tokens', 0):,} output tokens{tag}")


__all__ = ["LABEL", "NOTE", "SIMULATED_MODES", "cost_text", "is_simulated", "totals_line"]
