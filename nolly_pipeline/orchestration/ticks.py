"""Sensor tick timing under the Dagster daemon."""

from __future__ import annotations


def minimum_interval(seconds: int) -> int:
    """The ``minimum_interval_seconds`` that makes the daemon tick a sensor every ``seconds``.

    The sensor daemon wakes every 5 s and skips a sensor whose last tick began less than its
    minimum interval ago. Each tick's timestamp is taken a few milliseconds after the wake-up,
    so one interval later the elapsed time is a hair short and the tick is skipped: a 5 s sensor
    ticked every 10 s (measured), a 60 s one every 65 s. One second of tolerance absorbs that.
    """
    return max(1, seconds - 1)
