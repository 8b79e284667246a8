"""Peak memory of one processing call, measured in a fresh process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The child's own high-water mark. Not getrusage's ru_maxrss: Linux keeps it across the
# fork and exec that start the child, so it read the benchmark's own size (1.5 GB of
# DNSMOS models and corpora in audio_quality.py) whatever the call used.
_PEAK = ("import resource,sys\n"
         "try:\n"
         "    print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')))\n"
         "except OSError:\n"
         "    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // (1024 if sys.platform == 'darwin' else 1))\n")


def peak_rss_kib(imports: str, call: str) -> int:
    """Peak RSS (KiB) of a new interpreter that runs ``imports`` then ``call``."""
    code = f"from pathlib import Path;{imports};{call}\n{_PEAK}"
    return int(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                              text=True, cwd=ROOT).stdout.split()[-1])
