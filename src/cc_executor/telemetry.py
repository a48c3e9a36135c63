"""The Claude CLI's own OpenTelemetry export, switched on for the service's claude jobs.

Why a passthrough rather than our own spans: the CLI already measures what a team wants from it
(tokens, cost, sessions, tool decisions) and exports it with the standard OpenTelemetry
variables; the service only has to turn it on for the jobs it starts. With
`CC_EXECUTOR_CLAUDE_TELEMETRY=1` every claude job gets `CLAUDE_CODE_ENABLE_TELEMETRY=1` and, where
the service's environment names no exporter, OTLP for metrics and events. Everything else
(`OTEL_EXPORTER_OTLP_ENDPOINT`, `_PROTOCOL`, `_HEADERS`, `OTEL_METRIC_EXPORT_INTERVAL`,
`OTEL_LOGS_EXPORT_INTERVAL`, `OTEL_RESOURCE_ATTRIBUTES`...) reaches the job from the service's
environment as any variable does. Off (the default), nothing is added or removed. See
docs/observability.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

ENABLE = "CLAUDE_CODE_ENABLE_TELEMETRY"
EXPORTERS = ("OTEL_METRICS_EXPORTER", "OTEL_LOGS_EXPORTER")
DEFAULT_EXPORTER = "otlp"


def claude_telemetry_env(enabled: bool, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """What a claude job's environment gains: nothing when off; the switch and the default
    exporters (only those the service's own environment leaves unset) when on."""
    if not enabled:
        return {}
    environ = os.environ if environ is None else environ
    env = {ENABLE: "1"}
    for name in EXPORTERS:
        if not environ.get(name):
            env[name] = DEFAULT_EXPORTER
    return env
