"""The three ops every job type runs: download -> predict -> publish.

Each op first takes (or re-confirms) ownership of the job row for its run, so a stale run
stops before doing work, and the first op to run marks the row ``running``. Errors become
Dagster outcomes by type: :class:`TransientError` is retried by the op's ``RetryPolicy``
(exponential backoff with jitter); any other :class:`NollyError` becomes a ``Failure`` that
is not retried and whose description is the readable message the failure hook writes back.
"""


import mimetypes
import os
import socket
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from dagster import (
    Backoff,
    Failure,
    Jitter,
    MetadataValue,
    OpDefinition,
    OpExecutionContext,
    Out,
    Output,
    RetryPolicy,
    op,
)

from nolly_pipeline import reuse
from nolly_pipeline.config import OUTPUT_BUCKET
from nolly_pipeline.db.job_rows import JobRow, RunIdentity
from nolly_pipeline.db.jobs import JobStore
from nolly_pipeline.db.tables import DOWNLOADING, PROCESSING, UPLOADING
from nolly_pipeline.errors import NollyError, TransientError, internal_error_message
from nolly_pipeline.inputs import acquire_input
from nolly_pipeline.orchestration.resources import (
    InputPolicyResource,
    JobStoreResource,
    ObjectStorageResource,
    PredictorsResource,
    ScratchResource,
)
from nolly_pipeline.orchestration.reporting import assess, check_results, materialization_metadata
from nolly_pipeline.orchestration.tags import ASSET_RESUME_RETRY_TAG, ATTEMPT_TAG, REUSE_TAG
from nolly_pipeline.predictors.base import PredictionRequest
from nolly_pipeline.processing.checks import CHECKS
from nolly_pipeline.storage.bundle import MediaBundle
from nolly_pipeline.storage.objects import ObjectStore, S3ObjectStore
from nolly_pipeline.storage.urls import InputSource, ObjectRef, resolve_input_url, safe_filename
from nolly_pipeline.validation import validate_row

TRANSIENT_RETRY = RetryPolicy(max_retries=4, delay=2, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)
# Lifetime of a presigned input URL handed to a remote backend.
SOURCE_URL_SECONDS = 3600


def run_identity(context: OpExecutionContext) -> RunIdentity:
    """What this run may do to its row, from how it was launched.

    * a resume ("re-execute from failure", from the UI or ``ReexecutionOptions.from_failure``,
      i.e. a re-execution of a subset of steps) continues the attempt of its parent run;
    * "re-execute all" (every step again) is a new attempt, like any other launch from the UI;
    * a sensor run owns the attempt in its tag.
    """
    run = context.run
    raw = run.tags.get(ATTEMPT_TAG, "")
    attempt = int(raw) if raw.isdigit() else None
    resumes: tuple[str, ...] = ()
    if run.parent_run_id is not None:
        resuming = (
            run.is_resume_retry
            or run.tags.get(ASSET_RESUME_RETRY_TAG) == "true"
            or run.step_keys_to_execute is not None
        )
        if resuming:
            resumes = tuple(dict.fromkeys(r for r in (run.parent_run_id, run.root_run_id) if r))
        else:
            attempt = None
    return RunIdentity(run_id=context.run_id, attempt=attempt, resumes=resumes, worker=worker_id())


def worker_id() -> str:
    """This worker process, as recorded on the row it takes."""
    return f"{socket.gethostname()}:{os.getpid()}"


@contextmanager
def job_errors(step: str) -> Iterator[None]:
    """Translate exceptions into Dagster's retry/failure semantics.

    Only :class:`TransientError` is retried. A bug (any other exception) fails at once
    with a generic message; its traceback stays in the run log as the ``Failure``'s cause.
    """
    try:
        yield
    except TransientError:
        raise  # RetryPolicy retries it; after the last retry the failure hook reports it
    except NollyError as exc:
        raise Failure(description=exc.message, allow_retries=False) from None
    except Exception as exc:
        raise Failure(description=internal_error_message(exc, step), allow_retries=False) from exc


