"""Loopback Anthropic-compatible model server that lets the real Claude Code CLI run offline.

Replies derive only from the prompt; directives such as `[[error: 529 x2]]` or `[[size: 1MiB]]`
script faults and reply shapes. See docs/model-server.md.
"""

from stress.model.claude_cli import ClaudeRun, find_claude, run_claude
from stress.model.cli_env import claude_env, claude_process_env
from stress.model.directives import DirectiveError, Plan, parse_plan
from stress.model.process import ModelServerProcess
from stress.model.server import ModelServer, ModelServerThread, RecordedRequest
from stress.model.sized import check_block

__all__ = [
    "ClaudeRun", "DirectiveError", "ModelServer", "ModelServerProcess", "ModelServerThread", "Plan",
    "RecordedRequest", "check_block", "claude_env", "claude_process_env", "find_claude", "parse_plan",
    "run_claude",
]
