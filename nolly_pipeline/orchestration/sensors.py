"""The dispatch sensor: pending rows in ``jobs`` become one run each.

A tick claims new rows in one statement (a claim column, not a cursor over run keys), so
its cost grows with the number of new rows, not with the backlog of dispatched ones. Every
claimed row is validated on its own: a malformed row is failed with a readable message and
a notification, and the tick goes on with the others. ``run_key`` is ``{job_id}:{attempt}``,
so a retried job (status set back to ``pending``) runs again while a repeated request for
the same attempt is dropped by Dagster.
"""


from collections import defaultdict
from typing import Sequence

from dagster import (
    DagsterInstance,
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from nolly_pipeline.db.job_rows import JobRow
from nolly_pipeline.db.jobs import JobStore
from nolly_pipeline.errors import CanceledError, NollyError, PermanentError
from nolly_pipeline.orchestration.assets import PARTITIONS, job_name
from nolly_pipeline.orchestration.ops import PREDICT_POOLS
from nolly_pipeline.orchestration.resources import (
    InputPolicyResource,
    JobStoreResource,
    ObjectStorageResource,
    PredictorsResource,
)
from nolly_pipeline.orchestration.tags import ATTEMPT_TAG, JOB_ID_TAG, JOB_TYPE_TAG, USER_ID_TAG
from nolly_pipeline.orchestration.ticks import minimum_interval
from nolly_pipeline.predictors.base import Predictor
from nolly_pipeline.validation import validate_row


def run_key(row: JobRow) -> str:
    return f"{row.id}:{row.attempt}"


def run_request_for(row: JobRow) -> RunRequest:
    return RunRequest(
        run_key=run_key(row),
        job_name=job_name(row.type),
        partition_key=str(row.id),
        tags={
            JOB_ID_TAG: str(row.id),
            JOB_TYPE_TAG: row.type,
            USER_ID_TAG: str(row.user_id),
            ATTEMPT_TAG: str(row.attempt),
        },
    )


def refuse_unrunnable(row: JobRow) -> None:
    """Rows that must not start a new attempt at all: canceled, or out of attempts."""
    if row.cancel_requested_at is not None:
        raise CanceledError()
    if row.attempt > row.max_attempts:
        raise PermanentError(
            f"this job has used all {row.max_attempts} attempts; submit it again as a new job"
        )


def dispatch(
    store: JobStore,
    public_base_url: str | None,
    predictors: PredictorsResource,
    batch_size: int,
    log: "object",
    allowed_hosts: list[str],
) -> tuple[list[RunRequest], dict[str, list[str]], int]:
    """Claim new rows; return run requests, new partition keys per type and rejected count."""
    requests: list[RunRequest] = []
    partitions: dict[str, list[str]] = defaultdict(list)
    rejected = 0
    cache: dict[str, Predictor] = {}
    for row in store.claim_dispatchable(batch_size):
        try:
            refuse_unrunnable(row)
            predictor = cache.get(row.type) or cache.setdefault(row.type, predictors.predictor(row.type))
            validate_row(row, public_base_url, predictor, allowed_hosts)
            request = run_request_for(row)
        except NollyError as exc:
            message = exc.message
        except Exception as exc:  # noqa: BLE001 - one bad row must never fail the tick
            log.exception(f"unexpected error validating job {row.id}")  # type: ignore[attr-defined]
            message = f"internal error while validating the job ({type(exc).__name__})"
        else:
            requests.append(request)
            partitions[row.type].append(str(row.id))
            continue
        if store.reject_dispatch(row, message):
            rejected += 1
            log.info(f"job {row.id} rejected: {message}")  # type: ignore[attr-defined]
    return requests, partitions, rejected


def create_pool_limits(instance: DagsterInstance) -> None:
    """Create the predict pools' limit rows (``dagster.yaml``'s default) before any run needs them.

    Dagster creates a pool's row at the first claim of a slot. Two runs claiming at once on a
    fresh instance both insert it, and the loser fails its run: its
    ``initialize_concurrency_limit_to_default`` catches the unique violation, then updates
    inside the transaction PostgreSQL has already aborted. The sensor runs alone, before the
    runs it requests."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits or instance.global_op_concurrency_default_limit is None:
        return
    known = {limit.name for limit in storage.get_pool_limits()}
    for pool in sorted(PREDICT_POOLS - known):
        storage.initialize_concurrency_limit_to_default(pool)


def build_dispatch_sensor(
    jobs: Sequence[UnresolvedAssetJobDefinition], interval_seconds: int, batch_size: int
) -> SensorDefinition:
    @sensor(
        name="pending_jobs_sensor",
        jobs=jobs,
        minimum_interval_seconds=minimum_interval(interval_seconds),
        default_status=DefaultSensorStatus.RUNNING,
        description="Claims pending rows in `jobs` and launches one run per job attempt.",
    )
    def pending_jobs_sensor(
        context: SensorEvaluationContext,
        job_store: JobStoreResource,
        storage: ObjectStorageResource,
        predictors: PredictorsResource,
        inputs: InputPolicyResource,
    ) -> SensorResult | SkipReason:
        requests, partitions, rejected = dispatch(
            job_store.store(), storage.public_base_url, predictors, batch_size, context.log, inputs.allowed_hosts
        )
        if not requests and not rejected:
            return SkipReason("no new pending jobs")
        context.log.info(f"dispatching {len(requests)} job(s), rejected {rejected}")
        if requests:
            create_pool_limits(context.instance)
        return SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[
                PARTITIONS[job_type].build_add_request(keys)
                for job_type, keys in partitions.items()
            ],
        )

    return pending_jobs_sensor
