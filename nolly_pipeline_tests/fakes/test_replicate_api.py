"""Tests of the Replicate fake, driven by the REAL ``replicate`` client (1.0.7).

These double as executable documentation of the client's wire behaviour:

* Paths: ``create(model="o/n")`` -> ``POST /v1/models/o/n/predictions``;
  ``create(version=...)`` -> ``POST /v1/predictions`` with ``{"version", "input"}``;
  ``create(model=..., version=...)`` and ``create(model="o/n:ver")`` -> ``ValueError``
  before any request; ``get`` -> ``GET /v1/predictions/<id>``;
  ``cancel`` -> ``POST /v1/predictions/<id>/cancel``.
* Retries (``replicate.client.RetryTransport``): only methods GET/PUT/DELETE/HEAD/
  OPTIONS/TRACE and only statuses 429/503/504, at most 10 attempts in total.  Sleep is
  ``Retry-After`` when it is an integer (honoured exactly, *not* capped), else
  ``0.1 * 2**(n-1)`` +-10% jitter (cap 60 s).  500/502 are never retried; POST (create,
  cancel, file upload) is never retried for any status.  After retries run out the last
  response surfaces as ``replicate.exceptions.ReplicateError`` (``.status`` = HTTP status,
  ``.title``/``.detail`` from the JSON body).  All 4xx/5xx -> ``ReplicateError``.
* Transport errors (connection reset, timeouts) are not retried at all (the wrapped
  ``httpx.HTTPTransport`` has ``retries=0``) and surface as raw ``httpx`` exceptions
  (reset -> ``httpx.ReadError``/``RemoteProtocolError``; slow -> ``httpx.ReadTimeout``).
* ``status="aborted"`` is not in ``Prediction.status``'s Literal, so any response
  carrying it (create/get/cancel, hence ``wait()``/``run()``) raises
  ``pydantic.v1.ValidationError`` (a ``ValueError`` subclass; NOT ``pydantic.ValidationError``
  of pydantic 2).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pydantic
import pydantic.v1
import pytest
import replicate
from replicate.exceptions import ModelError, ReplicateError

from nolly_pipeline_tests.fakes.replicate_api import (
    FAKE_PREFIX,
    Behavior,
    FakeReplicate,
    RemoteFakeReplicate,
)

VERSION = "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa"


@pytest.fixture
def fake():
    with FakeReplicate() as f:
        yield f


@pytest.fixture
def client(fake):
    c = replicate.Client(api_token="test-token", base_url=fake.base_url)
    c.poll_interval = 0.01
    return c


def _poll_statuses(client, pid, limit=20):
    seen = []
    for _ in range(limit):
        p = client.predictions.get(pid)
        seen.append(p.status)
        if p.status in ("succeeded", "failed", "canceled"):
            return p, seen
    raise AssertionError(f"never finished: {seen}")


# ----------------------------------------------------------------- create variants


def test_create_via_model_slug(fake, client):
    p = client.predictions.create(model="nolly/roto", input={"prompt": "x"})
    assert p.status == "starting"
    assert p.model == "nolly/roto"
    assert len(p.version) == 64
    assert p.urls["get"] == f"{fake.base_url}/v1/predictions/{p.id}"
    assert p.urls["cancel"] == f"{fake.base_url}/v1/predictions/{p.id}/cancel"
    req = fake.requests[-1]
    assert (req.method, req.path) == ("POST", "/v1/models/nolly/roto/predictions")
    assert req.json == {"input": {"prompt": "x"}}  # no "version" key on this path
    assert fake.predictions[p.id].create_path == "/v1/models/nolly/roto/predictions"


def test_create_via_version_hash(fake, client):
    fake.set_behavior(f"nolly/grade:{VERSION}", Behavior(starting=0, processing=0, output="done"))
    p = client.predictions.create(version=VERSION, input={"lut": "warm"})
    req = fake.requests[-1]
    assert (req.method, req.path) == ("POST", "/v1/predictions")
    assert req.json == {"version": VERSION, "input": {"lut": "warm"}}
    assert (p.model, p.version, p.status, p.output) == ("nolly/grade", VERSION, "succeeded", "done")
    # positional form is the same request
    client.predictions.create(VERSION, {"lut": "cold"})
    assert fake.requests[-1].json == {"version": VERSION, "input": {"lut": "cold"}}


def test_model_and_version_together_is_rejected_client_side(fake, client):
    with pytest.raises(ValueError, match="Exactly one"):
        client.predictions.create(model="nolly/roto", version=VERSION, input={})
    with pytest.raises(ValueError, match="Invalid reference"):
        client.predictions.create(model=f"nolly/roto:{VERSION}", input={})
    assert fake.requests == []


def test_deployment_path(fake, client):
    p = client.predictions.create(deployment="nolly/roto-prod", input={})
    assert fake.requests[-1].path == "/v1/deployments/nolly/roto-prod/predictions"
    assert p.model == "nolly/roto-prod"


def test_unknown_models_can_be_rejected():
    with FakeReplicate(reject_unknown_models=True) as fake:
        c = replicate.Client(api_token="test-token", base_url=fake.base_url)
        with pytest.raises(ReplicateError) as e404:
            c.predictions.create(model="no/such", input={})
        with pytest.raises(ReplicateError) as e422:
            c.predictions.create(version=VERSION, input={})
        assert (e404.value.status, e422.value.status) == (404, 422)


# ----------------------------------------------------------------- lifecycle


def test_status_progression_and_downloadable_output(fake, client):
    fake.set_behavior("nolly/roto", Behavior(starting=2, processing=3, logs="50%|#####| 1/2"))
    src = fake.serve_file("clip.mp4", b"\x00\x01video")
    p = client.predictions.create(model="nolly/roto", input={"video": src, "fps": 24})
    assert p.status == "starting" and p.started_at is None
    p, seen = _poll_statuses(client, p.id)
    assert seen == ["starting", "processing", "processing", "processing", "succeeded"]
    assert p.error is None and p.completed_at and p.started_at
    assert p.metrics["predict_time"] >= 0
    assert isinstance(p.output, str) and p.output.endswith("/output.mp4")
    r = httpx.get(p.output)  # no auth needed, like replicate.delivery
    assert r.status_code == 200
    assert r.content == FAKE_PREFIX + b"\x00\x01video"
    assert r.headers["content-type"] == "video/mp4"
    assert fake.predictions[p.id].polls == 5


def test_wait_and_run(fake, client):
    fake.set_behavior("nolly/clean", Behavior(input_field="audio", transform=lambda b: b.upper()))
    src = fake.serve_file("a.wav", b"hum")
    p = client.predictions.create(model="nolly/clean", input={"audio": src})
    p.wait()
    assert p.status == "succeeded"
    assert httpx.get(p.output).content == b"HUM"
    # client.run() sends "Prefer: wait" (ModelsPredictions honours wait; the fake ignores
    # it and answers "starting", so run() falls back to polling).  http:// outputs are
    # returned as plain str: FileOutput wrapping only happens for https:/data: URLs.
    out = client.run("nolly/clean", input={"audio": src})
    assert fake.requests_matching("POST", "/v1/models/*")[-1].headers.get("Prefer") == "wait"
    assert isinstance(out, str) and httpx.get(out).content == b"HUM"


def test_seconds_based_timing(fake, client):
    fake.set_behavior("nolly/slow", Behavior(unit="seconds", starting=0, processing=0.3, output=1))
    p = client.predictions.create(model="nolly/slow", input={})
    assert p.status == "processing"
    t0 = time.monotonic()
    p.wait()
    assert p.status == "succeeded" and time.monotonic() - t0 >= 0.2


def test_list_and_dict_outputs_and_custom_output_fn(fake, client):
    src = fake.serve_file("in.png", b"img")
    fake.set_behavior("o/list", Behavior(starting=0, processing=0, output_kind="list", list_count=3))
    fake.set_behavior("o/dict", Behavior(starting=0, processing=0, output_kind="dict", output_keys=("mask", "matte")))
    fake.set_behavior("o/fn", Behavior(starting=0, processing=0,
                                       output_fn=lambda ctx: {"n": len(ctx.input_bytes()),
                                                              "url": ctx.publish("x.txt", b"hi")}))
    lst = client.predictions.create(model="o/list", input={"image": src}).output
    assert len(lst) == 3 and lst[0].endswith("/output-0.png")
    assert {httpx.get(u).content for u in lst} == {FAKE_PREFIX + b"img"}
    dct = client.predictions.create(model="o/dict", input={"image": src}).output
    assert set(dct) == {"mask", "matte"} and dct["mask"].endswith("/mask.png")
    assert httpx.get(dct["matte"]).content == FAKE_PREFIX + b"img"
    custom = client.predictions.create(model="o/fn", input={"image": src}).output
    assert custom["n"] == 3 and httpx.get(custom["url"]).content == b"hi"


def test_failed_carries_error(fake, client):
    fake.set_behavior("nolly/bad", Behavior(final_status="failed", error="CUDA out of memory"))
    p = client.predictions.create(model="nolly/bad", input={})
    p.wait()
    assert (p.status, p.error, p.output) == ("failed", "CUDA out of memory", None)
    with pytest.raises(ModelError, match="CUDA out of memory"):
        client.run("nolly/bad", input={})


def test_missing_or_unfetchable_input_fails_the_prediction(fake, client):
    fake.set_behavior("nolly/roto", Behavior(input_field="video"))
    p = client.predictions.create(model="nolly/roto", input={"image": "x"})
    p.wait()
    assert p.status == "failed" and "missing input field 'video'" in p.error
    p = client.predictions.create(model="nolly/roto", input={"video": fake.base_url + "/delivery/nope"})
    p.wait()
    assert p.status == "failed" and "could not fetch input" in p.error


def test_cancel(fake, client):
    fake.set_behavior("nolly/forever", Behavior(never_finishes=True))
    p = client.predictions.create(model="nolly/forever", input={})
    _, seen = p, [client.predictions.get(p.id).status for _ in range(5)]
    assert seen == ["processing"] * 5  # never finishes on its own
    c = client.predictions.cancel(p.id)
    assert c.status == "canceled" and c.completed_at
    assert fake.requests[-1].method == "POST" and fake.requests[-1].path == f"/v1/predictions/{p.id}/cancel"
    assert fake.canceled_ids == [p.id]
    assert client.predictions.get(p.id).status == "canceled"
    # Prediction.cancel() and cancelling a terminal prediction: no-op, still recorded
    p.cancel()
    assert p.status == "canceled"
    assert fake.canceled_ids == [p.id] and fake.cancel_requests == [p.id, p.id]
    with pytest.raises(ReplicateError) as exc:
        client.predictions.cancel("doesnotexist")
    assert exc.value.status == 404


def test_canceled_as_final_status(fake, client):
    fake.set_behavior("nolly/x", Behavior(final_status="canceled"))
    p = client.predictions.create(model="nolly/x", input={})
    p.wait()
    assert p.status == "canceled" and fake.canceled_ids == []


def test_aborted_makes_the_client_raise_pydantic_v1_validation_error(fake, client):
    """replicate 1.0.7: Prediction.status is Literal[starting, processing, succeeded,
    failed, canceled]; parsing "aborted" raises pydantic.v1 ValidationError (subclass of
    ValueError) from get()/wait()/run() -- the predictor must treat it as terminal itself
    (e.g. catch ValueError and re-read raw JSON) or it will look like a client crash."""
    fake.set_behavior("nolly/abort", Behavior(starting=0, processing=1, final_status="aborted"))
    p = client.predictions.create(model="nolly/abort", input={})
    assert p.status == "processing"
    with pytest.raises(pydantic.v1.ValidationError) as exc:
        p.wait()
    assert isinstance(exc.value, ValueError)
    assert not isinstance(exc.value, pydantic.ValidationError)  # pydantic 2's class
    assert "status" in str(exc.value)
    assert fake.predictions[p.id].status == "aborted"
    raw = httpx.get(p.urls["get"], headers={"Authorization": "Bearer test-token"}).json()
    assert raw["status"] == "aborted"


# ----------------------------------------------------------------- retries & faults


@pytest.mark.parametrize("status", [429, 503, 504])
def test_get_retries_429_503_504(fake, client, status):
    p = client.predictions.create(model="nolly/roto", input={})
    fault = fake.inject("GET", f"/v1/predictions/{p.id}", status, times=3, headers={"Retry-After": "0"})
    assert client.predictions.get(p.id).id == p.id
    assert fault.hits == 3
    gets = fake.requests_matching("GET", "/v1/predictions/*")
    assert [r.status for r in gets] == [status] * 3 + [200]


def test_get_honours_retry_after_seconds(fake, client):
    p = client.predictions.create(model="nolly/roto", input={})
    fake.inject("GET", "/v1/predictions/*", 429, times=1, headers={"Retry-After": "1"})
    t0 = time.monotonic()
    client.predictions.get(p.id)
    assert 0.9 <= time.monotonic() - t0 < 3


def test_get_retry_gives_up_after_ten_attempts(fake, client):
    p = client.predictions.create(model="nolly/roto", input={})
    fake.inject("GET", "/v1/predictions/*", 503, times=None, headers={"Retry-After": "0"})
    with pytest.raises(ReplicateError) as exc:
        client.predictions.get(p.id)
    assert exc.value.status == 503
    assert len(fake.requests_matching("GET", "/v1/predictions/*")) == 10


@pytest.mark.parametrize("status", [500, 502])
def test_get_500_502_not_retried(fake, client, status):
    p = client.predictions.create(model="nolly/roto", input={})
    fake.inject("GET", "/v1/predictions/*", status, times=1)
    with pytest.raises(ReplicateError) as exc:
        client.predictions.get(p.id)
    assert exc.value.status == status and exc.value.detail == f"injected fault {status}"
    assert len(fake.requests_matching("GET", "/v1/predictions/*")) == 1
    assert client.predictions.get(p.id).id == p.id  # next call is fine


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_create_post_is_not_retried(fake, client, status):
    fake.inject("POST", "/v1/models/*/predictions", status, times=1, headers={"Retry-After": "0"})
    with pytest.raises(ReplicateError) as exc:
        client.predictions.create(model="nolly/roto", input={})
    assert exc.value.status == status
    assert len(fake.requests_matching("POST", "/v1/models/*")) == 1
    assert fake.predictions == {}


def test_cancel_post_is_not_retried(fake, client):
    fake.set_behavior("nolly/forever", Behavior(never_finishes=True))
    p = client.predictions.create(model="nolly/forever", input={})
    fake.inject("POST", "*/cancel", 503, times=1)
    with pytest.raises(ReplicateError):
        client.predictions.cancel(p.id)
    assert fake.canceled_ids == []


def test_connection_reset_is_not_retried_and_raises_httpx_error(fake, client):
    p = client.predictions.create(model="nolly/roto", input={})
    fake.inject_reset("GET", "/v1/predictions/*", times=1)
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        client.predictions.get(p.id)
    assert client.predictions.get(p.id).id == p.id
    fake.inject_reset("POST", "/v1/models/*", times=1)
    with pytest.raises(httpx.TransportError):
        client.predictions.create(model="nolly/roto", input={})


def test_delay(fake):
    slow = replicate.Client(api_token="test-token", base_url=fake.base_url, timeout=httpx.Timeout(0.3))
    p = slow.predictions.create(model="nolly/roto", input={})
    fault = fake.inject_delay("GET", "/v1/predictions/*", 0.6, times=1)
    with pytest.raises(httpx.ReadTimeout):
        slow.predictions.get(p.id)
    assert fault.hits == 1
    fake.inject_delay("GET", "/v1/predictions/*", 0.1, times=1)
    t0 = time.monotonic()
    slow.predictions.get(p.id)
    assert time.monotonic() - t0 >= 0.1


# ----------------------------------------------------------------- files & auth


def test_file_input_is_uploaded_via_files_api(fake, client, tmp_path: Path):
    path = tmp_path / "take1.mov"
    path.write_bytes(b"MOOV" * 1000)
    fake.set_behavior("nolly/roto", Behavior(input_field="video"))
    with path.open("rb") as fh:
        p = client.predictions.create(model="nolly/roto", input={"video": fh, "strength": 0.5})
    upload = fake.requests[0]
    assert (upload.method, upload.path) == ("POST", "/v1/files")
    assert upload.headers["Content-Type"].startswith("multipart/form-data")
    (file_id, uploaded), = fake.files.items()
    assert (uploaded.name, uploaded.content_type, uploaded.data) == ("take1.mov", "video/quicktime", b"MOOV" * 1000)
    assert p.input == {"video": f"{fake.base_url}/v1/files/{file_id}", "strength": 0.5}
    meta = client.files.get(file_id)  # GET /v1/files/<id> is metadata JSON
    assert meta.size == 4000 and meta.urls["get"] == p.input["video"]
    p.wait()
    assert p.output.endswith("/output.mov")
    assert httpx.get(p.output).content == FAKE_PREFIX + b"MOOV" * 1000
    assert httpx.get(f"{fake.base_url}/v1/files/{file_id}/download").content == b"MOOV" * 1000


def test_base64_file_encoding_only_honoured_on_version_path(fake, client):
    """replicate 1.0.7 quirk: Predictions.create(model=...) pops ``wait`` and
    ``file_encoding_strategy`` and does not forward them, so files are always uploaded
    via /v1/files on the model path; the version path inlines a data: URL."""
    fake.set_behavior(f"nolly/roto:{VERSION}", Behavior(starting=0, processing=0))
    p = client.predictions.create(version=VERSION, input={"video": io.BytesIO(b"xyz")},
                                  file_encoding_strategy="base64")
    assert p.input["video"] == "data:application/octet-stream;base64,eHl6"
    assert httpx.get(p.output).content == FAKE_PREFIX + b"xyz"
    assert fake.files == {}
    client.predictions.create(model="nolly/roto", input={"video": io.BytesIO(b"xyz")},
                              file_encoding_strategy="base64")
    assert len(fake.files) == 1


def test_auth(fake, monkeypatch):
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    for token in ("wrong", None):  # None: the client sends no Authorization header at all
        c = replicate.Client(api_token=token, base_url=fake.base_url)
        with pytest.raises(ReplicateError) as exc:
            c.predictions.create(model="nolly/roto", input={})
        assert exc.value.status == 401 and exc.value.title == "Unauthenticated"
    good = replicate.Client(api_token="test-token", base_url=fake.base_url)
    good.predictions.create(model="nolly/roto", input={})
    recs = fake.requests
    assert [r.auth_ok for r in recs] == [False, False, True]
    assert recs[-1].headers["Authorization"] == "Bearer <redacted>"
    assert "Authorization" not in recs[1].headers
    assert recs[-1].headers["User-Agent"] == "replicate-python/1.0.7"


def test_list_predictions(fake, client):
    ids = {client.predictions.create(model="nolly/roto", input={}).id for _ in range(2)}
    assert {p.id for p in client.predictions.list()} == ids


# ----------------------------------------------------------------- standalone


def test_standalone_process_with_remote_control():
    proc = subprocess.Popen(
        [sys.executable, "-m", "nolly_pipeline_tests.fakes.replicate_api", "--port", "0",
         "--behavior", 'nolly/roto={"starting": 0, "processing": 1}'],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2],
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("FAKE_REPLICATE_URL=http://127.0.0.1:")
        url = line.split("=", 1)[1]
        remote = RemoteFakeReplicate(url)
        remote.wait_ready()
        remote.set_behavior("nolly/bad", Behavior(starting=0, processing=0, final_status="failed", error="boom"))
        remote.inject("GET", "/v1/predictions/*", 503, times=1, headers={"Retry-After": "0"})
        c = replicate.Client(api_token="test-token", base_url=url)
        c.poll_interval = 0.01
        p = c.predictions.create(model="nolly/roto", input={"video": io.BytesIO(b"v")})
        p.wait()
        assert p.status == "succeeded" and httpx.get(p.output).content == FAKE_PREFIX + b"v"
        assert c.predictions.create(model="nolly/bad", input={}).error == "boom"
        state = remote.state()
        assert state["predictions"][p.id]["status"] == "succeeded"
        assert state["faults"][0]["hits"] == 1
        assert json.dumps(state)  # JSON-serialisable
    finally:
        proc.terminate()
        assert proc.wait(timeout=5) == 0


def test_concurrent_clients(fake):
    from concurrent.futures import ThreadPoolExecutor

    fake.set_behavior("nolly/roto", Behavior(starting=1, processing=2))
    src = fake.serve_file("c.mp4", b"c")

    def job(i):
        c = replicate.Client(api_token="test-token", base_url=fake.base_url)
        c.poll_interval = 0.005
        p = c.predictions.create(model="nolly/roto", input={"video": src, "i": i})
        p.wait()
        return p.status, p.output

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(job, range(16)))
    assert all(status == "succeeded" for status, _ in results)
    assert len({out for _, out in results}) == 16
    assert all(rec.polls == 3 for rec in fake.predictions.values())
