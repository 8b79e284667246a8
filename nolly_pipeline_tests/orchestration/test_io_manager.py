"""The IO manager hands intermediates over on local disk and writes their durable copy behind.

Within one run (one process) the next op gets the previous op's files where they are, even
while their copy to storage is still being written; the hooks then wait for the copies, which
are what a re-execution in another process reads (see test_reexecution.py).
"""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

from dagster import build_input_context, build_output_context

from nolly_pipeline.errors import TransientError
from nolly_pipeline.orchestration.io_manager import MediaIOManager, finish_run_copies
from nolly_pipeline.orchestration.resources import ObjectStorageResource, ScratchResource
from nolly_pipeline.storage.bundle import MediaBundle
from nolly_pipeline.storage.objects import LocalObjectStore

GATE = threading.Event()  # uploads of GatedStorage wait for it
FAIL = {"on": False}


class GatedLocalStore(LocalObjectStore):
    def upload(self, src: Path, bucket: str, key: str, content_type: str | None = None) -> None:
        assert GATE.wait(30), "upload never released"
        if FAIL["on"]:
            raise TransientError(f"storage error 503 on {bucket}/{key}")
        super().upload(src, bucket, key, content_type)


class GatedStorage(ObjectStorageResource):
    """Local storage whose uploads wait for the test's go-ahead."""

    def store(self) -> LocalObjectStore:
        return GatedLocalStore(Path(self.local_dir))


def io_manager(tmp_path: Path) -> MediaIOManager:
    return MediaIOManager(
        storage=GatedStorage(kind="local", local_dir=str(tmp_path / "storage")),
        scratch=ScratchResource(root=str(tmp_path / "scratch")),
        bucket="pipeline-intermediates",
        prefix="dagster-io",
    )


def bundle(tmp_path: Path) -> MediaBundle:
    source = tmp_path / "scratch" / "run" / "source" / "take.wav"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"RIFF-audio")
    return MediaBundle.single(source, "source", "audio/wav", origin="audio-uploads/u/take.wav")


def test_next_op_reads_local_files_while_the_durable_copy_is_written(tmp_path: Path) -> None:
    GATE.clear()
    FAIL["on"] = False
    manager, value, run_id = io_manager(tmp_path), bundle(tmp_path), str(uuid.uuid4())
    output = build_output_context(step_key="audio_clean.download", name="result", run_id=run_id)
    manager.handle_output(output, value)  # returns although the upload cannot start yet
    loaded = manager.load_input(build_input_context(upstream_output=output))
    assert loaded == value  # the same files on local disk, not a copy fetched back

    stored = tmp_path / "storage" / "pipeline-intermediates" / "dagster-io" / "runs" / run_id / "audio_clean.download" / "result"
    assert not (stored / "manifest.json").exists()
    GATE.set()
    assert finish_run_copies(run_id) == []
    manifest = json.loads((stored / "manifest.json").read_text())
    assert manifest["files"][0]["name"] == "take.wav" and manifest["metadata"]["origin"] == "audio-uploads/u/take.wav"
    assert (stored / manifest["files"][0]["object"]).read_bytes() == b"RIFF-audio"


def test_a_failed_copy_is_reported_when_the_run_ends_and_leaves_no_manifest(tmp_path: Path) -> None:
    GATE.set()
    FAIL["on"] = True
    try:
        manager, run_id = io_manager(tmp_path), str(uuid.uuid4())
        output = build_output_context(step_key="roto.download", name="result", run_id=run_id)
        manager.handle_output(output, bundle(tmp_path))
        errors = finish_run_copies(run_id)
    finally:
        FAIL["on"] = False
    assert len(errors) == 1 and isinstance(errors[0], TransientError)
    assert not list((tmp_path / "storage").rglob("manifest.json"))
    assert finish_run_copies(run_id) == []  # the run is forgotten
