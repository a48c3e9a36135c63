"""The hook through which a run gets its model: `--model auto|local|real`.

Why a hook: the harness must not know how a model is provided (a loopback stand-in server, the real
API with the user's credentials, nothing at all). It asks this module for an environment to give
every job, a one-line description for the report, and which `requires` words that environment
satisfies ("real-model"). The modes themselves are implemented elsewhere; until then every mode
sets nothing, and "real" trusts the user that the CLI's own credentials reach a real model.

Contract (keep it when implementing the modes):

    async with model_environment(mode) as model:
        model.env          # dict[str, str | None]: merged into every job's env (None removes)
        model.description  # str, shown in the report ("none" when nothing was set up)
        model.provides     # frozenset[str]: requirement words this mode satisfies
        env, description, provides = model   # it is a NamedTuple

Whatever the context manager starts (e.g. a loopback model server) it must stop on exit, also when
the run is interrupted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NamedTuple

MODES = ("auto", "local", "real")
REAL_MODEL = "real-model"


class ModelEnvironment(NamedTuple):
    env: dict[str, str | None]
    description: str
    provides: frozenset[str]


@asynccontextmanager
async def model_environment(mode: str) -> AsyncIterator[ModelEnvironment]:
    """The environment for `mode`. Placeholder: sets nothing; "real" provides "real-model"."""
    if mode not in MODES:
        raise ValueError(f"unknown model mode {mode!r} (expected one of {', '.join(MODES)})")
    provides = frozenset({REAL_MODEL}) if mode == "real" else frozenset()
    yield ModelEnvironment({}, "none", provides)
