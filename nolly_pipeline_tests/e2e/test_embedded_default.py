"""The embedded default, as a newcomer runs it: no configuration, SQLite, local files, local backends.

Jobs are submitted with the CLI (uploading into local buckets as the frontend would) and a
real ``dagster-daemon`` with the repo's ``dagster.yaml`` processes them with the local
processing backends. Every output must decode.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from nolly_pipeline.processing.media import probe
from nolly_pipeline_tests.e2e.daemon import running_daemon, wait_until, write_instance_yaml
from nolly_pipeline_tests.processing.roto_fixtures import models_dir, write_static_clip, write_tone  # noqa: F401

CLI = str(Path(sys.executable).with_name("nolly-pipeline"))


def cli(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([CLI, *args], env=env, capture_output=True, text=True, check=True)
    return result.stdout.strip()


def test_all_three_types_complete_locally(tmp_path: Path, models_dir: Path) -> None:  # noqa: F811
    home = tmp_path / "home"
    write_instance_yaml(home, storage_url=None)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOLLY_", "REPLICATE_", "AWS_"))}
    env.update({"DAGSTER_HOME": str(home), "NOLLY_SENSOR_INTERVAL_SECONDS": "1", "NOLLY_MODELS_DIR": str(models_dir)})

    clip, voice = tmp_path / "shot.mp4", tmp_path / "voice.wav"
    write_static_clip(clip, width=320, height=240, frames=12, audio="aac")
    write_tone(voice, seconds=2.0)
    cli(env, "migrate")
    jobs = {
        "roto": cli(env, "submit", "roto", str(clip)),
        "color-grade": cli(env, "submit", "color-grade", str(clip), "--settings", '{"preset": "teal-orange"}'),
        "audio-clean": cli(env, "submit", "audio-clean", str(voice)),
        "bad-setting": cli(env, "submit", "color-grade", str(clip), "--settings", '{"intensity": 7}'),
    }

    def row(job_id: str) -> dict:
        return json.loads(cli(env, "status", job_id))

    with running_daemon(env, tmp_path / "daemon.log"):
        try:
            wait_until(lambda: all(row(j)["status"] in ("done", "failed") for j in jobs.values()),
                       timeout=240, interval=1, what="local jobs terminal")
        except TimeoutError:
            print((tmp_path / "daemon.log").read_text()[-6000:])
            raise

    storage = home / "storage"
    for job_type in ("roto", "color-grade", "audio-clean"):
        final = row(jobs[job_type])
        assert final["status"] == "done", (job_type, final["error_message"])
        assert final["output_data"]["output_url"].startswith("file://")
        for entry in final["output_data"]["files"]:
            path = storage / "outputs" / entry["storage_path"]
            if entry["content_type"].startswith(("video/", "audio/", "image/")):
                info = probe(path)
                assert info.kind in ("video", "audio", "image"), (job_type, entry)
    roto_files = row(jobs["roto"])["output_data"]["files"]
    assert roto_files[0]["storage_path"].endswith(".webm")
    bad = row(jobs["bad-setting"])
    assert bad["status"] == "failed" and "intensity" in bad["error_message"]
