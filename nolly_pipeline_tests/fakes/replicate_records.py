"""The fake Replicate's records and knobs: behaviours, predictions, uploads, requests, faults.

Shared by the fake's state (``replicate_api.FakeReplicate``) and its HTTP handler
(``replicate_http.py``); see ``replicate_api.py`` for the wire format.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Sequence

if TYPE_CHECKING:  # the fake whose helpers OutputContext lends
    from nolly_pipeline_tests.fakes.replicate_api import FakeReplicate

FAKE_PREFIX = b"FAKE-REPLICATE:"
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled", "aborted"})
FinalStatus = Literal["succeeded", "failed", "canceled", "aborted"]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
UNSET: Any = object()


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def new_id() -> str:
    # Real prediction ids look like "gm3qorzdhgbfurvjtvhg6dckhu" (26 lowercase base32 chars).
    return base64.b32encode(secrets.token_bytes(20)).decode().lower()[:26]


def default_transform(data: bytes) -> bytes:
    return FAKE_PREFIX + data


# --------------------------------------------------------------------------- behaviour


class FakeModelError(Exception):
    """Raised while building an output; turns the prediction into ``failed``."""


@dataclass
class Behavior:
    """How the fake "model" behaves for predictions naming a given model/version.

    Timing: the prediction is ``starting`` for ``starting`` units, then ``processing``
    for ``processing`` units, then reaches ``final_status``.  With ``unit="polls"`` a
    unit is one ``GET /v1/predictions/<id>`` (the create response counts as poll 0, so
    ``starting=0, processing=0`` makes the create response itself terminal); with
    ``unit="seconds"`` it is wall-clock seconds since creation.
    """

    starting: float = 1
    processing: float = 1
    unit: Literal["polls", "seconds"] = "polls"
    final_status: FinalStatus = "succeeded"
    error: str = "fake model error"  # error text for final_status="failed"
    never_finishes: bool = False  # stay "processing" forever (deadline tests)
    # Output (only for "succeeded"). Precedence: output_fn > output (literal) > files.
    input_field: str | None = None  # None: first input value that is an http(s)/data URL
    output_kind: Literal["url", "list", "dict"] = "url"
    output_name: str | None = None  # file name; default "output<input ext>"
    list_count: int = 2  # number of URLs for output_kind="list"
    output_keys: Sequence[str] = ("output",)  # keys for output_kind="dict"
    transform: Callable[[bytes], bytes] | None = None  # default: FAKE_PREFIX + data
    output: Any = UNSET  # literal JSON output, returned verbatim
    output_fn: Callable[["OutputContext"], Any] | None = None
    logs: str = ""
    version: str | None = None  # version id reported for model-slug predictions
    metrics: Mapping[str, Any] | None = None  # extra metrics on completion

    _JSON_FIELDS = (
        "starting", "processing", "unit", "final_status", "error", "never_finishes",
        "input_field", "output_kind", "output_name", "list_count", "output_keys",
        "output", "logs", "version", "metrics",
    )

    def __post_init__(self) -> None:
        if self.final_status not in TERMINAL_STATUSES:
            raise ValueError(f"final_status must be one of {sorted(TERMINAL_STATUSES)}")
        if self.unit not in ("polls", "seconds"):
            raise ValueError("unit must be 'polls' or 'seconds'")
        if self.output_kind not in ("url", "list", "dict"):
            raise ValueError("output_kind must be 'url', 'list' or 'dict'")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Behavior":
        unknown = set(data) - set(cls._JSON_FIELDS)
        if unknown:
            raise ValueError(f"unknown Behavior fields: {sorted(unknown)}")
        kwargs = dict(data)
        if "output_keys" in kwargs:
            kwargs["output_keys"] = tuple(kwargs["output_keys"])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        if self.transform is not None or self.output_fn is not None:
            raise ValueError("callables cannot be serialised; use them in-process only")
        out = {}
        for name in self._JSON_FIELDS:
            value = getattr(self, name)
            if name == "output" and value is UNSET:
                continue
            if name == "output_keys":
                value = list(value)
            out[name] = value
        return out


@dataclass
class UploadedFile:
    id: str
    name: str
    content_type: str
    data: bytes
    metadata: dict[str, Any]
    created_at: str

    def to_json(self, base_url: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "content_type": self.content_type,
            "size": len(self.data),
            "etag": hashlib.md5(self.data).hexdigest(),  # noqa: S324 - not security
            "checksums": {
                "sha256": hashlib.sha256(self.data).hexdigest(),
                "md5": hashlib.md5(self.data).hexdigest(),  # noqa: S324
            },
            "metadata": self.metadata,
            "created_at": self.created_at,
            "expires_at": None,
            "urls": {"get": f"{base_url}/v1/files/{self.id}"},
        }


@dataclass
class PredictionRecord:
    """Server-side state of one prediction (``fake.predictions`` holds copies)."""

    id: str
    model: str
    version: str
    input: dict[str, Any]
    behavior: Behavior
    created_monotonic: float
    created_at: str
    create_path: str
    status: str = "starting"
    output: Any = None
    error: str | None = None
    logs: str = ""
    started_at: str | None = None
    completed_at: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    polls: int = 0
    cancel_requested: bool = False
    stream: bool = False
    webhook: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def to_json(self, base_url: str) -> dict[str, Any]:
        urls = {
            "get": f"{base_url}/v1/predictions/{self.id}",
            "cancel": f"{base_url}/v1/predictions/{self.id}/cancel",
            "web": f"{base_url}/p/{self.id}",
        }
        if self.stream:
            # Not implemented by the fake; present only because the client reads it.
            urls["stream"] = f"{base_url}/v1/predictions/{self.id}/stream"
        return {
            "id": self.id,
            "model": self.model,
            "version": self.version,
            "input": self.input,
            "logs": self.logs,
            "output": self.output,
            "data_removed": False,
            "error": self.error,
            "status": self.status,
            "source": "api",
            "created_at": self.created_at,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "metrics": dict(self.metrics),
            "urls": urls,
        }


@dataclass
class RecordedRequest:
    """One request received by the fake (control-API requests are not recorded)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # Authorization value redacted to "Bearer <redacted>"
    json: Any  # parsed JSON body, or None
    body_size: int
    auth_ok: bool
    status: int | None = None  # status sent back; None for resets
    fault: str | None = None  # "status" / "reset" / "delay" when a fault fired


