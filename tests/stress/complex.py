"""`python -m stress.complex [SUITE ...]`: like stress.local, plus resource monitoring.

Differences from stress.local, all from seed 002's complex runner: default suite `complex`; the
service process and each test's job tree are sampled (CPU %, RSS, threads, processes, timelines);
task-list suites use the 80% pattern rule, and tests in our format that set no `match` (neither
the test nor the suite's defaults) need 80% of their patterns (`{"min_ratio": 0.8}`).

Owns only the entry point's name, default suite and description; the differences above live in
`stress.run.plan` (the 80% default) and `stress.session` (the monitor), switched on by
`complex_mode`. Must import nothing but `stress.cli` (nothing may import this module).
"""

from __future__ import annotations

import sys

from stress.cli import main as _main


def main(argv: list[str] | None = None) -> int:
    return _main(argv, prog="python -m stress.complex", default_suite="complex", complex_mode=True,
                 what="Run complex stress suites against cc_executor, with resource monitoring.")


if __name__ == "__main__":
    sys.exit(main())
