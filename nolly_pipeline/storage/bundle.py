"""A set of media files passed between ops, with the manifest that describes them.

Between ``download``, ``predict`` and ``publish`` the value is a :class:`MediaBundle`: files
on local disk plus their roles and content types. The IO manager stores each file as its
own object and the manifest as JSON, so nothing is ever pickled or held whole in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nolly_pipeline.processing.base import OutputFile, ProcessingResult


@dataclass(frozen=True)
class MediaBundle:
    files: tuple[OutputFile, ...]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def primary(self) -> OutputFile:
        return self.files[0]

    @classmethod
    def single(cls, path: Path, role: str, content_type: str, **metadata: Any) -> "MediaBundle":
        return cls(files=(OutputFile(path=path, role=role, content_type=content_type),), metadata=metadata)

    @classmethod
    def from_result(cls, result: ProcessingResult) -> "MediaBundle":
        return cls(files=tuple(result.files), metadata=dict(result.metadata))

    def manifest(self, object_names: list[str]) -> dict[str, Any]:
        """JSON description; ``object_names[i]`` is where file ``i`` was stored."""
        return {
            "files": [
                {"role": f.role, "content_type": f.content_type, "name": f.path.name, "object": obj}
                for f, obj in zip(self.files, object_names, strict=True)
            ],
            "metadata": self.metadata,
        }

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any], local_dir: Path) -> "MediaBundle":
        """The bundle as it will be once every file is downloaded into ``local_dir``."""
        files = tuple(
            OutputFile(path=local_dir / entry["name"], role=entry["role"], content_type=entry["content_type"])
            for entry in manifest["files"]
        )
        return cls(files=files, metadata=dict(manifest.get("metadata") or {}))
