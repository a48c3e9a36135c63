"""`python -m stress.worker SCHEDULER [--executor URL | --start-executor] [--slots N] [--name N]`:
a fleet worker (stress.cluster.worker); see docs/scale.md."""

from stress.cluster.worker import main

if __name__ == "__main__":
    raise SystemExit(main())
