"""The variables a request's `env` may not set, and why.

Documented for clients in docs/protocol.md (execute, env). The job layer applies it
(`check_env`) before anything else about a job, so a refused variable is a -32602 naming it, as
a malformed param is.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..protocol.errors import INVALID_PARAMS, RpcError, clip

# `execute.env` may not set these: each can make a common runtime or tool run code of the
# client's choosing (the dynamic loader, shells, interpreters, git and what git starts: its ssh,
# pager, editor, credential prompt, external diff). A deny-list lowers the risk for the runtimes
# it knows; it is not a sandbox: an allowed program may read other variables, config files, or
# its arguments and run what they say, so allow only programs you would let a client run with
# any arguments. Removing one (a `null` value) is fine. Documented in docs/protocol.md.
# PATH is not on it: jobs legitimately set their own (the pinned CLI's folder first, so a shell
# line's `claude` is the one the allow-list means), and the allowed program itself is resolved
# with the server's PATH, so PATH cannot swap it. What that program runs in turn by name *is*
# looked up in the job's PATH: one more reason this list is no sandbox.
ENV_DENIED: frozenset[str] = frozenset({
    # shells: start-up files, exported functions' options, xtrace prompts
    "BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "PS4", "PROMPT_COMMAND",
    # glibc: character-set converters loaded as shared objects
    "GCONV_PATH",
    # Node.js
    "NODE_OPTIONS", "NODE_PATH", "NODE_REPL_EXTERNAL_MODULE",
    # Python
    "PYTHONSTARTUP", "PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONINSPECT",
    "PYTHONWARNINGS", "PYTHONBREAKPOINT",
    # Perl, Ruby, the JVM
    "PERL5OPT", "PERL5LIB", "PERLLIB", "PERL5DB",
    "RUBYOPT", "RUBYLIB",
    "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS",
    # OpenSSL configuration (can load engines/providers)
    "OPENSSL_CONF", "OPENSSL_ENGINES", "OPENSSL_MODULES",
    # git: programs it runs (GIT_SSH*, GIT_CONFIG* are prefixes below) and where it finds them
    "GIT_EXTERNAL_DIFF", "GIT_ASKPASS", "SSH_ASKPASS", "GIT_PROXY_COMMAND",
    "GIT_EXEC_PATH", "GIT_TEMPLATE_DIR",
    # pagers and editors (git, less, and many other tools start them)
    "GIT_PAGER", "PAGER", "LESSOPEN", "LESSCLOSE",
    "GIT_EDITOR", "GIT_SEQUENCE_EDITOR", "EDITOR", "VISUAL",
})
# Every variable with these prefixes: the loader's (LD_PRELOAD, LD_AUDIT, LD_LIBRARY_PATH...),
# macOS's, bash's exported functions (`BASH_FUNC_name%%`), git's ssh command (GIT_SSH,
# GIT_SSH_COMMAND) and git's config from the environment (GIT_CONFIG_COUNT, GIT_CONFIG_KEY_<n>,
# GIT_CONFIG_VALUE_<n>, GIT_CONFIG_PARAMETERS, GIT_CONFIG_GLOBAL, ...: core.sshCommand,
# core.fsmonitor, aliases and hooks paths all run programs).
ENV_DENIED_PREFIXES: tuple[str, ...] = ("LD_", "DYLD_", "BASH_FUNC_", "GIT_SSH", "GIT_CONFIG")


def env_name_denied(name: str) -> bool:
    """Whether `execute.env` may not set `name` (see ENV_DENIED)."""
    return name in ENV_DENIED or name.startswith(ENV_DENIED_PREFIXES)


def check_env(env: Mapping[str, str | None] | None) -> None:
    """Refuse (-32602, `params.env.<NAME>: may not be set...`) the first variable `env` sets that
    the deny-list names. Removing one (a None value) is allowed."""
    for name, value in (env or {}).items():
        if value is not None and env_name_denied(name):
            raise RpcError(
                INVALID_PARAMS,
                f"params.env.{clip(name)}: may not be set: it can make an allowed program run code "
                "of the client's choosing (refused names: see docs/protocol.md, execute env)",
                {"field": "env"})
