"""The harness's cluster options (`--cluster`, TLS, timeouts) and their checks; no Dask import,
so a run without `--cluster` never loads Dask."""

from __future__ import annotations

import argparse

from stress.argtypes import UsageError
from stress.cluster.security import ClusterError, check_address, tls_files

OLD_FORMS = "several services are now a Dask cluster: use --cluster tcp://HOST:PORT or --cluster local:N (docs/scale.md)"


def add_cluster_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", metavar="ADDRESS",
                   help="run on a Dask cluster: tcp://HOST:PORT (a `dask scheduler` with "
                        "`python -m stress.worker` workers) or local:N (N local workers, each with "
                        "its own executor); see docs/scale.md")
    p.add_argument("--cluster-timeout", type=float, default=None, metavar="SECONDS",
                   help="--cluster: seconds to reach the scheduler before exit 3 (default 10)")
    p.add_argument("--worker-wait", type=float, default=None, metavar="SECONDS",
                   help="--cluster: how long to wait for a worker when the cluster has none, at "
                        "the start (then exit 3) or mid-run (then the unfinished tests are "
                        "reported lost); default 15")
    p.add_argument("--tls-ca-file", help="--cluster: the fleet's CA (TLS; required off loopback)")
    p.add_argument("--tls-cert", help="--cluster: the harness's client certificate (TLS)")
    p.add_argument("--tls-key", help="--cluster: the harness's client key (TLS)")


def check_cluster_options(ns: argparse.Namespace) -> None:
    """UsageError naming what is wrong; the old multi-server forms point to --cluster."""
    if len(ns.server) > 1 or any("@" in s for s in ns.server):
        raise UsageError(f"--server given several times or with @WEIGHT: {OLD_FORMS}")
    if ns.servers is not None:
        raise UsageError(f"--servers: {OLD_FORMS}")
    if ns.weights is not None:
        raise UsageError(f"--weights: {OLD_FORMS}")
    if ns.retry_budget is not None:
        raise UsageError("--retry-budget: removed; on a --cluster the scheduler's allowed-failures "
                         "bounds the reruns of each test (--retries with local:N, docs/scale.md)")
    tls_given = ns.tls_ca_file or ns.tls_cert or ns.tls_key
    local = ns.cluster is not None and ns.cluster.startswith("local:")
    if (ns.no_steal or ns.retries is not None) and not local:
        raise UsageError("--no-steal and --retries set the scheduler of --cluster local:N; an "
                         "external scheduler takes them from its config (dask.yaml, docs/scale.md)")
    if ns.cluster is None:
        if tls_given or ns.cluster_timeout is not None or ns.worker_wait is not None:
            raise UsageError("--tls-*, --cluster-timeout and --worker-wait are only used with --cluster")
        return
    if ns.server:
        raise UsageError("give either --server (one running service) or --cluster, not both")
    if ns.stages or ns.arrival_rate or ns.find_capacity or ns.threshold:
        raise UsageError("load runs (--stages, --arrival-rate, --find-capacity, --threshold) "
                         "measure one host: they cannot be combined with --cluster")
    if ns.cluster_timeout is not None and not ns.cluster_timeout > 0:
        raise UsageError(f"--cluster-timeout: must be > 0 seconds, got {ns.cluster_timeout:g}")
    if ns.worker_wait is not None and not ns.worker_wait > 0:
        raise UsageError(f"--worker-wait: must be > 0 seconds, got {ns.worker_wait:g}")
    try:
        from stress.cluster.connect import parse_cluster

        spec = parse_cluster(ns.cluster)
        tls = tls_files(ns)
        if spec.address is not None:
            check_address(spec.address, tls)
    except ClusterError as e:
        raise UsageError(str(e)) from None
