"""A real local HTTP server with canned routes, and made-up host names that resolve to it.

Used by the fetcher's own tests and by every test that downloads an input over HTTP.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from nolly_pipeline.storage.http_fetch import Resolver

# Made-up names for the tests; only "media.test" reaches the local server.
TEST_DNS = {
    "media.test": ["127.0.0.1"],
    "meta.test": ["169.254.169.254"],
    "lan.test": ["192.168.1.10"],
    "ten.test": ["10.0.0.5"],
    "loop2.test": ["127.0.0.2"],
    "v6loop.test": ["::1"],
    "mapped.test": ["::ffff:127.0.0.1"],
    "mixed.test": ["93.184.216.34", "10.0.0.5"],
    "public.test": ["93.184.216.34"],
    "empty.test": [],
}
TEST_HOSTS = tuple(TEST_DNS)
# How far the endless response goes before the server gives up on its own.
ENDLESS_BYTES = 64 * 1024 * 1024


def fake_resolver(table: dict[str, list[str]]) -> Resolver:
    def resolve(host: str, port: int) -> list[str]:
        return list(table[host])

    return resolve


class LocalServer:
    """A threaded HTTP server on 127.0.0.1 with canned routes.

    ``files``: path -> body. ``/redirect?to=URL`` answers 302 to URL, ``/loop`` to itself;
    ``/status/N`` answers N;
    ``/declared-huge`` claims a 10 GB body; ``/endless`` streams until the client hangs up.
    ``hosts`` records the Host header of every request, ``sent`` the bytes of ``/endless``.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.hosts: list[str] = []
        self.sent = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                outer.hosts.append(self.headers.get("Host", ""))
                parts = urlsplit(self.path)
                if parts.path in outer.files:
                    body = outer.files[parts.path]
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif parts.path in ("/redirect", "/loop"):
                    self.send_response(302)
                    self.send_header("Location", parse_qs(parts.query).get("to", ["/loop"])[0])
                    self.end_headers()
                elif parts.path.startswith("/status/"):
                    self.send_response(int(parts.path.rsplit("/", 1)[1]))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif parts.path == "/declared-huge":
                    self.send_response(200)
                    self.send_header("Content-Length", str(10 * 1024**3))
                    self.end_headers()
                    self.wfile.write(b"x" * 1024)
                elif parts.path == "/endless":
                    self.send_response(200)  # no length: the body runs until the connection closes
                    self.end_headers()
                    try:
                        while outer.sent < ENDLESS_BYTES:
                            self.wfile.write(b"x" * 65536)
                            outer.sent += 65536
                    except OSError:
                        pass
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "LocalServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def url(self, path: str, host: str = "media.test") -> str:
        return f"http://{host}:{self.port}{path}"
