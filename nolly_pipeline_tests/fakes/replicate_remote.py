"""A client for a fake Replicate running in another process, over its ``/_fake`` control API."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from typing import Any, Mapping

from nolly_pipeline_tests.fakes.replicate_records import Behavior


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
