"""IO manager: intermediate media handed over on local disk, with a durable copy in storage.

A run's ops share one process (in-process executor), so the next op reads the previous op's
files where they already are, in the run's scratch folder: no upload and download again
between ``download``, ``predict`` and ``publish`` of the same run. Every op output is still
copied to object storage, in a background thread that the next op does not wait for, under
``{prefix}/runs/{run_id}/{step_key}/{output}/`` as one object per file plus
``manifest.json`` (written last, so a half-written copy is never read). Because that
location is derived from the producing run, a re-execution "from failure", in another
process, loads ``download``'s output from the parent run's objects instead of fetching the
input again. The write-back hooks wait for the run's copies (:func:`finish_run_copies`)
before they report the outcome and remove the scratch folder; a worker killed before then
leaves no manifest, and its re-execution says the stored output is missing. The asset value
(the published ``output_data``) is stored as JSON under
``{prefix}/assets/{asset}/{partition}.json``, in the background too. The same class serves
S3 and the local filesystem: only the :class:`ObjectStorageResource` differs.
"""

from __future__ import annotations

import json
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from dagster import ConfigurableIOManager, InputContext, OutputContext

from nolly_pipeline.errors import InputError
from nolly_pipeline.orchestration.resources import ObjectStorageResource, ScratchResource
from nolly_pipeline.storage.bundle import MediaBundle
from nolly_pipeline.storage.objects import ObjectStore


class _RunCopies:
    """One run's outputs in this process: the bundles on local disk, and their durable copies
    being written by one background thread (in order, so a manifest follows its files)."""

    def __init__(self, run_id: str) -> None:
        self.local: dict[tuple[str, ...], MediaBundle] = {}
        self.pending: list[Future[None]] = []
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"durable-copy-{run_id[:8]}")


_RUNS: dict[str, _RunCopies] = {}
_RUNS_LOCK = threading.Lock()


def _run_copies(run_id: str) -> _RunCopies:
    with _RUNS_LOCK:
        return _RUNS.setdefault(run_id, _RunCopies(run_id))


def finish_run_copies(run_id: str) -> list[BaseException]:
    """Wait until every durable copy of ``run_id``'s outputs is written and forget the run's
    local outputs (its scratch folder is about to go). Returns the copies' errors."""
    with _RUNS_LOCK:
        copies = _RUNS.pop(run_id, None)
    if copies is None:
        return []
    errors = [error for future in copies.pending if (error := future.exception()) is not None]
    copies.writer.shutdown(wait=True)
    return errors


class MediaIOManager(ConfigurableIOManager):
    storage: ObjectStorageResource
    scratch: ScratchResource
    bucket: str
    prefix: str

    # --- locations ----------------------------------------------------------------------
    def _output_prefix(self, context: OutputContext) -> str:
        if context.has_asset_key:
            key = "/".join(context.asset_key.path)
            partition = context.partition_key if context.has_partition_key else "__all__"
            return f"{self.prefix}/assets/{key}/{partition}"
        return "/".join([self.prefix, "runs", *context.get_identifier()])

    # --- Dagster hooks --------------------------------------------------------------------
    def handle_output(self, context: OutputContext, obj: Any) -> None:
        base = self._output_prefix(context)
        copies = _run_copies(context.run_id)
        if isinstance(obj, MediaBundle):
            names = [f"{i:02d}-{f.path.name}" for i, f in enumerate(obj.files)]
            copies.local[tuple(context.get_identifier())] = obj
            copies.pending.append(copies.writer.submit(self._put_bundle, base, obj, names))
            context.add_output_metadata({"objects": len(names), "location": f"{self.bucket}/{base}"})
        else:
            copies.pending.append(copies.writer.submit(self._put_json, self.storage.store(), f"{base}.json", obj))

    def load_input(self, context: InputContext) -> Any:
        upstream = context.upstream_output
        assert upstream is not None
        store = self.storage.store()
        base = self._output_prefix(upstream)
        if upstream.has_asset_key:
            return self._get_json(store, f"{base}.json")
        local = self._local_output(upstream)
        if local is not None:
            return local
        # Produced by another process: the parent run, for a re-execution from failure.
        dest = self.scratch.run_dir(context.step_context.run_id) / "inputs" / upstream.step_key / upstream.name
        dest.mkdir(parents=True, exist_ok=True)
        try:
            manifest = self._get_json(store, f"{base}/manifest.json")
        except InputError:
            raise InputError(
                f"the stored output of step {upstream.step_key} (run {upstream.run_id}) is missing;"
                " run the job again from the start"
            ) from None
        for entry in manifest["files"]:
            store.download(self.bucket, f"{base}/{entry['object']}", dest / entry["name"])
        return MediaBundle.from_manifest(manifest, dest)

    def _local_output(self, upstream: OutputContext) -> MediaBundle | None:
        """The upstream bundle if this process produced it and its files are still on disk."""
        with _RUNS_LOCK:
            copies = _RUNS.get(upstream.run_id)
        bundle = copies.local.get(tuple(upstream.get_identifier())) if copies else None
        if bundle is None or not all(f.path.is_file() for f in bundle.files):
            return None
        return bundle

    # --- storage helpers (the durable copies run in the run's writer thread) ---------------
    def _put_bundle(self, base: str, bundle: MediaBundle, names: list[str]) -> None:
        store = self.storage.store()
        for f, name in zip(bundle.files, names, strict=True):
            store.upload(f.path, self.bucket, f"{base}/{name}", f.content_type)
        self._put_json(store, f"{base}/manifest.json", bundle.manifest(names))

    def _put_json(self, store: ObjectStore, key: str, value: Any) -> None:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            json.dump(value, fh, default=str)
        path = Path(fh.name)
        try:
            store.upload(path, self.bucket, key, "application/json")
        finally:
            path.unlink(missing_ok=True)

    def _get_json(self, store: ObjectStore, key: str) -> Any:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "value.json"
            store.download(self.bucket, key, path)
            return json.loads(path.read_text())
