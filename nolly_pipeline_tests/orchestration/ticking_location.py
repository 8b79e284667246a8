"""A code location with one sensor declared like ours (``minimum_interval(5)``) that appends
the time of each tick to ``$TICKS_FILE``, for ``test_ticks.py``."""

import os
import time

from dagster import DefaultSensorStatus, Definitions, SkipReason, sensor

from nolly_pipeline.orchestration.ticks import minimum_interval


@sensor(minimum_interval_seconds=minimum_interval(5), default_status=DefaultSensorStatus.RUNNING)
def every_five_seconds() -> SkipReason:
    with open(os.environ["TICKS_FILE"], "a") as ticks:
        ticks.write(f"{time.time()}\n")
    return SkipReason("counting ticks")


defs = Definitions(sensors=[every_five_seconds])
