"""`python -m stress.local [SUITE ...]`: run suites (default `local`) against a fresh service.

See docs/harness.md for options, exit codes and the report layout.

Owns only the entry point's name, default suite and description; everything else is
`stress.cli.main`, shared with `stress.complex`. Must import nothing but `stress.cli` (nothing
may import this module).
"""

from __future__ import annotations

import sys

from stress.cli import main as _main


def main(argv: list[str] | None = None) -> int:
    return _main(argv, prog="python -m stress.local", default_suite="local", complex_mode=False,
                 what="Run stress suites against cc_executor.")


if __name__ == "__main__":
    sys.exit(main())
