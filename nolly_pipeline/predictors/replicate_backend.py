"""Run a job on Replicate through the official ``replicate`` client.

Why not ``replicate.run``: in 1.0.7 ``run(wait=True)`` can return ``None`` early on long
predictions, ``Prediction.wait()`` has no timeout, a prediction whose status is ``aborted``
fails pydantic validation, output URLs expire after an hour and POSTs are never retried.
So: create the prediction, poll it ourselves (raw JSON, so any status parses) until a
deadline, cancel it remotely on timeout, and download every output file at once.
"""

from __future__ import annotations

import json
import mimetypes
import posixpath
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import urlsplit

import httpx
import replicate
from replicate.exceptions import ReplicateError

from nolly_pipeline.errors import InputError, PermanentError, TransientError, redact_urls
from nolly_pipeline.predictors.base import PredictionRequest
from nolly_pipeline.predictors.replicate_model import ReplicateModel
from nolly_pipeline.processing.base import OutputFile, ProcessingResult
from nolly_pipeline.storage.tls import tls_context

TERMINAL_FAILURES = ("failed", "canceled", "aborted")
# Consecutive failed polls tolerated before the prediction is given up (and canceled).
MAX_FAILED_POLLS = 10


@dataclass
class ReplicatePredictor:
    """One job type's predictor backed by a Replicate model."""

    client: replicate.Client
    model: ReplicateModel
    timeout_seconds: float = 1800.0
    poll_seconds: float = 2.0
    backend: str = "replicate"
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    @property
    def version(self) -> str | None:
        """The pinned model version and how job fields map onto its inputs. None for a bare
        ``owner/name``: Replicate may serve a newer version at any moment, so its results are
        never reused."""
        if ":" not in self.model.ref:
            return None
        return json.dumps(
            {
                "model": self.model.ref,
                "file_input": self.model.file_input,
                "static": dict(self.model.static_input),
                "settings_map": dict(self.model.settings_map),
            },
            sort_keys=True,
        )

    def validate(self, settings: Mapping[str, Any]) -> None:
        """Nothing backend-specific: :func:`nolly_pipeline.validation.validate_row` checks the
        settings against the job type's settings model for every backend (this predictor is
        not told its job type), and the remote model checks what it is sent."""

    def predict(self, request: PredictionRequest) -> ProcessingResult:
        with ExitStack() as stack:
            if request.source_url:
                file_value: Any = request.source_url
            else:
                # The client uploads an open file through Replicate's files API.
                file_value = stack.enter_context(open(request.source, "rb"))
            prediction = self._create(self.model.build_input(file_value, request.settings))
        prediction_id = prediction["id"]
        try:
            final = self._wait(prediction_id, request)
        except BaseException:
            # Timeout, cancellation by the user, a lost row or the run being terminated:
            # stop paying for a prediction nobody will collect. (No-op if already final.)
            self._cancel(prediction_id)
            raise
        files = list(self._download_outputs(final.get("output"), request.work_dir))
        if not files:
            raise PermanentError(f"Replicate prediction {prediction_id} succeeded but returned no file")
        return ProcessingResult(
            files=files,
            metadata={"replicate_prediction_id": prediction_id, "replicate_model": self.model.ref},
        )

    # --- remote calls ---------------------------------------------------------------------
    def _create(self, model_input: dict[str, Any]) -> dict[str, Any]:
        owner_name, _, version = self.model.ref.partition(":")
        try:
            if version:
                created = self.client.predictions.create(version=version, input=model_input)
            else:
                created = self.client.predictions.create(model=owner_name, input=model_input)
        except Exception as exc:  # noqa: BLE001 - mapped to our error types below
            raise _map_error(exc, "creating the prediction") from None
        return {"id": created.id, "status": created.status}

    def _get(self, prediction_id: str) -> dict[str, Any]:
        # Raw JSON on purpose: the client's Prediction model rejects status "aborted".
        try:
            return self.client._request("GET", f"/v1/predictions/{prediction_id}").json()
        except Exception as exc:  # noqa: BLE001
            raise _map_error(exc, "polling the prediction") from None

    def _cancel(self, prediction_id: str) -> None:
        try:
            self.client._request("POST", f"/v1/predictions/{prediction_id}/cancel")
        except Exception:  # noqa: BLE001 - best effort; the timeout is what we report
            pass

    def _wait(self, prediction_id: str, request: PredictionRequest) -> dict[str, Any]:
        deadline = self.clock() + self.timeout_seconds
        polls = 0
        failed_polls = 0
        while True:
            try:
                data = self._get(prediction_id)
            except TransientError:
                # The client retries GETs only on 429/503/504; a 500, 502 or reset on a poll
                # must not throw away a prediction that is still running remotely.
                failed_polls += 1
                if self.clock() >= deadline:
                    # Past the deadline a retry would only start a new prediction: give up.
                    raise PermanentError(self._timeout_message()) from None
                if failed_polls >= MAX_FAILED_POLLS:
                    raise
                self.sleep(self.poll_seconds)
                continue
            failed_polls = 0
            status = data.get("status")
            if status == "succeeded":
                return data
            if status in TERMINAL_FAILURES:
                detail = _short(data.get("error")) or "no error message"
                raise PermanentError(f"Replicate prediction {status}: {detail}")
            if self.clock() >= deadline:
                raise PermanentError(self._timeout_message())
            polls += 1
            request.progress(polls, 0)  # heartbeat: total unknown for remote work
            self.sleep(self.poll_seconds)

    def _timeout_message(self) -> str:
        return f"Replicate prediction timed out after {self.timeout_seconds:g} s and was canceled"

    def _download_outputs(self, output: Any, work_dir: Path) -> Iterator[OutputFile]:
        work_dir.mkdir(parents=True, exist_ok=True)
        for index, (role, url) in enumerate(_output_urls(output)):
            name = posixpath.basename(urlsplit(url).path) or f"output-{index}"
            dest = work_dir / f"{index:02d}-{name}"
            content_type = _download(url, dest)
            yield OutputFile(path=dest, role=role, content_type=content_type)


