"""A fake of Replicate's HTTP API, spoken to by the *real* ``replicate`` client.

The fake is a real HTTP server (``ThreadingHTTPServer`` on 127.0.0.1, free port,
daemon thread), so the production code path -- ``replicate.Client`` ->
``httpx`` -> ``RetryTransport`` -> socket -- is exercised end to end::

    with FakeReplicate() as fake:
        fake.set_behavior("nolly/roto", Behavior(starting=1, processing=2))
        client = replicate.Client(api_token="test-token", base_url=fake.base_url)
        client.poll_interval = 0.01
        p = client.predictions.create(model="nolly/roto", input={"video": url})

Standalone (for tests that run it beside separate worker processes)::

    python -m nolly_pipeline_tests.fakes.replicate_api --port 8787 \
        --behavior 'nolly/roto={"processing": 3}'

prints ``FAKE_REPLICATE_URL=http://127.0.0.1:8787`` on stdout and serves until
SIGTERM/SIGINT.  A standalone fake is configured over its control API
(``/_fake/...``, no auth), most easily through :class:`RemoteFakeReplicate`.

Wire format (verified against replicate==1.0.7 sources, see test_replicate_api.py):

* ``predictions.create(model="o/n", input=...)``  -> ``POST /v1/models/o/n/predictions``
  body ``{"input": {...}}``.  ``model="o/n:ver"`` raises ValueError client-side.
* ``predictions.create(version="<hex>", input=...)`` -> ``POST /v1/predictions``
  body ``{"version": "<hex>", "input": {...}}``.  (``version`` may also be
  ``"o/n:<hex>"`` or ``"o/n"``; the client passes the string through verbatim.)
* ``predictions.create(model=..., version=...)`` -> ValueError client-side, no request.
* ``predictions.create(deployment="o/n", ...)`` -> ``POST /v1/deployments/o/n/predictions``.
* ``predictions.get(id)`` -> ``GET /v1/predictions/<id>``;
  ``predictions.cancel(id)`` -> ``POST /v1/predictions/<id>/cancel``;
  ``predictions.list()`` -> ``GET /v1/predictions`` (``{"previous","next","results"}``).
* File inputs (any ``io.IOBase`` / ``pathlib.Path`` in ``input``) are uploaded with
  ``POST /v1/files`` (multipart, field ``content``, optional form field ``metadata``)
  and replaced by the returned ``urls["get"]`` (``<base>/v1/files/<id>``), unless
  ``file_encoding_strategy="base64"`` (data: URL inline) -- which only takes effect on
  the ``version=`` path; ``Predictions.create(model=...)`` drops it (and ``wait``).
* Every request carries ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import email.parser
import email.policy
import fnmatch
import hashlib
import json
import mimetypes
import os
import posixpath
import re
import secrets
import signal
import socket
import struct
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence

__all__ = [
    "Behavior",
    "FakeReplicate",
    "Fault",
    "OutputContext",
    "PredictionRecord",
    "RecordedRequest",
    "RemoteFakeReplicate",
    "UploadedFile",
    "FAKE_PREFIX",
]

FAKE_PREFIX = b"FAKE-REPLICATE:"
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled", "aborted"})
FinalStatus = Literal["succeeded", "failed", "canceled", "aborted"]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_UNSET: Any = object()


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _new_id() -> str:
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
    output: Any = _UNSET  # literal JSON output, returned verbatim
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
            if name == "output" and value is _UNSET:
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


# --------------------------------------------------------------------------- fake


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], handler: type, fake: "FakeReplicate") -> None:
        self.fake = fake
        self.open_connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(addr, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, OSError)):
            return  # resets / client hang-ups are expected in fault tests
        super().handle_error(request, client_address)


class FakeReplicate:
    """Fake Replicate API server.  Thread-safe; use as a context manager or start()/stop()."""

    def __init__(
        self,
        token: str | None = "test-token",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        default_behavior: Behavior | None = None,
        reject_unknown_models: bool = False,
        public_base_url: str | None = None,
        verbose: bool = False,
    ) -> None:
        """``token=None`` disables auth checks.  Unknown model refs get
        ``default_behavior`` (``Behavior()`` if None) unless ``reject_unknown_models``,
        in which case they get 404 (model path) / 422 (version path).
        ``public_base_url`` overrides the host used in returned URLs (default: the
        request's Host header, i.e. whatever address the client used)."""
        self.token = token
        self._host = host
        self._port = port
        self.default_behavior = default_behavior or Behavior()
        self.reject_unknown_models = reject_unknown_models
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self.verbose = verbose
        self._lock = threading.RLock()
        self._behaviors: dict[str, Behavior] = {}
        self._version_models: dict[str, str] = {}
        self._predictions: dict[str, PredictionRecord] = {}
        self._pred_locks: dict[str, threading.Lock] = {}
        self._files: dict[str, UploadedFile] = {}
        self._delivery: dict[str, tuple[bytes, str]] = {}
        self._faults: list[Fault] = []
        self._requests: list[RecordedRequest] = []
        self._canceled_ids: list[str] = []
        self._cancel_requests: list[str] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> "FakeReplicate":
        if self._server is not None:
            return self
        self._server = _Server((self._host, self._port), _Handler, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01},
            name=f"FakeReplicate:{self.port}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with server.conn_lock:
            conns = list(server.open_connections)
        for conn in conns:  # unblock keep-alive handler threads
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def serve_forever(self) -> None:
        """Start and block until stop() is called from another thread / a signal."""
        self.start()
        assert self._thread is not None
        while self._thread.is_alive():
            self._thread.join(timeout=0.5)

    def __enter__(self) -> "FakeReplicate":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeReplicate is not running")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        if self.public_base_url:
            return self.public_base_url
        return f"http://{self._host}:{self.port}"

    # ----------------------------------------------------------------- configuration
    def set_behavior(self, model_ref: str, behavior: Behavior) -> None:
        """``model_ref``: ``"owner/name"``, ``"owner/name:<version>"`` or ``"<version>"``."""
        with self._lock:
            self._behaviors[model_ref] = behavior
            if ":" in model_ref:
                model, version = model_ref.split(":", 1)
                self._version_models[version] = model
                self._behaviors.setdefault(version, behavior)
            elif "/" in model_ref and behavior.version:
                self._version_models[behavior.version] = model_ref

    def register_version(self, version: str, model: str) -> None:
        """Say which ``owner/name`` a bare version hash belongs to."""
        with self._lock:
            self._version_models[version] = model

    def inject(
        self,
        method: str,
        path_pattern: str | re.Pattern[str],
        status: int,
        *,
        times: int | None = 1,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> Fault:
        """Answer the next ``times`` matching requests with ``status`` (before auth and
        normal handling).  ``path_pattern``: shell glob on the path (``*`` also matches
        ``/``), or a compiled regex (fullmatch).  ``method="*"`` matches any method.
        ``body``: dict/list -> JSON, str/bytes -> raw; default: problem-details JSON."""
        return self._add_fault(Fault(
            "status", method.upper(), path_pattern, times, status=status,
            headers=dict(headers or {}), body=body,
        ))

    def inject_reset(self, method: str, path_pattern: str | re.Pattern[str], *, times: int | None = 1) -> Fault:
        """Close the connection (TCP RST) without sending any response."""
        return self._add_fault(Fault("reset", method.upper(), path_pattern, times))

    def inject_delay(
        self, method: str, path_pattern: str | re.Pattern[str], seconds: float, *, times: int | None = 1
    ) -> Fault:
        """Sleep ``seconds`` before handling matching requests (then handle normally)."""
        return self._add_fault(Fault("delay", method.upper(), path_pattern, times, seconds=seconds))

    def _add_fault(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset(self) -> None:
        """Forget predictions, files, outputs, faults, behaviours and recorded requests."""
        with self._lock:
            self._behaviors.clear()
            self._version_models.clear()
            self._predictions.clear()
            self._pred_locks.clear()
            self._files.clear()
            self._delivery.clear()
            self._faults.clear()
            self._requests.clear()
            self._canceled_ids.clear()
            self._cancel_requests.clear()

    def serve_file(self, name: str, data: bytes, content_type: str | None = None) -> str:
        """Serve arbitrary bytes (e.g. a test input) at ``/delivery/assets/<name>``."""
        return self._publish(self.base_url, f"assets/{name}", data, content_type)

    # ----------------------------------------------------------------- introspection
    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_matching(self, method: str, path_pattern: str | re.Pattern[str]) -> list[RecordedRequest]:
        probe = Fault("status", method.upper(), path_pattern, None)
        return [r for r in self.requests if probe.matches(r.method, r.path)]

    @property
    def predictions(self) -> dict[str, PredictionRecord]:
        with self._lock:
            return {pid: dataclasses.replace(rec, metrics=dict(rec.metrics)) for pid, rec in self._predictions.items()}

    @property
    def canceled_ids(self) -> list[str]:
        """Ids moved to ``canceled`` by a cancel request (in order)."""
        with self._lock:
            return list(self._canceled_ids)

    @property
    def cancel_requests(self) -> list[str]:
        """Ids of every cancel request received, including no-op ones on terminal predictions."""
        with self._lock:
            return list(self._cancel_requests)

    @property
    def files(self) -> dict[str, UploadedFile]:
        with self._lock:
            return dict(self._files)

    @property
    def faults(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def state_json(self) -> dict[str, Any]:
        base = self.base_url
        with self._lock:
            return {
                "predictions": {
                    pid: {**rec.to_json(base), "polls": rec.polls, "cancel_requested": rec.cancel_requested}
                    for pid, rec in self._predictions.items()
                },
                "canceled_ids": list(self._canceled_ids),
                "cancel_requests": list(self._cancel_requests),
                "files": {fid: f.to_json(base) for fid, f in self._files.items()},
                "requests": [dataclasses.asdict(r) for r in self._requests],
                "faults": [
                    {"kind": f.kind, "method": f.method, "path_pattern": str(f.path_pattern),
                     "times": f.times, "hits": f.hits}
                    for f in self._faults
                ],
            }

    # ----------------------------------------------------------------- internals
    def _publish(self, base_url: str, key: str, data: bytes, content_type: str | None) -> str:
        ctype = content_type or mimetypes.guess_type(key)[0] or "application/octet-stream"
        with self._lock:
            self._delivery[key] = (data, ctype)
        return f"{base_url}/delivery/{urllib.parse.quote(key)}"

    def fetch(self, url: str) -> bytes:
        """Fetch an input URL: data: URLs, this fake's own files/outputs (resolved in
        memory), or anything else via urllib."""
        if url.startswith("data:"):
            header, _, payload = url.partition(",")
            if header.endswith(";base64"):
                return base64.b64decode(payload)
            return urllib.parse.unquote_to_bytes(payload)
        parsed = urllib.parse.urlsplit(url)
        local = self._resolve_local(parsed)
        if local is not None:
            return local
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 - test fake
                return resp.read()
        except Exception as exc:  # noqa: BLE001
            raise FakeModelError(f"could not fetch input {url}: {exc}") from exc

    def _resolve_local(self, parsed: urllib.parse.SplitResult) -> bytes | None:
        if self._server is None or parsed.port != self.port:
            return None
        path = urllib.parse.unquote(parsed.path)
        with self._lock:
            m = re.fullmatch(r"/v1/files/([^/]+)(?:/download)?", path)
            if m and m.group(1) in self._files:
                return self._files[m.group(1)].data
            if path.startswith("/delivery/") and path[len("/delivery/"):] in self._delivery:
                return self._delivery[path[len("/delivery/"):]][0]
        return None

    def _lookup_behavior(self, refs: Iterable[str]) -> Behavior | None:
        with self._lock:
            for ref in refs:
                if ref in self._behaviors:
                    return self._behaviors[ref]
        return None if self.reject_unknown_models else self.default_behavior

    def _create_prediction(self, model: str, version: str, behavior: Behavior, body: dict, path: str, base: str) -> dict:
        rec = PredictionRecord(
            id=_new_id(), model=model, version=version, input=body.get("input") or {},
            behavior=behavior, created_monotonic=time.monotonic(), created_at=_now_iso(),
            create_path=path, stream=bool(body.get("stream")), webhook=body.get("webhook"),
        )
        with self._lock:
            self._predictions[rec.id] = rec
            self._pred_locks[rec.id] = threading.Lock()
        return self._advance(rec.id, base, count_poll=False)

    def _target_status(self, rec: PredictionRecord) -> str:
        b = rec.behavior
        progress = rec.polls if b.unit == "polls" else time.monotonic() - rec.created_monotonic
        if progress < b.starting:
            return "starting"
        if b.never_finishes or progress < b.starting + b.processing:
            return "processing"
        return b.final_status

    def _advance(self, pid: str, base: str, *, count_poll: bool, cancel: bool = False) -> dict:
        with self._lock:
            rec = self._predictions[pid]
            plock = self._pred_locks[pid]
        with plock:
            with self._lock:
                if count_poll:
                    rec.polls += 1
                if cancel:
                    rec.cancel_requested = True
                    self._cancel_requests.append(pid)
                target = rec.status if rec.terminal else self._target_status(rec)
                if not rec.terminal and target != "starting" and rec.started_at is None:
                    rec.started_at = _now_iso()
                    rec.logs = rec.behavior.logs
            if cancel and target not in TERMINAL_STATUSES:
                target = "canceled"
                with self._lock:
                    self._canceled_ids.append(pid)
            if not rec.terminal and target in TERMINAL_STATUSES:
                output, error = None, None
                if target == "succeeded":
                    try:
                        output = self._build_output(rec, base)
                    except Exception as exc:  # noqa: BLE001 - model errors become "failed"
                        target, error = "failed", f"{type(exc).__name__}: {exc}"
                elif target == "failed":
                    error = rec.behavior.error
                with self._lock:
                    rec.status = target
                    rec.output = output
                    rec.error = error
                    rec.completed_at = _now_iso()
                    rec.started_at = rec.started_at or rec.completed_at
                    rec.metrics = {"predict_time": round(time.monotonic() - rec.created_monotonic, 6)}
                    rec.metrics.update(rec.behavior.metrics or {})
            elif not rec.terminal:
                with self._lock:
                    rec.status = target
            with self._lock:
                return rec.to_json(base)

    def _find_input(self, rec: PredictionRecord) -> tuple[str | None, str | None]:
        field_name = rec.behavior.input_field
        if field_name is not None:
            if field_name not in rec.input:
                raise FakeModelError(f"missing input field {field_name!r}")
            value = rec.input[field_name]
            if isinstance(value, list) and value:
                value = value[0]
            if not isinstance(value, str):
                raise FakeModelError(f"input field {field_name!r} is not a URL: {value!r}")
            return field_name, value
        for key, value in rec.input.items():
            if isinstance(value, str) and value.startswith(("http://", "https://", "data:")):
                return key, value
        return None, None

    def _build_output(self, rec: PredictionRecord, base: str) -> Any:
        b = rec.behavior
        field_name, url = self._find_input(rec)
        ctx = OutputContext(rec.id, rec.model, rec.version, rec.input, field_name, url, self, base)
        if b.output_fn is not None:
            return b.output_fn(ctx)
        if b.output is not _UNSET:
            return b.output
        data = ctx.input_bytes() if url is not None else json.dumps(rec.input, sort_keys=True).encode()
        out = (b.transform or default_transform)(data)
        ext = ""
        if url is not None and not url.startswith("data:"):
            ext = posixpath.splitext(urllib.parse.urlsplit(url).path)[1]
            if url.startswith(base + "/v1/files/") or re.search(r"/v1/files/[^/]+$", url):
                fid = url.rstrip("/").rsplit("/", 1)[-1]
                with self._lock:
                    f = self._files.get(fid)
                ext = posixpath.splitext(f.name)[1] if f else ""
        elif url is not None:
            ext = mimetypes.guess_extension(url[5:].split(";", 1)[0]) or ""
        stem, name_ext = posixpath.splitext(b.output_name or f"output{ext}")
        if b.output_kind == "url":
            return ctx.publish(stem + name_ext, out)
        if b.output_kind == "list":
            return [ctx.publish(f"{stem}-{i}{name_ext}", out) for i in range(b.list_count)]
        return {key: ctx.publish(f"{key}{name_ext}", out) for key in b.output_keys}


# --------------------------------------------------------------------------- HTTP


def _problem(status: int, detail: str, title: str | None = None) -> dict[str, Any]:
    return {"title": title or HTTPStatus(status).phrase, "detail": detail, "status": status}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeReplicate/1.0"
    server: _Server

    # -- plumbing
    def setup(self) -> None:
        super().setup()
        try:  # headers and body go out in separate writes; avoid Nagle/delayed-ACK stalls
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        with self.server.conn_lock:
            self.server.open_connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        with self.server.conn_lock:
            self.server.open_connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.server.fake.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = do_GET

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: Any = None, headers: Mapping[str, str] | None = None,
              content_type: str | None = None) -> None:
        if isinstance(body, (bytes, bytearray)):
            payload, ctype = bytes(body), content_type or "application/octet-stream"
        elif isinstance(body, str):
            payload, ctype = body.encode(), content_type or "text/plain; charset=utf-8"
        elif body is None and status == 204:
            payload, ctype = b"", None
        else:
            payload, ctype = json.dumps(body).encode(), content_type or "application/json"
        if self._record is not None:
            self._record.status = status
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _reset(self) -> None:
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        try:
            self.rfile.close()  # drop the makefile() reference so close() really closes
        except OSError:
            pass
        try:
            self.connection.close()  # with SO_LINGER 0 -> RST
        except OSError:
            pass

    def _base(self) -> str:
        fake = self.server.fake
        if fake.public_base_url:
            return fake.public_base_url
        host = self.headers.get("Host")
        return f"http://{host}" if host else fake.base_url

    # -- dispatch
    def _dispatch(self) -> None:
        fake = self.server.fake
        self._record: RecordedRequest | None = None
        split = urllib.parse.urlsplit(self.path)
        path = split.path
        body = self._read_body()

        if path.startswith("/_fake/"):
            self._control(path, body)
            return

        parsed_json = None
        if body and "json" in (self.headers.get("Content-Type") or ""):
            try:
                parsed_json = json.loads(body)
            except ValueError:
                parsed_json = None
        auth = self.headers.get("Authorization")
        auth_ok = fake.token is None or auth == f"Bearer {fake.token}"
        headers = {k: v for k, v in self.headers.items()}
        for k in list(headers):
            if k.lower() == "authorization":
                scheme = headers[k].split(" ", 1)[0]
                headers[k] = f"{scheme} <redacted>"
        self._record = RecordedRequest(self.command, path, split.query, headers, parsed_json, len(body), auth_ok)

        fault_to_fire: Fault | None = None
        delays: list[float] = []
        with fake._lock:
            fake._requests.append(self._record)
            for fault in fake._faults:
                if not fault.matches(self.command, path):
                    continue
                if fault.kind == "delay":
                    fault.hits += 1
                    delays.append(fault.seconds)
                    continue
                fault.hits += 1
                fault_to_fire = fault
                break
        if delays:
            self._record.fault = "delay"
            time.sleep(sum(delays))
        if fault_to_fire is not None:
            self._record.fault = fault_to_fire.kind
            if fault_to_fire.kind == "reset":
                self._reset()
                return
            fbody = fault_to_fire.body
            if fbody is None:
                fbody = _problem(fault_to_fire.status, f"injected fault {fault_to_fire.status}")
            self._send(fault_to_fire.status, fbody, fault_to_fire.headers)
            return

        try:
            self._route(path, split.query, body, parsed_json, auth_ok)
        except (BrokenPipeError, ConnectionResetError):
            raise
        except Exception as exc:  # noqa: BLE001 - surface fake bugs as 500s
            self._send(500, _problem(500, f"fake internal error: {type(exc).__name__}: {exc}"))

    def _route(self, path: str, query: str, body: bytes, data: Any, auth_ok: bool) -> None:
        fake = self.server.fake
        method = self.command
        base = self._base()

        # Unauthenticated, CDN-like paths.
        if path.startswith("/delivery/") and method in ("GET", "HEAD"):
            key = urllib.parse.unquote(path[len("/delivery/"):])
            with fake._lock:
                item = fake._delivery.get(key)
            if item is None:
                self._send(404, _problem(404, "no such output file"))
            else:
                self._send(200, item[0], content_type=item[1])
            return
        m = re.fullmatch(r"/v1/files/([^/]+)/download", path)
        if m and method in ("GET", "HEAD"):
            with fake._lock:
                f = fake._files.get(m.group(1))
            if f is None:
                self._send(404, _problem(404, "file not found"))
            else:
                self._send(200, f.data, content_type=f.content_type)
            return

        if not path.startswith("/v1/"):
            self._send(404, _problem(404, "Not found."))
            return
        if not auth_ok:
            self._send(401, _problem(401, "You did not pass a valid authentication token", "Unauthenticated"))
            return

        if method == "POST" and path == "/v1/predictions":
            self._create_from_version(data, body, path, base)
            return
        m = re.fullmatch(r"/v1/(models|deployments)/([^/]+)/([^/]+)/predictions", path)
        if m and method == "POST":
            model = f"{m.group(2)}/{m.group(3)}"
            behavior = fake._lookup_behavior([model])
            if behavior is None:
                self._send(404, _problem(404, f"The requested resource could not be found: {model}"))
                return
            if not self._valid_body(data):
                return
            version = behavior.version or hashlib.sha256(model.encode()).hexdigest()
            self._send(201, fake._create_prediction(model, version, behavior, data, path, base))
            return
        if method == "GET" and path == "/v1/predictions":
            with fake._lock:
                ids = list(fake._predictions)[::-1]
            results = [fake._advance(pid, base, count_poll=False) for pid in ids]
            self._send(200, {"previous": None, "next": None, "results": results})
            return
        m = re.fullmatch(r"/v1/predictions/([^/]+)(/cancel)?", path)
        if m:
            pid, is_cancel = m.group(1), bool(m.group(2))
            with fake._lock:
                known = pid in fake._predictions
            if not known:
                self._send(404, _problem(404, "The requested resource could not be found."))
            elif is_cancel and method == "POST":
                self._send(200, fake._advance(pid, base, count_poll=False, cancel=True))
            elif not is_cancel and method == "GET":
                self._send(200, fake._advance(pid, base, count_poll=True))
            else:
                self._send(405, _problem(405, "Method not allowed"))
            return
        if path == "/v1/files":
            if method == "POST":
                self._upload(body, base)
            elif method == "GET":
                with fake._lock:
                    files = [f.to_json(base) for f in fake._files.values()]
                self._send(200, {"previous": None, "next": None, "results": files})
            else:
                self._send(405, _problem(405, "Method not allowed"))
            return
        m = re.fullmatch(r"/v1/files/([^/]+)", path)
        if m:
            with fake._lock:
                f = fake._files.get(m.group(1))
                if f is not None and method == "DELETE":
                    del fake._files[m.group(1)]
            if f is None:
                self._send(404, _problem(404, "file not found"))
            elif method == "DELETE":
                self._send(204)
            else:
                self._send(200, f.to_json(base))
            return
        self._send(404, _problem(404, "Not found."))

    def _valid_body(self, data: Any) -> bool:
        if not isinstance(data, dict):
            self._send(400, _problem(400, "request body must be a JSON object"))
            return False
        if not isinstance(data.get("input"), dict):
            self._send(422, _problem(422, "- (root): input is required", "Input validation failed"))
            return False
        return True

    def _create_from_version(self, data: Any, body: bytes, path: str, base: str) -> None:
        fake = self.server.fake
        if not self._valid_body(data):
            return
        ref = data.get("version")
        if not isinstance(ref, str) or not ref:
            self._send(422, _problem(422, "- (root): version is required", "Input validation failed"))
            return
        if ":" in ref:
            model, version = ref.split(":", 1)
            refs = [ref, version, model]
        elif "/" in ref:
            model, version, refs = ref, None, [ref]
        else:
            with fake._lock:
                model = fake._version_models.get(ref)
            version, refs = ref, [ref] + ([model] if model else [])
        behavior = fake._lookup_behavior(refs)
        if behavior is None:
            self._send(422, _problem(422, f"Invalid version or not permitted: {ref}", "Invalid version"))
            return
        model = model or "unknown/unknown"
        version = version or behavior.version or hashlib.sha256(model.encode()).hexdigest()
        self._send(201, fake._create_prediction(model, version, behavior, data, path, base))

    def _upload(self, body: bytes, base: str) -> None:
        fake = self.server.fake
        ctype = self.headers.get("Content-Type") or ""
        name, content_type, data, metadata = "file", "application/octet-stream", body, {}
        if ctype.startswith("multipart/"):
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body
            )
            found = False
            for part in msg.iter_parts():
                pname = part.get_param("name", header="content-disposition")
                payload = part.get_payload(decode=True) or b""
                if pname == "content":
                    found = True
                    name = part.get_filename() or name
                    content_type = part.get_content_type()
                    data = payload
                elif pname == "metadata":
                    try:
                        metadata = json.loads(payload or b"{}")
                    except ValueError:
                        self._send(400, _problem(400, "metadata must be JSON"))
                        return
            if not found:
                self._send(422, _problem(422, "multipart field 'content' is required"))
                return
        elif ctype:
            content_type = ctype
        f = UploadedFile(_new_id(), name, content_type, data, metadata, _now_iso())
        with fake._lock:
            fake._files[f.id] = f
        self._send(201, f.to_json(base))

    # -- control API for standalone use
    def _control(self, path: str, body: bytes) -> None:
        fake = self.server.fake
        self._record = None
        try:
            data = json.loads(body) if body else None
            if path == "/_fake/state" and self.command == "GET":
                self._send(200, fake.state_json())
            elif path == "/_fake/health":
                self._send(200, {"ok": True})
            elif path == "/_fake/reset" and self.command == "POST":
                fake.reset()
                self._send(200, {"ok": True})
            elif path == "/_fake/behaviors" and self.command == "POST":
                fake.set_behavior(data["ref"], Behavior.from_dict(data.get("behavior") or {}))
                self._send(200, {"ok": True})
            elif path == "/_fake/default_behavior" and self.command == "POST":
                fake.default_behavior = Behavior.from_dict(data or {})
                self._send(200, {"ok": True})
            elif path == "/_fake/faults" and self.command == "POST":
                kind, method, pattern = data["kind"], data.get("method", "*"), data["path"]
                times = data.get("times", 1)
                if kind == "status":
                    fake.inject(method, pattern, int(data["status"]), times=times,
                                headers=data.get("headers"), body=data.get("body"))
                elif kind == "reset":
                    fake.inject_reset(method, pattern, times=times)
                elif kind == "delay":
                    fake.inject_delay(method, pattern, float(data["seconds"]), times=times)
                else:
                    raise ValueError(f"unknown fault kind {kind!r}")
                self._send(200, {"ok": True})
            elif path == "/_fake/faults" and self.command == "DELETE":
                fake.clear_faults()
                self._send(200, {"ok": True})
            else:
                self._send(404, _problem(404, "unknown control endpoint"))
        except (KeyError, TypeError, ValueError) as exc:
            self._send(400, _problem(400, f"bad control request: {exc}"))


# --------------------------------------------------------------------------- remote control


class RemoteFakeReplicate:
    """Configure a fake running in another process through its ``/_fake`` control API."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(
            self.base_url + path, data=data, method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
            return json.loads(resp.read() or b"null")

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._call("GET", "/_fake/health")
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def set_behavior(self, model_ref: str, behavior: Behavior | Mapping[str, Any]) -> None:
        b = behavior.to_dict() if isinstance(behavior, Behavior) else dict(behavior)
        self._call("POST", "/_fake/behaviors", {"ref": model_ref, "behavior": b})

    def inject(self, method: str, path_pattern: str, status: int, *, times: int | None = 1,
               headers: Mapping[str, str] | None = None, body: Any = None) -> None:
        self._call("POST", "/_fake/faults", {"kind": "status", "method": method, "path": path_pattern,
                                             "status": status, "times": times,
                                             "headers": dict(headers or {}), "body": body})

    def inject_reset(self, method: str, path_pattern: str, *, times: int | None = 1) -> None:
        self._call("POST", "/_fake/faults", {"kind": "reset", "method": method, "path": path_pattern, "times": times})

    def inject_delay(self, method: str, path_pattern: str, seconds: float, *, times: int | None = 1) -> None:
        self._call("POST", "/_fake/faults", {"kind": "delay", "method": method, "path": path_pattern,
                                             "seconds": seconds, "times": times})

    def clear_faults(self) -> None:
        self._call("DELETE", "/_fake/faults")

    def reset(self) -> None:
        self._call("POST", "/_fake/reset", {})

    def state(self) -> dict[str, Any]:
        return self._call("GET", "/_fake/state")


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fake Replicate HTTP API for tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--token", default=os.environ.get("FAKE_REPLICATE_TOKEN", "test-token"),
                        help="expected bearer token; empty string disables auth")
    parser.add_argument("--public-base-url", default=None)
    parser.add_argument("--behavior", action="append", default=[], metavar="REF=JSON",
                        help='e.g. nolly/roto={"processing": 3, "final_status": "failed"}')
    parser.add_argument("--default-behavior", default=None, metavar="JSON")
    parser.add_argument("--reject-unknown-models", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)

    fake = FakeReplicate(
        token=args.token or None, host=args.host, port=args.port,
        default_behavior=Behavior.from_dict(json.loads(args.default_behavior)) if args.default_behavior else None,
        reject_unknown_models=args.reject_unknown_models,
        public_base_url=args.public_base_url, verbose=args.verbose,
    )
    for spec in args.behavior:
        ref, _, raw = spec.partition("=")
        fake.set_behavior(ref, Behavior.from_dict(json.loads(raw or "{}")))

    def _stop(signum: int, frame: Any) -> None:
        threading.Thread(target=fake.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    fake.start()
    print(f"FAKE_REPLICATE_URL={fake.base_url}", flush=True)
    fake.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
