"""What a finished job shows the operator: asset checks, numbers at a glance, a preview.

``predict`` assesses its outputs right after the backend returns, while the input and the
outputs are on local disk (:func:`assess`): the checks of :mod:`nolly_pipeline.processing.checks`
and the preview of :mod:`nolly_pipeline.processing.previews` run there, and their results
travel in the bundle's metadata (``checks``, ``measured``) with the preview as one more file
(role ``preview``). ``publish`` then turns them into the materialization's metadata
(:func:`materialization_metadata`) and the asset check results (:func:`check_results`), and
the same ``checks`` land in ``output_data.metadata`` for the frontend. A failed check is a
warning; nothing here can fail the job.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any, Mapping

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey, MetadataValue

from nolly_pipeline.processing.base import OutputFile, ProcessingResult
from nolly_pipeline.processing.checks import CHECKS


def check_specs(job_type: str, asset_key: AssetKey) -> list[AssetCheckSpec]:
    """One spec per check of the type: shown in the asset's Checks tab, run with every materialization."""
    return [AssetCheckSpec(name, asset=asset_key, description=text) for name, text in CHECKS[job_type].items()]


def assess(
    job_type: str,
    source: Path,
    result: ProcessingResult,
    settings: Mapping[str, Any],
    preview_path: Path,
    log: logging.Logger | Any,
) -> tuple[list[OutputFile], dict[str, Any]]:
    """Run the type's checks and render its preview; returns (files incl. preview, metadata to add)."""
    from nolly_pipeline.processing.checks import evaluate
    from nolly_pipeline.processing.previews import render_preview

    assessment = evaluate(job_type, source, result.files, settings, result.metadata)
    files = list(result.files)
    try:
        files.append(render_preview(job_type, source, result.files, preview_path))
    except Exception as exc:  # noqa: BLE001 - a preview is a courtesy: log it and deliver the job
        log.warning(f"no preview for this job: {type(exc).__name__}: {str(exc)[:300]}")
    return files, {"checks": [r.as_json() for r in assessment.results], "measured": assessment.measured}


def check_results(output_data: Mapping[str, Any]) -> list[AssetCheckResult]:
    """The asset check results of a published job (WARN when failed), from ``output_data``."""
    return [
        AssetCheckResult(
            check_name=entry["name"],
            passed=bool(entry["passed"]),
            severity=AssetCheckSeverity.WARN,
            description=entry.get("description"),
            metadata={k: v for k, v in (entry.get("values") or {}).items() if isinstance(v, (int, float, str))},
        )
        for entry in (output_data.get("metadata") or {}).get("checks") or []
    ]


def _model(metadata: Mapping[str, Any]) -> str:
    for key in ("replicate_model", "model"):
        if metadata.get(key):
            return str(metadata[key])
    if metadata.get("denoise"):
        return f"local (denoise: {metadata['denoise']})"
    return "local"


def preview_markdown(path: Path) -> str:
    return f"![preview](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode('ascii')})"


def materialization_metadata(
    output_data: Mapping[str, Any], preview: Path | None, attempt: int
) -> dict[str, MetadataValue]:
    """Numbers, text, the output URL and the preview, as the asset page shows them."""
    meta = output_data.get("metadata") or {}
    measured = meta.get("measured") or {}
    entries: dict[str, MetadataValue] = {
        "backend": MetadataValue.text(str(meta.get("backend", ""))),
        "model": MetadataValue.text(_model(meta)),
        "output_url": MetadataValue.url(output_data["output_url"]),
        "attempt": MetadataValue.int(attempt),
        "output_bytes": MetadataValue.int(int(next(f["bytes"] for f in output_data["files"] if f["role"] != "preview"))),
    }
    numbers = {
        "input_duration_seconds": measured.get("input_duration"),
        "processing_seconds": meta.get("processing_seconds"),
        "realtime_factor": meta.get("realtime_factor"),
        "fps": measured.get("fps"),
        "input_lufs": measured.get("input_lufs"),
        "output_lufs": measured.get("output_lufs"),
        "input_true_peak_db": measured.get("input_true_peak_db"),
        "output_true_peak_db": measured.get("output_true_peak_db"),
    }
    entries.update({k: MetadataValue.float(float(v)) for k, v in numbers.items() if v is not None})
    if measured.get("frames") is not None:
        entries["frames"] = MetadataValue.int(int(measured["frames"]))
    checks = meta.get("checks") or []
    if checks:
        entries["checks_passed"] = MetadataValue.text(f"{sum(c['passed'] for c in checks)}/{len(checks)}")
    if preview is not None and preview.is_file():
        entries["preview"] = MetadataValue.md(preview_markdown(preview))
    return entries
