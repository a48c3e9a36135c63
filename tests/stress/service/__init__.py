"""stress.service: the service a run talks to, and what is checked before a run starts.

    managed    start and stop a local service (`ManagedService`), or check a remote one
    preflight  the CLI, the model and a canary are checked before a suite runs (exit 3)
    modelmode  --model auto|local|real: the loopback model server or the real API

Imports `cc_executor.client`, shared libraries, `stress.suite` (requirements, the CLI's
failure rules), `stress.model` and `stress.exits`; never `stress.run`, `stress.report` or the
orchestration above them (`stress.fleet`, `stress.session`).
"""
