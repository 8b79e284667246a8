"""The dispatch sensor creates the predict pools' limits before the runs it requests need them.

Two runs claiming a pool slot at once on a fresh PostgreSQL instance both insert the pool's
row, and Dagster fails the loser's run (its update after the unique violation runs in an
aborted transaction): seen in the end-to-end daemon test, as a second attempt of a job.
"""

from __future__ import annotations

from pathlib import Path

from dagster import instance_for_test

from nolly_pipeline.orchestration.ops import PREDICT_POOLS
from nolly_pipeline.orchestration.sensors import create_pool_limits
from nolly_pipeline_tests import services


def test_pool_limits_are_created_once_with_the_configured_default(tmp_path: Path) -> None:
    pools = {"concurrency": {"pools": {"granularity": "op", "default_limit": 2}}}
    with services.postgres_database("nolly_pools") as url, instance_for_test(
        temp_dir=str(tmp_path), overrides={"storage": {"postgres": {"postgres_url": url}}, **pools}
    ) as instance:
        storage = instance.event_log_storage
        assert not storage.get_pool_limits()
        create_pool_limits(instance)
        create_pool_limits(instance)  # rows there: nothing to insert, no error
        limits = {limit.name: limit.limit for limit in storage.get_pool_limits()}
        assert limits == {pool: 2 for pool in PREDICT_POOLS}
