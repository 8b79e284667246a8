"""Status write-back: ``done`` when ``publish`` succeeds, ``failed`` when any op fails.

Hooks run in the run worker right after the op, so the row and its notification change
within moments of the outcome. Writes are fenced on this run owning the row (see
:class:`~nolly_pipeline.db.jobs.JobStore`), so a stale run, a retry or a second call cannot
overwrite a newer attempt or notify twice. Hooks do not fire when a worker is killed or a
run is canceled: the reconciler sensor settles those rows.
"""


from dagster import Failure, HookContext, failure_hook, success_hook

from nolly_pipeline.errors import NollyError, internal_error_message
from nolly_pipeline.orchestration.ops import worker_id
from nolly_pipeline.orchestration.tags import PARTITION_TAG


def failure_message(exc: BaseException | None, step: str) -> str:
    """The readable ``error_message`` for an op's exception: never a traceback."""
    if isinstance(exc, Failure) and exc.description:
        return exc.description
    if isinstance(exc, NollyError):
        return exc.message
    return internal_error_message(exc, step)


def _job_id(context: HookContext) -> str | None:
    run = context.instance.get_run_by_id(context.run_id)
    return run.tags.get(PARTITION_TAG) if run else None


@success_hook(required_resource_keys={"job_store", "scratch"})
def write_done(context: HookContext) -> None:
    if context.op.name != "publish":  # the node name: the op itself is ``publish_<type>``
        return
    job_id = _job_id(context)
    output_data = context.op_output_values.get("result")
    if job_id and isinstance(output_data, dict):
        if context.resources.job_store.store().finish_done(job_id, context.run_id, output_data, worker_id()):
            context.log.info(f"job {job_id} is done: {output_data['output_url']}")
    context.resources.scratch.remove_run_dir(context.run_id)


@failure_hook(required_resource_keys={"job_store", "scratch"})
def write_failed(context: HookContext) -> None:
    job_id = _job_id(context)
    if job_id:
        message = failure_message(context.op_exception, context.op.name)
        if context.resources.job_store.store().finish_failed(job_id, context.run_id, message, worker_id()):
            context.log.info(f"job {job_id} failed: {message}")
    context.resources.scratch.remove_run_dir(context.run_id)
