"""End to end with a real ``dagster-daemon``: rows inserted with plain SQL reach a final state.

Everything is real but Replicate's servers: PostgreSQL for ``jobs`` and for Dagster's own
storage, moto's S3 server process, the daemon, its sensor and one run worker process per job.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa
from dagster import DagsterInstance, RunsFilter

from nolly_pipeline.db.jobs import JobStore
from nolly_pipeline.storage.objects import S3ObjectStore
from nolly_pipeline_tests import services
from nolly_pipeline_tests.e2e.daemon import running_daemon, wait_until, write_instance_yaml
from nolly_pipeline_tests.fakes.replicate_api import Behavior, FakeReplicate
from nolly_pipeline_tests.fakes.versions import AUDIO_VERSION, ROTO_VERSION
from nolly_pipeline_tests.media import tiny_video, tiny_wav
from nolly_pipeline_tests.seed import insert_job


def insert(engine: sa.Engine, job_type: str, input_data: object, user: uuid.UUID) -> uuid.UUID:
    with engine.begin() as conn:
        return insert_job(conn, job_type, input_data, user)


# Distinctive secrets: they must not show up in logs, tags, run config, rows or notifications.
SECRETS = {
    "REPLICATE_API_TOKEN": "r8_TopSecretTokenValue123",
    "AWS_ACCESS_KEY_ID": "AKIASECRETKEYID00001",
    "AWS_SECRET_ACCESS_KEY": "wJalrSecretAccessKeyValue000",
}
DB_PASSWORD = "pw_DbSecretPassword42"  # trust auth here accepts any password


def with_password(url: str) -> str:
    parsed = sa.make_url(url)
    return parsed.set(password=DB_PASSWORD).render_as_string(hide_password=False)


def assert_no_secrets(texts: dict[str, str]) -> None:
    for where, text in texts.items():
        for secret in [*SECRETS.values(), DB_PASSWORD]:
            assert secret not in text, f"secret {secret[:6]}... leaked into {where}"


@pytest.fixture
def secret_replicate() -> "Iterator[FakeReplicate]":
    with FakeReplicate(token=SECRETS["REPLICATE_API_TOKEN"]) as fake:
        yield fake


def test_daemon_processes_rows_from_the_frontend(
    tmp_path: Path, pg_store: JobStore, postgres_url: str, s3_endpoint: str, secret_replicate: FakeReplicate,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_replicate = secret_replicate
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, SECRETS[key])
    fake_replicate.set_behavior(ROTO_VERSION, Behavior(starting=1, processing=2))
    fake_replicate.set_behavior(AUDIO_VERSION, Behavior(starting=0, processing=1))
    fake_replicate.set_behavior("studio/grade", Behavior(starting=0, processing=1))
    s3 = S3ObjectStore.connect(s3_endpoint, "us-east-1")
    intermediates = f"inter-{uuid.uuid4().hex[:8]}"
    s3.ensure_buckets(("vfx-assets", "audio-uploads", "outputs", intermediates))
    user = uuid.uuid4()
    sources = {"roto": ("vfx-assets", tiny_video(5)), "color-grade": ("vfx-assets", tiny_video(7)),
               "audio-clean": ("audio-uploads", tiny_wav())}
    payload = tmp_path / "payload"
    urls = {}
    for job_type, (bucket, data) in sources.items():
        payload.write_bytes(data)
        name = f"{job_type}.{'wav' if bucket == 'audio-uploads' else 'mp4'}"
        s3.upload(payload, bucket, f"{user}/{name}")
        urls[job_type] = f"s3://{bucket}/{user}/{name}"

    with services.postgres_database("nolly_dagster") as dagster_storage_url:
        home = tmp_path / "dagster_home"
        write_instance_yaml(home, dagster_storage_url)
        env = {
            "DAGSTER_HOME": str(home),
            "NOLLY_DATABASE_URL": with_password(postgres_url),
            "NOLLY_STORAGE": "s3",
            "NOLLY_S3_ENDPOINT_URL": s3_endpoint,
            "NOLLY_INTERMEDIATE_BUCKET": intermediates,
            **SECRETS,
            "REPLICATE_BASE_URL": fake_replicate.base_url,
            "NOLLY_REPLICATE_POLL_SECONDS": "0.2",
            "NOLLY_REPLICATE_MODEL_COLOR_GRADE": "studio/grade",
            "NOLLY_REPLICATE_INPUT_COLOR_GRADE": '{"file_input": "input_video"}',
            "NOLLY_SENSOR_INTERVAL_SECONDS": "1",
        }
        engine = pg_store.engine
        with running_daemon(env, tmp_path / "daemon.log"):
            started = time.monotonic()
            good = {t: insert(engine, t, {"file_url": urls[t], "settings": {}}, user) for t in sources}
            bad_type = insert(engine, "sharpen", {"file_url": urls["roto"]}, user)
            bad_url = insert(engine, "roto", {"file_url": "http://169.254.169.254/latest/meta-data"}, user)
            all_ids = [*good.values(), bad_type, bad_url]

            def all_terminal() -> bool:
                return all(pg_store.get(i).status in ("done", "failed") for i in all_ids)  # type: ignore[union-attr]

            elapsed = wait_until(all_terminal, timeout=240, what="all jobs terminal",
                                 on_timeout=lambda: (tmp_path / "daemon.log").read_text()[-5000:])
        print(f"\n{len(all_ids)} jobs terminal {elapsed:.1f} s after insert (startup included: "
              f"{time.monotonic() - started:.1f} s)")

        for job_type, job_id in good.items():
            row = pg_store.get(job_id)
            assert row.status == "done", (job_type, row.error_message)
            dest = tmp_path / f"{job_type}.out"
            s3.download("outputs", row.output_data["storage_path"], dest)
            assert dest.read_bytes() == b"FAKE-REPLICATE:" + sources[job_type][1]
            assert [n["kind"] for n in pg_store.notifications_for(job_id)] == ["job_done"]
        assert "unknown job type 'sharpen'" in pg_store.get(bad_type).error_message  # type: ignore[union-attr]
        assert "unsupported file_url" in pg_store.get(bad_url).error_message  # type: ignore[union-attr]
        for job_id in (bad_type, bad_url):
            assert [n["kind"] for n in pg_store.notifications_for(job_id)] == ["job_failed"]

        # Dagster's own records: exactly one run per dispatched job, tagged for the UI.
        instance = DagsterInstance.from_config(str(home))
        texts = {"daemon log": (tmp_path / "daemon.log").read_text()}
        try:
            for job_id in good.values():
                runs = instance.get_runs(filters=RunsFilter(tags={"nolly/job_id": str(job_id)}))
                assert len(runs) == 1 and runs[0].tags["nolly/attempt"] == "1"
                run = runs[0]
                texts[f"run {run.run_id} tags"] = json.dumps(dict(run.tags))
                texts[f"run {run.run_id} config"] = json.dumps(run.run_config, default=str)
                texts[f"run {run.run_id} events"] = "\n".join(
                    repr(entry) for entry in instance.all_logs(run.run_id)
                )
            assert not instance.get_runs(filters=RunsFilter(tags={"nolly/job_id": str(bad_type)}))
        finally:
            instance.dispose()
        for path in home.rglob("*"):
            if path.is_file():
                texts[str(path)] = path.read_bytes().decode("utf-8", "replace")
        with engine.connect() as conn:
            texts["jobs"] = repr(conn.execute(sa.text("SELECT * FROM jobs")).all())
            texts["notifications"] = repr(conn.execute(sa.text("SELECT * FROM notifications")).all())
        assert_no_secrets(texts)
