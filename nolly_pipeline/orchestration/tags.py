"""Run tags the pipeline sets or reads. Tag values are visible in the UI: never put secrets here."""

JOB_ID_TAG = "nolly/job_id"
JOB_TYPE_TAG = "nolly/job_type"
USER_ID_TAG = "nolly/user_id"
ATTEMPT_TAG = "nolly/attempt"
# Set by Dagster on partitioned runs, and on the UI's "re-execute from asset failure".
PARTITION_TAG = "dagster/partition"
ASSET_RESUME_RETRY_TAG = "dagster/is_asset_resume_retry"
# Read by Dagster's run monitoring: a run still going after this many seconds is failed.
MAX_RUNTIME_TAG = "dagster/max_runtime"
# A run tagged "nolly/reuse": "false" (e.g. a backfill launched to reprocess) never takes a
# finished identical job's outputs.
REUSE_TAG = "nolly/reuse"
