"""The registry of job types: one entry per type the frontend can create.

An entry says where the type's inputs live, what to call it in notifications, which
Replicate model serves it by default and which local processor does the work on the
machine. Adding a type is one predictor plus one entry here; assets, jobs, sensor routing
and settings validation are generated from this table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from nolly_pipeline.predictors.replicate_model import ReplicateModel


@dataclass(frozen=True)
class JobType:
    name: str
    label: str
    input_bucket: str
    # Media kinds accepted as input (see processing.media.probe).
    input_kinds: tuple[str, ...]
    replicate_default: ReplicateModel | None
    # Extra run tags for this type's job, e.g. ECS task size read by EcsRunLauncher.
    run_tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def ident(self) -> str:
        """A Python/Dagster-safe name: ``color-grade`` -> ``color_grade``."""
        return self.name.replace("-", "_")

    @property
    def env_suffix(self) -> str:
        """Suffix of per-type environment variables: ``color-grade`` -> ``COLOR_GRADE``."""
        return self.ident.upper()


JOB_TYPES: Mapping[str, JobType] = {
    t.name: t
    for t in (
        JobType(
            name="roto",
            label="Rotoscoping",
            input_bucket="vfx-assets",
            input_kinds=("video", "image"),
            replicate_default=ReplicateModel(
                ref="arielreplicate/robust_video_matting:73d2128a371922d5d1abf0712a1d974be0e4e2358cc1218e4e34714767232bac",
                file_input="input_video",
                static_input={"output_type": "alpha-mask"},
            ),
            # Local roto decodes, infers and encodes VP9 with alpha: the heaviest job.
            run_tags={"ecs/cpu": "4096", "ecs/memory": "8192"},
        ),
        JobType(
            name="color-grade",
            label="Colour grade",
            input_bucket="vfx-assets",
            input_kinds=("video", "image"),
            # No public Replicate model does LUT-style grading; set NOLLY_REPLICATE_MODEL_COLOR_GRADE.
            replicate_default=None,
            run_tags={"ecs/cpu": "2048", "ecs/memory": "4096"},
        ),
        JobType(
            name="audio-clean",
            label="Audio cleanup",
            input_bucket="audio-uploads",
            input_kinds=("audio", "video"),
            replicate_default=ReplicateModel(
                ref="resemble-ai/resemble-enhance:93266a7e7f5805fb79bcf213b1a4e0ef2e45aff3c06eefd96c59e850c87fd6a2",
                file_input="input_audio",
                static_input={"denoise_flag": True},
            ),
            run_tags={"ecs/cpu": "1024", "ecs/memory": "2048"},
        ),
    )
}


def label(job_type: str) -> str:
    entry = JOB_TYPES.get(job_type)
    return entry.label if entry else job_type
