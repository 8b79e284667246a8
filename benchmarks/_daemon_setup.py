"""Shared start of the benchmarks that run a real ``dagster-daemon`` (dispatch, reuse).

Imported first by those scripts (run as ``python benchmarks/<name>.py``): puts the repository
on ``sys.path`` so ``benchmarks`` and ``nolly_pipeline_tests`` import, silences Dagster's
deprecation chatter, and gives boto3 moto's dummy keys, never real ones.
"""

import os
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
warnings.filterwarnings("ignore")
for _key, _value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
    os.environ.setdefault(_key, _value)
