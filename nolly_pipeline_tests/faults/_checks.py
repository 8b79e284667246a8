"""Shared end-state checks of the slow tests: nothing lost, nothing doubled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from nolly_pipeline_tests.faults.harness import RunCensus, notification_counts, rows, run_census


def assert_exactly_once(engine: sa.Engine, home: Path, job_ids: list[Any], expect: str = "done") -> tuple[dict, RunCensus]:
    """Every row terminal with ``expect``; one notification and one SUCCESS run per job, at its attempt."""
    table = rows(engine)
    statuses = {str(j): table[str(j)]["status"] for j in job_ids}
    not_expected = {j: (s, table[j]["error_message"]) for j, s in statuses.items() if s != expect}
    assert not not_expected, f"{len(not_expected)} rows not {expect}: {list(not_expected.items())[:5]}"
    notes = notification_counts(engine)
    assert {j: notes.get(str(j), 0) for j in map(str, job_ids) if notes.get(j, 0) != 1} == {}
    census = run_census(home, job_ids)
    assert census.duplicate_keys == {}, f"two runs for one run_key: {list(census.duplicate_keys.items())[:3]}"
    assert census.duplicate_attempts == {}, f"two runs for one attempt: {list(census.duplicate_attempts.items())[:3]}"
    if expect == "done":
        doubles = {j: r for j, r in census.success_by_job.items() if len(r) != 1}
        assert doubles == {}, f"jobs with several SUCCESS runs: {list(doubles.items())[:3]}"
        missing = [j for j in map(str, job_ids) if j not in census.success_by_job]
        assert missing == [], f"{len(missing)} jobs without a SUCCESS run: {missing[:3]} {dict(census.by_status)}"
        wrong = {j: (a, table[j]["attempt"]) for j, a in census.success_attempt.items() if a != str(table[j]["attempt"])}
        assert wrong == {}, f"SUCCESS run is not the row's attempt: {list(wrong.items())[:3]}"
    return table, census
