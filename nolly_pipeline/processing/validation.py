"""Turn raw ``input_data.settings`` into a typed settings object, or a readable error.

Editors see the message, so it names the offending field and says what was expected,
e.g. ``invalid setting 'intensity': Input should be less than or equal to 1``.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from nolly_pipeline.errors import InputError

SettingsT = TypeVar("SettingsT", bound=BaseModel)


def parse_settings(model: type[SettingsT], raw: Any) -> SettingsT:
    """Validate ``raw`` against ``model`` (which should forbid extra fields)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError(f"settings must be a JSON object, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown setting '{field}'")
            else:
                problems.append(f"invalid setting '{field}': {err['msg']}")
        raise InputError("; ".join(problems)) from None
