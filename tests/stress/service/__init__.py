"""stress.service: the service a run talks to, and what is checked before a run starts.

    managed    start and stop a local service (`ManagedService`), or check a remote one
    fleet      --server/--servers -> the services of a run, their health and report sections
    preflight  the CLI, the model and a canary are checked before a suite runs (exit 3)
    modelmode  --model auto|local|real: the loopback model server or the real API

Imports `cc_executor.client` and shared libraries only; never `stress.run` or `stress.report`.
"""
