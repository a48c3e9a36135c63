"""How long a job may outlive its dropped connection: within the operator's ceiling.

A detached job holds a slot, a spool and its processes while nobody can see it but the holder
of its token, so on a shared executor the operator bounds that time (`max_detach_timeout`, one
hour by default; 0: none), as it bounds a job's resources. Over the ceiling is refused, not
cut: a client that asked for a day should learn it will not get it, as with `limits`.
"""

from __future__ import annotations

from typing import Any

from ..protocol.errors import INVALID_PARAMS, RpcError


def check_detach(detach_timeout: float | None, settings: Any) -> None:
    """Raise RpcError -32602 naming the ceiling when `detach_timeout` is over it."""
    ceiling = settings.max_detach_timeout
    if detach_timeout and ceiling and detach_timeout > ceiling:
        raise RpcError(INVALID_PARAMS, f"params.detach_timeout: {detach_timeout:g} is over the "
                       f"server's ceiling of {ceiling:g} (max_detach_timeout)",
                       {"field": "detach_timeout", "ceiling": "max_detach_timeout"})
