"""The contract between a processing function and the pipeline.

Every local processor takes a source file on disk, writes its outputs into ``out_dir`` and
returns a :class:`ProcessingResult`. The first file is the primary output (it becomes
``output_data.output_url``); the others are listed alongside it. Progress is reported as
``(done, total)`` units (frames for video, samples or seconds for audio) so the pipeline can
write it to the job row and use it as a heartbeat.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ProgressFn = Callable[[int, int], None]


def no_progress(done: int, total: int) -> None:
    """Default progress callback for callers that do not track progress."""


@dataclass(frozen=True)
class OutputFile:
    """One produced file. ``role`` names it in ``output_data`` (e.g. ``"video"``, ``"matte"``)."""

    path: Path
    role: str
    content_type: str


@dataclass(frozen=True)
class ProcessingResult:
    files: list[OutputFile]
    metadata: dict[str, Any] = field(default_factory=dict)
