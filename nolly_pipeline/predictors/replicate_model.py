"""Which Replicate model serves a job type, and how job fields map onto its inputs.

Kept apart from :mod:`replicate_backend` so the job-type registry can name its default
models without importing the ``replicate`` client (and httpx, and numpy through it): the
code location is imported by every run worker, and a deployment that runs every type
locally never needs them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class ReplicateModel:
    """Which model serves a job type and how job fields map onto its inputs."""

    # "owner/name" (an official model, latest version) or "owner/name:<version id>".
    ref: str
    # The model input that receives the media file.
    file_input: str
    # Fixed model inputs (e.g. ``{"output_type": "alpha-mask"}``).
    static_input: Mapping[str, Any] = field(default_factory=dict)
    # job setting name -> model input name; settings not listed are not sent.
    settings_map: Mapping[str, str] = field(default_factory=dict)

    def build_input(self, file_value: Any, settings: Mapping[str, Any]) -> dict[str, Any]:
        payload = dict(self.static_input)
        for setting, model_field in self.settings_map.items():
            if setting in settings and settings[setting] is not None:
                payload[model_field] = settings[setting]
        payload[self.file_input] = file_value
        return payload

    @classmethod
    def from_env(cls, ref: str, mapping_json: str | None, default: "ReplicateModel | None") -> "ReplicateModel":
        """Model from ``NOLLY_REPLICATE_MODEL_<TYPE>`` and ``NOLLY_REPLICATE_INPUT_<TYPE>`` (JSON)."""
        mapping = json.loads(mapping_json) if mapping_json else {}
        base = default if default and default.ref.split(":")[0] == ref.split(":")[0] else None
        file_input = mapping.get("file_input") or (base.file_input if base else None)
        if not file_input:
            raise ValueError(f"model {ref}: set file_input in its NOLLY_REPLICATE_INPUT_* JSON")
        return cls(
            ref=ref,
            file_input=file_input,
            static_input=mapping.get("static", base.static_input if base else {}),
            settings_map=mapping.get("settings_map", base.settings_map if base else {}),
        )
