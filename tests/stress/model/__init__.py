"""Loopback Anthropic-compatible model server that lets the real Claude Code CLI run offline.

Replies derive only from the prompt; directives such as `[[error: 529 x2]]` or `[[size: 1MiB]]`
script faults and reply shapes. See docs/model-server.md.
"""

from .claude_cli import ClaudeRun, find_claude, run_claude
from .cli_env import claude_env, claude_process_env
from .directives import DirectiveError, Plan, parse_plan
from .process import ModelServerProcess
from .server import ModelServer, ModelServerThread, RecordedRequest
from .sized import check_block

__all__ = [
    "ClaudeRun", "DirectiveError", "ModelServer", "ModelServerProcess", "ModelServerThread", "Plan",
    "RecordedRequest", "check_block", "claude_env", "claude_process_env", "find_claude", "parse_plan",
    "run_claude",
]
