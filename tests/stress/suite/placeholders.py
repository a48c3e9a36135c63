"""The ${NAME} placeholders a suite may write in commands, prompts and templates.

Why only our names are replaced, in one pass: suite commands are shell lines, and `$HOME`, `$$`
or `${HOME}` in them belong to the shell; a general template engine (or `string.Template`) would
eat them. One pass also means a substituted value that itself contains `${PROMPT}` stays as is.

`${TIMESTAMP}` is taken once per load (`new_timestamp`), so every test of a run shares it, as
seed 004's runner did.

Imports nothing of the harness or of the service (never
`cc_executor.jobs/server/process/tree/registry`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime

PLACEHOLDERS = ("TIMESTAMP", "PROMPT", "REQUEST", "METATAGS", "TEST_ID", "MARKER")
PLACEHOLDER_RE = re.compile(r"\$\{(" + "|".join(PLACEHOLDERS) + r")\}")
SHELL_SPECIAL_IN_DQUOTES = frozenset('"$`\\')
"""Characters the shell still interprets inside "...": a prompt holding one is unsafe in a
string template."""


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Replace only our ${NAME} placeholders, in one pass: `$HOME`, `$$` and `${HOME}` stay shell's."""
    return PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def new_timestamp() -> str:
    """The ${TIMESTAMP} value: local time as seed 004 wrote it (YYYYmmdd_HHMMSS)."""
    return datetime.now().strftime("%Y%m%d_%H%M%S")
