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
import json
import mimetypes
import os
import posixpath
import re
import signal
import socket
import sys
import threading
import time
import urllib.parse
import urllib.request
from typing import Any, Iterable, Mapping, Sequence

from nolly_pipeline_tests.fakes.replicate_http import _Handler, _Server
from nolly_pipeline_tests.fakes.replicate_records import (
    FAKE_PREFIX,
    TERMINAL_STATUSES,
    UNSET,
    Behavior,
    FakeModelError,
    Fault,
    OutputContext,
    PredictionRecord,
    RecordedRequest,
    UploadedFile,
    default_transform,
    new_id,
    now_iso,
)
from nolly_pipeline_tests.fakes.replicate_remote import RemoteFakeReplicate

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

# --------------------------------------------------------------------------- fake


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
            id=new_id(), model=model, version=version, input=body.get("input") or {},
            behavior=behavior, created_monotonic=time.monotonic(), created_at=now_iso(),
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
                    rec.started_at = now_iso()
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
                    rec.completed_at = now_iso()
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
        if b.output is not UNSET:
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
