"""Fleet runs on Dask distributed: `--cluster tcp://HOST:PORT | local:N` and `python -m stress.worker`.

    capacity.py   slots and GPU weight from a host's hardware (pure rules)
    security.py   loopback by default, TLS required for anything else
    task.py       the Dask task: one attempt through the worker's own executor
    worker.py     `python -m stress.worker`: executor + Dask worker with resources
    connect.py    reach a scheduler, or start `local:N`; the scheduler settings we rely on
    fleet_run.py  submit the plan, record each attempt once, the per-worker report
    hook.py       the session's entry point for a cluster run

Dask is imported only here, and only when a run asks for a cluster: a run on one host starts
no Dask at all.
"""
