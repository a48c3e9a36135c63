"""Who may send a fleet worker code: loopback by default, TLS for anything else.

The trust model, in plain words: a Dask worker runs whatever functions its scheduler sends it,
as the user it runs as. That bypasses the executor's allow-list and token entirely: anyone who
can reach the scheduler can run any code on every worker host. So a fleet is safe only when
reaching the scheduler is as hard as reaching the executor's token. On loopback it is (only this
host's users); across a network it needs Dask's TLS with client certificates (mutual TLS: the
scheduler, every worker and the harness each present a certificate signed by the fleet's CA,
and nothing without one gets in). Anything else is refused before a connection is made.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


class ClusterError(Exception):
    """A cluster option or address that cannot be used; the message names it (one line)."""


@dataclass(frozen=True)
class TlsFiles:
    """--tls-ca-file, --tls-cert, --tls-key: the fleet's CA and this process's certificate."""

    ca_file: str
    cert: str
    key: str


def split_address(address: str) -> tuple[str, str, int]:
    """`tcp://host:port` or `tls://host:port` -> (scheme, host, port); ClusterError otherwise."""
    parts = urlsplit(address)
    if parts.scheme not in ("tcp", "tls") or not parts.hostname:
        raise ClusterError(f"not a scheduler address: {address!r} (expected tcp://HOST:PORT or "
                           "tls://HOST:PORT)")
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        raise ClusterError(f"not a scheduler address: {address!r} (no port)")
    return parts.scheme, parts.hostname, port


def is_loopback(host: str) -> bool:
    """Whether `host` is this host only: a loopback IP, or a name resolving only to those."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def tls_files(ns: Any) -> TlsFiles | None:
    """The TLS options as given: all three or none (ClusterError naming what is missing)."""
    given = {"--tls-ca-file": ns.tls_ca_file, "--tls-cert": ns.tls_cert, "--tls-key": ns.tls_key}
    missing = [k for k, v in given.items() if not v]
    if len(missing) == 3:
        return None
    if missing:
        raise ClusterError(f"TLS needs --tls-ca-file, --tls-cert and --tls-key together; "
                           f"missing {', '.join(missing)}")
    return TlsFiles(ns.tls_ca_file, ns.tls_cert, ns.tls_key)


def check_address(address: str, tls: TlsFiles | None) -> None:
    """Refuse a scheduler off loopback without TLS, and a tls:// address without certificates."""
    scheme, host, _ = split_address(address)
    if tls is None and scheme == "tls":
        raise ClusterError(f"{address}: a tls:// scheduler needs --tls-ca-file, --tls-cert, --tls-key")
    if tls is None and not is_loopback(host):
        raise ClusterError(f"refusing the scheduler at {address}: off loopback a Dask worker runs "
                           "any code its scheduler sends, so TLS with certificates is required "
                           "(tls://..., --tls-ca-file, --tls-cert, --tls-key; see docs/scale.md)")
    if tls is not None and scheme != "tls":
        raise ClusterError(f"{address}: with TLS certificates the address must be tls://{host}:...")


def security(tls: TlsFiles | None, role: str) -> Any:
    """Dask's `Security` for `role` ("client" or "worker"); None on plain loopback."""
    if tls is None:
        return None
    from distributed.security import Security

    return Security(tls_ca_file=tls.ca_file, require_encryption=True,
                    **{f"tls_{role}_cert": tls.cert, f"tls_{role}_key": tls.key})
