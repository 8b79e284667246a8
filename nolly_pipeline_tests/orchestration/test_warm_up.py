"""The zygote's preload (``warm_up``) covers what every run uses.

A forked worker starts with whatever the zygote imported and built; anything else it imports
or builds on first use, every run: the libraries of the checks and the preview (with all
three types on Replicate, no local processor pulls the media stack in), and the S3 client.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nolly_pipeline_tests.test_imports import REPLICATE, run_isolated

SCRIPT = """
import json, math, struct, sys, tempfile, wave
from pathlib import Path

import pytest
import nolly_pipeline.orchestration.warm_up
before = {name.split(".")[0] for name in sys.modules}
from nolly_pipeline.processing import checks, media, previews
from nolly_pipeline.processing.base import OutputFile
folder = Path(tempfile.mkdtemp())
wav = folder / "take.wav"
with wave.open(str(wav), "wb") as out:  # 1 s of 440 Hz, written with the standard library only
    out.setnchannels(1)
    out.setsampwidth(2)
    out.setframerate(48000)
    out.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * n / 48000)))
                             for n in range(48000)))
media.probe(wav)
checks.loudness(wav)
previews.render_preview("audio-clean", wav, [OutputFile(path=wav, role="audio", content_type="audio/wav")],
                        folder / "preview")
after = {name.split(".")[0] for name in sys.modules}
print(json.dumps(sorted(after - before)))
"""


def test_publish_imports_no_library_the_zygote_did_not_preload(tmp_path: Path) -> None:
    assert run_isolated(tmp_path, SCRIPT, REPLICATE) == []


S3_SCRIPT = """
import json
import nolly_pipeline.orchestration.warm_up
from nolly_pipeline.orchestration.resources import s3_store
built = s3_store.cache_info().misses
import nolly_pipeline.definitions as location
location.defs.resources["storage"].process_config_and_initialize().store()
print(json.dumps(s3_store.cache_info().misses - built))
"""


@pytest.mark.parametrize(("keys", "built_by_the_run"), [(True, 0), (False, 1)], ids=["keys", "no-keys"])
def test_the_run_takes_the_s3_client_the_zygote_built(tmp_path: Path, keys: bool, built_by_the_run: int) -> None:
    """With keys in the environment, the storage resource of a run gets the client built
    before the fork; without, the run builds its own (the zygote looks no credentials up)."""
    env = {"NOLLY_STORAGE": "s3", "NOLLY_S3_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_REGION": "us-east-1"}
    if keys:
        env.update({"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"})
    assert run_isolated(tmp_path, S3_SCRIPT, env) == built_by_the_run