class Heartbeat:
    """Touches the job row from a background thread while an op works on it.

    The reconciler treats a ``running`` row whose ``updated_at`` is older than its timeout
    as belonging to a dead worker (``kill -9``, OOM, lost machine): the thread dies with the
    process, so the heartbeat stops exactly when the work does. When a beat finds the row
    canceled or taken over, the next progress report (or the end of the op) raises, which
    stops local processing loops and remote polling alike.
    """

    def __init__(self, store: JobStore, job_id: uuid.UUID, run: RunIdentity, interval: float) -> None:
        self.store, self.job_id, self.run, self.interval = store, job_id, run, interval
        self._stop = threading.Event()
        self._error: NollyError | None = None
        self._progress: float | None = None
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if exc[0] is None:
            self.check()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.store.heartbeat(self.job_id, self.run.run_id, self._progress, self.run.worker)
            except NollyError as error:
                self._error = error
                return
            except Exception:  # noqa: BLE001 - a database blip must not kill the heartbeat
                continue

    def check(self) -> None:
        if self._error is not None:
            raise self._error

    def progress(self, done: int, total: int) -> None:
        """The processing callback: record the fraction done, and stop if told to."""
        if total > 0:
            self._progress = min(1.0, done / total)
        self.check()


# run id -> the row this process took for that run (the latest copy an op read). The write-
# back hooks use it, so they neither look the run up again nor re-read the row; a run with
# no entry never took its row here, so no fenced write of its hooks could apply.
_TAKEN_ROWS: dict[str, JobRow] = {}


def taken_row(run_id: str) -> JobRow | None:
    return _TAKEN_ROWS.get(run_id)


def release_row(run_id: str) -> None:
    _TAKEN_ROWS.pop(run_id, None)


@contextmanager
def owned_row(
    context: OpExecutionContext, job_store: JobStoreResource, phase: str
) -> Iterator[tuple[JobRow, Heartbeat]]:
    """Take (or re-confirm) the row for this run and say what the op does (``jobs.phase``), in
    one transaction, and keep its heartbeat going meanwhile."""
    store = job_store.store()
    run = run_identity(context)
    row = store.start_run(context.partition_key, run, phase)
    _TAKEN_ROWS[context.run_id] = row
    with Heartbeat(store, row.id, run, job_store.heartbeat_seconds) as beat:
        yield row, beat


@op(retry_policy=TRANSIENT_RETRY)
def download(
    context: OpExecutionContext,
    job_store: JobStoreResource,
    storage: ObjectStorageResource,
    predictors: PredictorsResource,
    scratch: ScratchResource,
    inputs: InputPolicyResource,
) -> MediaBundle:
    """Fetch the job's input (storage or an allowed web host) into scratch and check it.

    The input's SHA-256 is computed on the way in; with it the job's result-reuse key is
    known and recorded on the row (see :mod:`nolly_pipeline.reuse`).
    """
    with job_errors("download"), owned_row(context, job_store, DOWNLOADING) as (row, beat):
        predictor = predictors.predictor(row.type)
        spec = validate_row(row, storage.public_base_url, predictor, inputs.allowed_hosts)
        acquired = acquire_input(
            spec, storage.store(), inputs.fetcher(), inputs.limits(), scratch.run_dir(context.run_id) / "source"
        )
        key = reuse.reuse_key(spec, predictor, acquired.sha256)
        if key:
            beat.store.set_phase(row.id, beat.run, DOWNLOADING, reuse_key=key)
        context.add_output_metadata({"source": acquired.origin, "bytes": acquired.size, "sha256": acquired.sha256})
        return MediaBundle.single(
            acquired.path,
            "source",
            mimetypes.guess_type(acquired.path.name)[0] or "application/octet-stream",
            origin=acquired.origin,
            reuse_key=key,
        )


