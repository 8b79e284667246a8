"""Result-reuse benchmark: seconds to ``done`` for a job processed vs. the same job reused.

Run with ``make bench`` (or ``.venv/bin/python benchmarks/reuse.py``). Needs PostgreSQL
(127.0.0.1:5432 or ``NOLLY_TEST_DATABASE_URL``); starts moto's S3 server and a real
``dagster-daemon`` with the local backends. Each pair is one clip submitted twice, the
second time re-uploaded under a new key as an editor would: the first job is processed
(local colour grade), the second is reused. Both go through the same sensor, run launch
and ops, side by side in one run. Results are printed and written to ``docs/benchmarks.md``
between the ``reuse`` markers.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import _daemon_setup  # noqa: E402, F401  (first: repo on sys.path, test AWS keys)

from benchmarks._doc import write_section  # noqa: E402
from nolly_pipeline.config import SEED_BUCKETS  # noqa: E402
from nolly_pipeline.db import migrate  # noqa: E402
from nolly_pipeline.db.engine import get_engine  # noqa: E402
from nolly_pipeline.db.jobs import JobStore  # noqa: E402
from nolly_pipeline.storage.objects import S3ObjectStore  # noqa: E402
from nolly_pipeline_tests import services  # noqa: E402
from nolly_pipeline_tests.e2e.daemon import running_daemon, wait_until, write_instance_yaml  # noqa: E402
from nolly_pipeline_tests.processing.reference import ffmpeg  # noqa: E402

PAIRS = 3
CLIP_SECONDS, CLIP_SIZE = 8, "1280x720"
SETTINGS = {"preset": "teal-orange"}


def clip(path: Path, hue: int) -> Path:
    """A distinct 720p clip per pair (the hue shift), so each pair's first job really processes."""
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=s={CLIP_SIZE}:r=25:d={CLIP_SECONDS}", "-vf", f"hue=h={hue}",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path))
    return path


def _median(pairs: list[tuple[float, float]], index: int) -> float:
    return statistics.median(p[index] for p in pairs)


def _row(label: str, pairs: list[tuple[float, float]]) -> str:
    cells = [f"{_median(pairs, i):.1f} ({', '.join(f'{p[i]:.1f}' for p in pairs)})" for i in (0, 1)]
    return f"| {label} | {cells[0]} | {cells[1]} |"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, services.s3_server() as s3_url, \
            services.postgres_database("nolly_bench_reuse") as pg_url, \
            services.postgres_database("nolly_bench_dagster") as dagster_url:
        engine = get_engine(pg_url)
        migrate.upgrade(engine)
        store = JobStore(engine)
        s3 = S3ObjectStore.connect(s3_url, "us-east-1")
        s3.ensure_buckets((*SEED_BUCKETS, "pipeline-intermediates"))
        home = Path(tmp) / "home"
        write_instance_yaml(home, dagster_url)
        env = {
            "DAGSTER_HOME": str(home), "NOLLY_DATABASE_URL": pg_url, "NOLLY_STORAGE": "s3",
            "NOLLY_S3_ENDPOINT_URL": s3_url, "NOLLY_SENSOR_INTERVAL_SECONDS": "1",
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        }
        env_clean = {k: v for k, v in os.environ.items() if not k.startswith(("NOLLY_", "REPLICATE_"))}
        user = uuid.uuid4()

        def submit(path: Path) -> uuid.UUID:
            key = f"{user}/{uuid.uuid4().hex[:8]}-{path.name}"
            s3.upload(path, "vfx-assets", key, "video/mp4")
            return store.insert_job("color-grade", {"file_url": f"s3://vfx-assets/{key}", "settings": SETTINGS}, user)

        def seconds_to_done(path: Path) -> tuple[tuple[float, float], uuid.UUID]:
            """(insert -> done, the run's own share: started_at -> completed_at), and the job id."""
            job_id = submit(path)
            start = time.monotonic()
            wait_until(lambda: store.get(job_id).status in ("done", "failed"),  # type: ignore[union-attr]
                       timeout=600, interval=0.1, what="job final")
            row = store.get(job_id)
            assert row is not None and row.status == "done", (row.error_message if row else "missing")
            assert row.started_at and row.completed_at
            return (time.monotonic() - start, (row.completed_at - row.started_at).total_seconds()), job_id

        processed: list[tuple[float, float]] = []
        reused: list[tuple[float, float]] = []
        with running_daemon({**env_clean, **env}, Path(tmp) / "daemon.log"):
            seconds_to_done(clip(Path(tmp) / "warm.mp4", 200))  # imports, connections, first run
            for pair in range(PAIRS):
                path = clip(Path(tmp) / f"clip{pair}.mp4", 40 * pair)
                first, first_id = seconds_to_done(path)
                second, second_id = seconds_to_done(path)
                source = store.get(second_id).output_data.get("reused_from")  # type: ignore[union-attr]
                assert source == str(first_id), f"pair {pair}: the second job was not reused"
                processed.append(first)
                reused.append(second)
    lines = [
        "## Result reuse (`benchmarks/reuse.py`)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on this 2-core machine (shared with other work: absolute"
        " figures are noisy, the ratio is side by side); PostgreSQL 15, moto S3, real `dagster-daemon`,"
        f" local colour grade (`teal-orange`) of a {CLIP_SIZE} {CLIP_SECONDS} s H.264 clip. Seconds from the"
        " row's insert to `done`, each pair the same bytes re-uploaded under a new key.",
        "",
        "| job | insert -> done, median s (each) | in the run: started -> done, median s (each) |",
        "|---|---|---|",
        _row("processed", processed),
        _row("reused (outputs copied, no processing)", reused),
        f"| ratio processed / reused | {_median(processed, 0) / _median(reused, 0):.1f}x |"
        f" {_median(processed, 1) / _median(reused, 1):.1f}x |",
        "",
        "What remains for a reused job is the pipeline's own overhead (sensor tick, run launch, three ops,"
        " download and hash of the input, server-side copies); the processing it skips grows with the clip, and"
        " a Replicate prediction it replaces takes minutes and costs money.",
    ]
    text = "\n".join(lines)
    print(text)
    write_section("reuse", text)


if __name__ == "__main__":
    main()
