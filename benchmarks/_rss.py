"""Peak memory of one processing call, measured in a fresh process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_kib(imports: str, call: str) -> int:
    """Peak RSS (KiB) of a new interpreter that runs ``imports`` then ``call``."""
    code = (f"import resource;from pathlib import Path;{imports};{call};"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    return int(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                              text=True, cwd=ROOT).stdout.split()[-1])
