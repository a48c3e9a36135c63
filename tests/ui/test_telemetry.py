"""CC_EXECUTOR_CLAUDE_TELEMETRY=1: claude jobs get the CLI's OpenTelemetry switch and default
exporters (an operator's own exporter choice kept); off, nothing is added (the unit test). The `claude` here is a
script at --claude-path that prints what it was given, so no model is needed."""

from __future__ import annotations

import asyncio

from cc_executor.client import ExecutorClient
from cc_executor.telemetry import claude_telemetry_env

SCRIPT = "#!/bin/sh\nenv | grep -E '^(CLAUDE_CODE_ENABLE_TELEMETRY|OTEL_)' | sort\n"


def claude_env_seen(url: str) -> set[str]:
    async def go():
        async with await ExecutorClient.connect(url) as client:
            result = await client.execute(args=["claude", "-p", "hi"], timeout=30)
            return set(result.stdout.decode().split())
    return asyncio.run(go())


def test_telemetry_passthrough_for_claude_jobs(executor_service, tmp_path):
    fake = tmp_path / "claude"
    fake.write_text(SCRIPT)
    fake.chmod(0o755)
    off = {"CLAUDE_CODE_ENABLE_TELEMETRY": None, "OTEL_METRICS_EXPORTER": None,
           "OTEL_LOGS_EXPORTER": None}
    on = executor_service("--claude-path", str(fake), "--claude-telemetry",
                          env={**off, "OTEL_METRICS_EXPORTER": "console",
                               "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"})
    assert claude_env_seen(on.url) == {
        "CLAUDE_CODE_ENABLE_TELEMETRY=1", "OTEL_METRICS_EXPORTER=console",
        "OTEL_LOGS_EXPORTER=otlp", "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317"}


def test_telemetry_env_is_empty_when_off():
    assert claude_telemetry_env(False, {}) == {}
    assert claude_telemetry_env(True, {"OTEL_LOGS_EXPORTER": "none"}) == {
        "CLAUDE_CODE_ENABLE_TELEMETRY": "1", "OTEL_METRICS_EXPORTER": "otlp"}
