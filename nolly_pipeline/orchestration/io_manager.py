"""IO manager that keeps intermediate media in object storage, streamed file by file.

Op outputs (:class:`MediaBundle`) are stored under
``{prefix}/runs/{run_id}/{step_key}/{output}/`` as one object per file plus
``manifest.json``. Because the location is derived from the producing run, a re-execution
"from failure" loads ``download``'s output from the parent run's objects instead of fetching
the input again. The asset value (the published ``output_data``) is stored as JSON under
``{prefix}/assets/{asset}/{partition}.json``. The same class serves S3 and the local
filesystem: only the :class:`ObjectStorageResource` differs.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from dagster import ConfigurableIOManager, InputContext, OutputContext

from nolly_pipeline.orchestration.resources import ObjectStorageResource, ScratchResource
from nolly_pipeline.storage.bundle import MediaBundle
from nolly_pipeline.storage.objects import ObjectStore


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
        store = self.storage.store()
        base = self._output_prefix(context)
        if isinstance(obj, MediaBundle):
            names = [f"{i:02d}-{f.path.name}" for i, f in enumerate(obj.files)]
            for f, name in zip(obj.files, names, strict=True):
                store.upload(f.path, self.bucket, f"{base}/{name}", f.content_type)
            self._put_json(store, f"{base}/manifest.json", obj.manifest(names))
            context.add_output_metadata({"objects": len(names), "location": f"{self.bucket}/{base}"})
        else:
            self._put_json(store, f"{base}.json", obj)

    def load_input(self, context: InputContext) -> Any:
        upstream = context.upstream_output
        assert upstream is not None
        store = self.storage.store()
        base = self._output_prefix(upstream)
        if upstream.has_asset_key:
            return self._get_json(store, f"{base}.json")
        local = self.scratch.run_dir(context.step_context.run_id) / "inputs" / upstream.step_key / upstream.name
        local.mkdir(parents=True, exist_ok=True)
        manifest = self._get_json(store, f"{base}/manifest.json")
        for entry in manifest["files"]:
            store.download(self.bucket, f"{base}/{entry['object']}", local / entry["name"])
        return MediaBundle.from_manifest(manifest, local)

    # --- JSON helpers ---------------------------------------------------------------------
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
