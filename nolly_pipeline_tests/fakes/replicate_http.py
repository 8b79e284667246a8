"""The fake Replicate's HTTP side: routing, auth, uploads and the ``/_fake`` control API.

One handler per request, on ``ThreadingHTTPServer``'s threads; state lives on the
:class:`~nolly_pipeline_tests.fakes.replicate_api.FakeReplicate` the server carries.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import json
import re
import socket
import struct
import sys
import threading
import time
import urllib.parse
import urllib.request
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Mapping

from nolly_pipeline_tests.fakes.replicate_records import (
    Behavior,
    Fault,
    RecordedRequest,
    UploadedFile,
    new_id,
    now_iso,
)

if TYPE_CHECKING:  # the fake's state, which carries this module's server
    from nolly_pipeline_tests.fakes.replicate_api import FakeReplicate


# --------------------------------------------------------------------------- HTTP


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
        f = UploadedFile(new_id(), name, content_type, data, metadata, now_iso())
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