@dataclass
class Fault:
    """An injected fault; ``hits`` counts how often it fired."""

    kind: Literal["status", "reset", "delay"]
    method: str
    path_pattern: str | re.Pattern[str]
    times: int | None = 1  # None = forever
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    seconds: float = 0.0
    hits: int = 0

    @property
    def remaining(self) -> int | None:
        return None if self.times is None else max(0, self.times - self.hits)

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method not in ("*", method.upper()):
            return False
        if isinstance(self.path_pattern, re.Pattern):
            return self.path_pattern.fullmatch(path) is not None
        return fnmatch.fnmatchcase(path, self.path_pattern)


@dataclass
class OutputContext:
    """Passed to ``Behavior.output_fn``; lets a custom output reuse the fake's helpers."""

    prediction_id: str
    model: str
    version: str
    input: dict[str, Any]
    input_field: str | None
    input_url: str | None
    _fake: "FakeReplicate"
    _base_url: str

    def input_bytes(self) -> bytes:
        if self.input_url is None:
            raise FakeModelError("prediction has no file/URL input")
        return self._fake.fetch(self.input_url)

    def publish(self, name: str, data: bytes, content_type: str | None = None) -> str:
        """Serve ``data`` at ``/delivery/<prediction_id>/<name>``; returns its URL."""
        return self._fake._publish(self._base_url, f"{self.prediction_id}/{name}", data, content_type)