def _predict(
    context: OpExecutionContext,
    source: MediaBundle,
    job_store: JobStoreResource,
    storage: ObjectStorageResource,
    predictors: PredictorsResource,
    scratch: ScratchResource,
    inputs: InputPolicyResource,
) -> MediaBundle:
    """Run the type's backend (local processing or Replicate) on the downloaded input, unless
    an identical job already finished: then hand its outputs on to ``publish`` instead."""
    with job_errors("predict"), owned_row(context, job_store, PROCESSING) as (row, beat):
        predictor = predictors.predictor(row.type)
        spec = validate_row(row, storage.public_base_url, predictor, inputs.allowed_hosts)
        work = scratch.run_dir(context.run_id) / f"predict-{context.retry_number}"
        objects = storage.store()
        key = source.metadata.get("reuse_key")
        allowed = key and spec.reuse and context.run.tags.get(REUSE_TAG) != "false"
        found = reuse.find_source(beat.store, objects, row, key, job_store.reuse_scope) if allowed else None
        if found is not None:
            context.add_output_metadata({"backend": "reused", "reused_from": str(found.id)})
            return MediaBundle(files=(), metadata={"reused_from": str(found.id), "reused_output": found.output_data})

        def fetch_asset(url: str) -> Path:
            ref = resolve_input_url(url, storage.public_base_url, row.user_id)
            dest = work / "assets" / ref.filename
            objects.download(ref.bucket, ref.key, dest)
            return dest

        started = time.monotonic()
        result = predictor.predict(
            PredictionRequest(
                job_id=row.id,
                job_type=row.type,
                source=source.primary.path,
                source_url=_remote_source_url(storage, objects, spec.source),
                settings=spec.settings,
                work_dir=work / "out",
                progress=beat.progress,
                fetch_asset=fetch_asset,
            )
        )
        seconds = time.monotonic() - started
        # Checks and preview while input and outputs are on local disk (see reporting.py).
        files, assessment = assess(row.type, source.primary.path, result, spec.settings,
                                   work / "preview" / "preview.png", context.log)
        duration = assessment["measured"].get("input_duration")
        timing = {"processing_seconds": round(seconds, 3),
                  "realtime_factor": round(seconds / duration, 3) if duration else None}
        context.add_output_metadata({"backend": predictor.backend, "files": len(result.files),
                                     "processing_seconds": timing["processing_seconds"]})
        return MediaBundle(
            files=tuple(files),
            metadata={"backend": predictor.backend, **result.metadata, **timing, **assessment},
        )


def _predict_op(name: str, pool: str) -> OpDefinition:
    """``predict`` under a Dagster pool, so the instance caps concurrent predictions per backend."""
    return op(name=name, retry_policy=TRANSIENT_RETRY, pool=pool)(_predict)


# One predict op per backend: `replicate` caps concurrent Replicate calls (cost, rate limits),
# `local_processing` caps CPU-heavy local work. Limits are set in dagster.yaml (concurrency.pools).
PREDICT_OPS: dict[str, OpDefinition] = {
    "local": _predict_op("predict_local", "local_processing"),
    "replicate": _predict_op("predict_replicate", "replicate"),
}
PREDICT_POOLS = frozenset(op_def.pool for op_def in PREDICT_OPS.values() if op_def.pool)


