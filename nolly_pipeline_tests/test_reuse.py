"""reuse.py: what goes into the key, which done rows are candidates, and what the settings allow."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from pathlib import Path

import pytest

from nolly_pipeline import reuse
from nolly_pipeline.db.job_rows import RunIdentity
from nolly_pipeline.db.jobs import JobStore
from nolly_pipeline.errors import InputError, PermanentError
from nolly_pipeline.predictors.base import Predictor
from nolly_pipeline.predictors.replicate_backend import ReplicateModel
from nolly_pipeline.storage.objects import LocalObjectStore
from nolly_pipeline_tests.test_validation import check, predictor

SHA = hashlib.sha256(b"clip").hexdigest()
URL = "s3://vfx-assets/22222222-2222-4222-8222-222222222222/clip.mp4"


def key(job_type: str = "roto", settings: dict | None = None, backend: str = "local",
        sha: str = SHA, chosen: Predictor | None = None) -> str | None:
    spec = check(job_type, {"file_url": URL, "settings": settings or {}}, backend)
    return reuse.reuse_key(spec, chosen or predictor(job_type, backend), sha)


def test_the_key_is_the_validated_settings_not_their_spelling() -> None:
    assert key() == key(settings={"smoothing": 0.6, "format": "webm", "refine_edges": False})
    assert key(settings={"reuse": False}) == key()  # "reuse" is the pipeline's, not the processor's
    assert key() != key(settings={"smoothing": 0.3})


def test_every_part_of_the_key_counts() -> None:
    base = key()
    assert base is not None and len(base) == 64
    assert key(sha=hashlib.sha256(b"other clip").hexdigest()) != base
    assert key("color-grade") != key("color-grade", settings={"preset": "noir"})
    assert key(backend="replicate") not in (base, None)  # roto's default model is pinned
    local = predictor("roto", "local")
    bumped = dataclasses.replace(local, version="roto/2")  # type: ignore[type-var]
    assert key(chosen=bumped) != base


def test_replicate_version_and_input_mapping_are_in_the_key() -> None:
    pinned = predictor("roto", "replicate")
    other_version = dataclasses.replace(  # type: ignore[type-var]
        pinned, model=dataclasses.replace(pinned.model, ref=pinned.model.ref.split(":")[0] + ":" + "0" * 64)
    )
    other_mapping = dataclasses.replace(  # type: ignore[type-var]
        pinned, model=dataclasses.replace(pinned.model, static_input={"output_type": "green-screen"})
    )
    keys = {key(backend="replicate", chosen=p) for p in (pinned, other_version, other_mapping)}
    assert len(keys) == 3 and None not in keys


def test_no_key_when_the_output_could_change_under_the_same_key() -> None:
    unpinned = predictor("color-grade", "replicate")  # studio/grade: no version
    assert isinstance(unpinned.model, ReplicateModel) and ":" not in unpinned.model.ref  # type: ignore[attr-defined]
    assert key("color-grade", backend="replicate", chosen=unpinned) is None
    # The LUT's bytes are not in the key: a LUT replaced under the same URL must not be missed.
    assert key("color-grade", settings={"lut_url": "s3://vfx-assets/u/look.cube"}) is None


@pytest.mark.parametrize("value", ["no", 0, None, {"x": 1}])
def test_reuse_setting_must_be_a_boolean(value: object) -> None:
    with pytest.raises(InputError, match="settings.reuse must be true or false"):
        check("roto", {"file_url": URL, "settings": {"reuse": value}})


def test_reuse_false_is_read_and_kept_from_the_processor() -> None:
    spec = check("roto", {"file_url": URL, "settings": {"reuse": False, "smoothing": 0.2}})
    assert spec.reuse is False and spec.settings == {"smoothing": 0.2}
    assert check("roto", {"file_url": URL}).reuse is True


def _done(store: JobStore, user: uuid.UUID, reuse_key: str | None, files: list[dict]) -> uuid.UUID:
    job_id = store.insert_job("roto", {"file_url": URL}, user)
    store.claim_dispatchable(10)
    run = RunIdentity(run_id=f"run-{job_id}", attempt=1)
    store.start_run(job_id, run)
    if reuse_key:
        assert store.set_phase(job_id, run, "downloading", reuse_key=reuse_key)
    assert store.finish_done(job_id, run.run_id, {"bucket": "outputs", "files": files, "output_url": "x"})
    return job_id


def test_find_source_honours_scope_and_skips_sources_with_missing_files(store: JobStore, tmp_path: Path) -> None:
    objects = LocalObjectStore(tmp_path / "buckets")
    objects.ensure_buckets(("outputs",))
    (tmp_path / "out.webm").write_bytes(b"matte")
    alice, bob = uuid.uuid4(), uuid.uuid4()
    present = [{"role": "video", "storage_path": "a/1/a1/00-out.webm", "content_type": "video/webm", "bytes": 5}]
    objects.upload(tmp_path / "out.webm", "outputs", "a/1/a1/00-out.webm")
    gone = [{"role": "video", "storage_path": "a/2/a1/00-out.webm", "content_type": "video/webm", "bytes": 5}]
    older = _done(store, alice, "k1", present)
    _done(store, alice, "k1", gone)  # newer, but its file was deleted
    bobs = _done(store, bob, "k2", present)
    asking = store.get(store.insert_job("roto", {"file_url": URL}, alice))
    assert asking is not None

    assert reuse.find_source(store, objects, asking, "k1", "user").id == older  # type: ignore[union-attr]
    assert reuse.find_source(store, objects, asking, "k2", "user") is None
    assert reuse.find_source(store, objects, asking, "k2", "global").id == bobs  # type: ignore[union-attr]
    assert reuse.find_source(store, objects, asking, "k1", "off") is None
    assert reuse.find_source(store, objects, asking, "k3", "global") is None

    copied = reuse.copy_outputs(objects, str(older), store.get(older).output_data, "a/9/a1")  # type: ignore[union-attr]
    assert copied == [reuse.StoredFile("video", "a/9/a1/00-out.webm", "video/webm", 5)]
    assert objects.exists("outputs", "a/9/a1/00-out.webm")
    with pytest.raises(PermanentError, match="were deleted while being copied; retry the job"):
        reuse.copy_outputs(objects, "x", {"bucket": "outputs", "files": gone}, "a/10/a1")
