"""`python -m stress.history ...`: the run history's command line (see stress.history.cli)."""

import sys

from stress.history.cli import main

sys.exit(main())
