"""cc_executor: run the Claude Code CLI, or allow-listed commands, over a WebSocket."""

__version__ = "0.1.0"
