"""What a client may make the host do: which programs run (allow-list) and which environment
variables a request may not set (deny-list), which resource limits a job gets, and how long a
job may outlive its connection.

Policy, not protocol: the protocol package says what a well-formed request looks like; this
package says which well-formed requests are refused, and the job layer applies it. It imports
the protocol's errors (to refuse in the protocol's terms) and `claude_cli`; never the service
(jobs, server, process), and the protocol never imports it.
"""

from .allow_list import AllowList
from .detach import check_detach
from .env import ENV_DENIED, ENV_DENIED_PREFIXES, check_env, env_name_denied
from .limits import grant as grant_limits

__all__ = ["AllowList", "check_detach", "ENV_DENIED", "ENV_DENIED_PREFIXES", "check_env", "env_name_denied",
           "grant_limits"]
