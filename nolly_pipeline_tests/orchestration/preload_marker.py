"""Named in the launcher tests' ``preload_modules``: records which process imported it."""

import os

IMPORTED_IN_PID = os.getpid()
