"""Status write-back: ``done`` when ``publish`` succeeds, ``failed`` when any op fails.

Hooks run in the run worker right after the op, so the row and its notification change
within moments of the outcome. Writes are fenced on this run owning the row (see
:class:`~nolly_pipeline.db.jobs.JobStore`), so a stale run, a retry or a second call cannot
overwrite a newer attempt or notify twice. Hooks do not fire when a worker is killed or a
run is canceled: the reconciler sensor settles those rows.

The row comes from the ops of the same run in this process (:func:`ops.taken_row`), not from
looking the run up through the instance and reading the row again. Before the scratch folder
goes, the hooks wait for the durable copies of the run's outputs (see :mod:`io_manager`):
after ``done`` is written, so the user never waits for them, and before ``failed`` is, so a
re-execution from failure launched at once finds the stored download.
"""


from dagster import Failure, HookContext, failure_hook, success_hook

from nolly_pipeline.errors import NollyError, internal_error_message
from nolly_pipeline.orchestration.io_manager import finish_run_copies
from nolly_pipeline.orchestration.ops import release_row, taken_row, worker_id


def failure_message(exc: BaseException | None, step: str) -> str:
    """The readable ``error_message`` for an op's exception: never a traceback."""
    if isinstance(exc, Failure) and exc.description:
        return exc.description
    if isinstance(exc, NollyError):
        return exc.message
    return internal_error_message(exc, step)


def _wait_for_copies(context: HookContext) -> None:
    for error in finish_run_copies(context.run_id):
        context.log.warning(f"could not store a copy of an intermediate output: {error!r}")


def _forget_run(context: HookContext) -> None:
    context.resources.scratch.remove_run_dir(context.run_id)
    release_row(context.run_id)


@success_hook(required_resource_keys={"job_store", "scratch"})
def write_done(context: HookContext) -> None:
    """On ``publish`` only (see assets.py): its success is the job's."""
    if context.op.name != "publish":  # the node name: the op itself is ``publish_<type>``
        return
    row = taken_row(context.run_id)
    output_data = context.op_output_values.get("result")
    if row is not None and isinstance(output_data, dict):
        if context.resources.job_store.store().finish_done(row, context.run_id, output_data, worker_id()):
            context.log.info(f"job {row.id} is done: {output_data['output_url']}")
    _wait_for_copies(context)
    _forget_run(context)


@failure_hook(required_resource_keys={"job_store", "scratch"})
def write_failed(context: HookContext) -> None:
    _wait_for_copies(context)
    row = taken_row(context.run_id)
    if row is not None:
        message = failure_message(context.op_exception, context.op.name)
        if context.resources.job_store.store().finish_failed(row, context.run_id, message, worker_id()):
            context.log.info(f"job {row.id} failed: {message}")
    _forget_run(context)