def build_publish_op(job_type: str) -> OpDefinition:
    """``publish`` for one job type: the asset value plus one output per asset check of the type.

    The graph asset maps those outputs to its ``check_specs`` (see assets.py), so every job the
    asset runs in evaluates the checks. Named per type (the outputs differ); the graph uses it
    under the node name ``publish``.
    """
    check_outs = {name: Out(is_required=False) for name in CHECKS[job_type]}

    @op(name=f"publish_{job_type.replace('-', '_')}", out={"result": Out(), **check_outs},
        retry_policy=TRANSIENT_RETRY)
    def _publish(
        context: OpExecutionContext,
        result: MediaBundle,
        job_store: JobStoreResource,
        storage: ObjectStorageResource,
    ) -> Iterator[Any]:
        """Upload the outputs to ``outputs/{user_id}/{job_id}/a{attempt}/`` and describe them.

        The key comes from the row, never from the job's input, so a user cannot choose where
        an output lands. A reused result is copied there (server-side on S3) from the earlier
        job's outputs, and ``output_data.reused_from`` names that job; its checks and preview
        are that job's, as the files are the same. The success hook writes the ``result``
        output (``output_data``) to the row.
        """
        with job_errors("publish"), owned_row(context, job_store, UPLOADING) as (row, _):
            objects = storage.store()
            output_data = _store_outputs(row, result, storage, objects)
            with tempfile.TemporaryDirectory() as tmp:
                preview = _local_preview(result, output_data, objects, Path(tmp))
                metadata = {"output_data": MetadataValue.json(output_data),
                            **materialization_metadata(output_data, preview, row.attempt)}
            if output_data.get("reused_from"):
                metadata["reused_from"] = MetadataValue.text(output_data["reused_from"])
        yield Output(output_data, "result", metadata=metadata)
        yield from check_results(output_data)  # after the materialization they refer to

    return _publish


def _store_outputs(row: JobRow, result: MediaBundle, storage: ObjectStorageResource, objects: ObjectStore) -> dict[str, Any]:
    """Upload (or, reusing, copy) every file, the preview too, and build ``output_data``;
    ``output_url`` is the first real output, never the preview."""
    prefix = f"{row.user_id}/{row.id}/a{row.attempt}"
    reused_from = result.metadata.get("reused_from")
    if reused_from:
        source_output = result.metadata["reused_output"]
        stored = reuse.copy_outputs(objects, reused_from, source_output, prefix)
        metadata = source_output.get("metadata") or {}
    else:
        stored = []
        for index, f in enumerate(result.files):
            key = f"{prefix}/{index:02d}-{safe_filename(f.path.name, 'output')}"
            objects.upload(f.path, OUTPUT_BUCKET, key, f.content_type)
            stored.append(reuse.StoredFile(f.role, key, f.content_type, f.path.stat().st_size))
        metadata = result.metadata
    files = [
        {
            "role": f.role,
            "url": storage.output_url(objects, ObjectRef(OUTPUT_BUCKET, f.storage_path)),
            "storage_path": f.storage_path,
            "content_type": f.content_type,
            "bytes": f.bytes,
        }
        for f in stored
    ]
    primary = next((f for f in files if f["role"] != "preview"), files[0])
    return {
        "output_url": primary["url"],
        "storage_path": primary["storage_path"],
        "bucket": OUTPUT_BUCKET,
        "files": files,
        "metadata": metadata,
        **({"reused_from": reused_from} if reused_from else {}),
    }


def _local_preview(result: MediaBundle, output_data: dict[str, Any], objects: ObjectStore, tmp: Path) -> Path | None:
    """The preview on local disk: ``predict``'s file, or for a reused result the copied one."""
    local = next((f.path for f in result.files if f.role == "preview"), None)
    if local is not None or not output_data.get("reused_from"):
        return local
    stored = next((f for f in output_data["files"] if f["role"] == "preview"), None)
    if stored is None:
        return None
    objects.download(OUTPUT_BUCKET, stored["storage_path"], tmp / "preview.png")
    return tmp / "preview.png"


def _remote_source_url(storage: ObjectStorageResource, objects: ObjectStore, ref: InputSource) -> str | None:
    """A URL a remote backend can fetch the input from, so it need not be re-uploaded.

    None when the original object is gone (a re-execution after the upload was deleted),
    storage is local, or the input came from a web host (the copy we checked is what the
    backend gets, not whatever that host serves next): the backend uploads the local copy.
    """
    if not isinstance(ref, ObjectRef):
        return None
    if not objects.exists(ref.bucket, ref.key):
        return None
    if storage.public_base_url:
        return storage.url_for(objects, ref)
    if isinstance(objects, S3ObjectStore):
        return objects.presigned_url(ref.bucket, ref.key, SOURCE_URL_SECONDS)
    return None

