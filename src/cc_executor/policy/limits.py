"""Which resource limits a job gets: the client's ask, within the operator's ceilings, and only
what this host really enforces. A refusal is a -32602 naming the limit (`params.limits.<name>`).

The rule itself (ceilings, enforcers) is `containment.limits.plan`; this module only reads the
settings and speaks the protocol's errors, so the containment package stays free of both.
"""

from __future__ import annotations

from typing import Any

from ..containment import Containment, ContainmentError, LimitError, Limits, plan
from ..containment.limits import NAMES, ceiling_setting
from ..protocol.errors import INVALID_PARAMS, RpcError

_FALLBACK = None  # built once: what a runner without containment can enforce


def _enforcers(containment: Containment | None) -> dict[str, str]:
    global _FALLBACK
    if containment is not None:
        return containment.enforcers()
    if _FALLBACK is None:
        _FALLBACK = Containment("fallback").enforcers()
    return _FALLBACK


def ceilings(settings: Any) -> dict[str, float]:
    """Limit name -> the operator's ceiling (0: none), from the `max_<limit>` settings."""
    return {name: getattr(settings, ceiling_setting(name), 0) or 0 for name in NAMES}


def grant(asked: Any, settings: Any,
          containment: Containment | None) -> tuple[Limits | None, dict[str, dict]]:
    """(the job's limits or None, `limits_enforced`). `asked`: the request's `limits` (a
    protocol model, or None). Raises RpcError -32602 naming the limit it refuses."""
    want = None
    if asked is not None:
        want = Limits(**{n: getattr(asked, n) for n in NAMES})
    try:
        limits, enforced = plan(want, ceilings(settings), _enforcers(containment))
    except LimitError as e:
        field = f"limits.{e.name}"
        data: dict[str, Any] = {"field": field}
        if e.ceiling:
            data["ceiling"] = e.ceiling
        raise RpcError(INVALID_PARAMS, f"params.{field}: {e}", data) from None
    return (limits if enforced else None), enforced


def unenforceable_ceilings(settings: Any, containment: Containment | None) -> list[str]:
    """Ceilings set for limits this host cannot enforce: the service refuses to start with
    them (every job would be refused, or run unbounded)."""
    can = _enforcers(containment)
    return [ceiling_setting(n) for n, v in ceilings(settings).items() if v and n not in can]


def check_ceilings(settings: Any, containment: Containment | None) -> None:
    """Refuse to start with a ceiling the host cannot enforce (raises RuntimeError naming it)."""
    bad = unenforceable_ceilings(settings, containment)
    if bad:
        raise RuntimeError(f"cannot enforce {', '.join(bad)} on this host (containment "
                           f"{containment.mechanism if containment else 'fallback'}): unset it "
                           "or run where a writable memory/pids cgroup controller exists")


def preflight(settings: Any) -> str | None:
    """Before the service starts: the reason it cannot run with these settings (containment
    `cgroup` without a usable v2 tree, a ceiling the host cannot enforce), or None. Probes by
    creating the service's cgroups and removing them again."""
    try:
        probe = Containment(settings.containment)
    except ContainmentError as e:
        return str(e)
    try:
        check_ceilings(settings, probe)
    except RuntimeError as e:
        return str(e)
    finally:
        probe.close()
    return None
