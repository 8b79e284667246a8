"""One graph-backed asset and one asset job per job type, generated from the registry.

Each asset is partitioned by its own dynamic partitions definition keyed by job id, so the
UI shows every job as a partition and a backfill of selected partitions reprocesses exactly
those jobs. Runs use the in-process executor: about 4 s per run here against about 12 s
for the multiprocess default, and a job's three ops are sequential anyway. It is also what
keeps one worker process per run, which the row's ownership fencing relies on; the code
location sets it as the default executor so the UI's implicit asset job uses it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from dagster import (
    AssetKey,
    AssetsDefinition,
    DynamicPartitionsDefinition,
    define_asset_job,
    graph_asset,
    in_process_executor,
)

from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from nolly_pipeline.job_types import JOB_TYPES, JobType
from nolly_pipeline.orchestration.hooks import write_done, write_failed
from nolly_pipeline.orchestration.ops import PREDICT_OPS, build_publish_op, download
from nolly_pipeline.orchestration.reporting import check_specs
from nolly_pipeline.orchestration.tags import JOB_TYPE_TAG, MAX_RUNTIME_TAG


# Longest a run may take before run monitoring fails it (hung worker, stuck remote call).
MAX_RUNTIME_SECONDS = 4 * 3600

# Partitions are independent of configuration: the sensor and retention need them by type.
PARTITIONS: dict[str, DynamicPartitionsDefinition] = {
    name: DynamicPartitionsDefinition(name=f"{t.ident}_jobs") for name, t in JOB_TYPES.items()
}


def job_name(job_type: str) -> str:
    return f"{JOB_TYPES[job_type].ident}_job"


@dataclass(frozen=True)
class JobTypeDefs:
    asset: AssetsDefinition
    job: UnresolvedAssetJobDefinition


def build_job_type_defs(job_type: JobType, backend: str) -> JobTypeDefs:
    """The asset and job of one type; ``predict`` runs in the pool of the type's backend."""
    predict = PREDICT_OPS[backend].alias("predict")
    publish = build_publish_op(job_type.name).alias("publish")
    checks = check_specs(job_type.name, AssetKey(job_type.ident))
    # Write-back hooks sit on the ops inside the graph, not on ``<type>_job``: every job the
    # asset runs in (the sensor's, the UI's implicit asset job for "Materialize" and
    # backfills, a re-execution) then writes the row back the moment the outcome is known.
    hooks = {write_done, write_failed}

    @graph_asset(
        name=job_type.ident,
        partitions_def=PARTITIONS[job_type.name],
        group_name="jobs",
        description=f"{job_type.label} outputs, one partition per row of `jobs` (partition key = job id).",
        metadata={"job_type": job_type.name, "input_bucket": job_type.input_bucket, "backend": backend},
        # Evaluated by ``publish`` with every materialization, on every launch path: the
        # sensor's job, the UI's implicit asset job and backfills all select the checks.
        check_specs=checks,
    )
    def _asset():
        published = publish.with_hooks(hooks)(predict.with_hooks(hooks)(download.with_hooks(hooks)()))
        return {"result": published.result,
                **{spec.get_python_identifier(): getattr(published, spec.name) for spec in checks}}

    job = define_asset_job(
        name=job_name(job_type.name),
        selection=[_asset],
        executor_def=in_process_executor,
        tags={JOB_TYPE_TAG: job_type.name, MAX_RUNTIME_TAG: str(MAX_RUNTIME_SECONDS), **job_type.run_tags},
    )
    return JobTypeDefs(asset=_asset, job=job)


def build_all_job_type_defs(backends: Mapping[str, str]) -> dict[str, JobTypeDefs]:
    return {name: build_job_type_defs(t, backends[name]) for name, t in JOB_TYPES.items()}