def _output_urls(output: Any) -> Iterator[tuple[str, str]]:
    """(role, url) pairs from a model's output: a URL, a list of URLs or a dict of URLs."""
    if isinstance(output, str):
        if output.startswith(("http://", "https://")):
            yield "output", output
    elif isinstance(output, list):
        for i, item in enumerate(output):
            if isinstance(item, str) and item.startswith(("http://", "https://")):
                yield ("output" if i == 0 else f"output_{i}"), item
    elif isinstance(output, dict):
        for key, item in output.items():
            if isinstance(item, str) and item.startswith(("http://", "https://")):
                yield str(key), item


def _download(url: str, dest: Path) -> str:
    """Stream one output file to disk. No credentials are sent: delivery URLs are public."""
    try:
        with httpx.stream("GET", url, timeout=60, follow_redirects=True, verify=tls_context()) as resp:
            if resp.status_code >= 500 or resp.status_code == 429:
                raise TransientError(f"downloading the Replicate output failed with HTTP {resp.status_code}")
            if resp.status_code >= 400:
                raise PermanentError(f"downloading the Replicate output failed with HTTP {resp.status_code}")
            with open(dest, "wb") as fh:
                for chunk in resp.iter_bytes(1 << 20):
                    fh.write(chunk)
            header = resp.headers.get("content-type", "").split(";")[0].strip()
    except httpx.TransportError as exc:
        raise TransientError(f"downloading the Replicate output failed: {type(exc).__name__}") from None
    guessed = mimetypes.guess_type(dest.name)[0]
    return guessed or header or "application/octet-stream"


def _short(text: Any, limit: int = 300) -> str:
    """Remote text made fit for ``error_message``: one line, bounded, no URL credentials."""
    value = redact_urls(str(text or "").strip().replace("\n", " "))
    return value if len(value) <= limit else value[: limit - 3] + "..."


def _map_error(exc: Exception, doing: str) -> Exception:
    """Replicate/HTTP failures as our types: 429, 5xx and network errors are transient."""
    if isinstance(exc, ReplicateError):
        status = exc.status or 0
        detail = _short(exc.detail or exc.title or "")
        if status == 429 or status >= 500:
            return TransientError(f"Replicate returned HTTP {status} while {doing}")
        if status in (401, 403):
            return PermanentError(f"Replicate refused the API token while {doing} (HTTP {status})")
        if status == 422:
            return InputError(f"Replicate rejected the input while {doing}: {detail}")
        return PermanentError(f"Replicate returned HTTP {status} while {doing}: {detail}")
    if isinstance(exc, httpx.TransportError):
        return TransientError(f"could not reach Replicate while {doing}: {type(exc).__name__}")
    if isinstance(exc, (TransientError, PermanentError)):
        return exc
    return PermanentError(f"unexpected error from Replicate while {doing}: {type(exc).__name__}")
