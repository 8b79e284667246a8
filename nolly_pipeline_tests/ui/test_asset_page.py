"""A finished job as the operator sees it in the Dagster UI: checks, numbers, the preview.

GraphQL (the UI's own queries) checks what the asset page is built from; a real headless
Chromium (Debian's ``chromium``, driven by Playwright) opens the page and proves the preview
image loads and the checks are listed. Without Chromium the browser test skips, saying why,
except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

from nolly_pipeline.processing.checks import CHECKS
from nolly_pipeline_tests.fakes.replicate_api import Behavior
from nolly_pipeline_tests.media import tiny_video
from nolly_pipeline_tests.ui import webserver as ui
from nolly_pipeline_tests.ui.conftest import GRADE_MODEL, Studio

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SHOTS = Path(os.environ.get("NOLLY_UI_SCREENSHOTS", "/tmp/nolly-ui-screenshots"))

_MATERIALIZATION = """
query AssetMaterialization($assetKey: AssetKeyInput!, $partition: String!) {
  assetOrError(assetKey: $assetKey) {
    ... on Asset { assetMaterializations(partitions: [$partition], limit: 1) {
      runId partition
      metadataEntries { label __typename
        ... on MarkdownMetadataEntry { mdStr } ... on FloatMetadataEntry { floatValue }
        ... on IntMetadataEntry { intValue } ... on TextMetadataEntry { text } ... on UrlMetadataEntry { url } }
    } }
  }
}"""


@pytest.fixture(scope="module")
def graded(studio: Studio) -> uuid.UUID:
    """A colour grade through the sensor whose "model" hands the clip back unchanged: a real,
    decodable output, so every check passes and the preview renders."""
    studio.fake.set_behavior(GRADE_MODEL, Behavior(starting=0, processing=1, transform=lambda data: data))
    try:
        job_id = studio.submit("color-grade", tiny_video(10, 96), "mp4")
        row = studio.wait_final(job_id, attempt=1)
    finally:
        studio.fake.set_behavior(GRADE_MODEL, Behavior(starting=0, processing=1))
    assert row.status == "done", row.error_message
    return job_id


def materialization(studio: Studio, asset: str, partition: str) -> dict[str, Any]:
    result = studio.server.graphql(_MATERIALIZATION, {"assetKey": {"path": [asset]}, "partition": partition})
    (event,) = result["assetOrError"]["assetMaterializations"]
    return {e["label"]: e for e in event["metadataEntries"]}


def test_checks_metadata_and_preview_through_graphql(studio: Studio, graded: uuid.UUID) -> None:
    row = studio.row(graded)
    for asset in ("roto", "color_grade", "audio_clean"):
        assert set(ui.check_names(studio.server, asset)) == set(CHECKS[asset.replace("_", "-")])
    evaluated = ui.checks_of_run(studio.server, "color_grade", row.dagster_run_id or "")
    assert {n: e["status"] for n, e in evaluated.items()} == {n: "SUCCEEDED" for n in CHECKS["color-grade"]}
    assert all(c["passed"] for c in row.output_data["metadata"]["checks"])

    meta = materialization(studio, "color_grade", str(graded))
    assert meta["preview"]["mdStr"].startswith("![preview](data:image/png;base64,")
    assert len(meta["preview"]["mdStr"]) < 150_000
    assert meta["input_duration_seconds"]["floatValue"] == pytest.approx(0.4, abs=0.05)
    assert meta["frames"]["intValue"] == 10 and meta["attempt"]["intValue"] == 1
    assert meta["processing_seconds"]["floatValue"] > 0 and meta["realtime_factor"]["floatValue"] > 0
    assert meta["backend"]["text"] == "replicate" and meta["model"]["text"] == GRADE_MODEL
    assert meta["output_url"]["url"] == row.output_data["output_url"]
    (preview,) = [f for f in row.output_data["files"] if f["role"] == "preview"]
    assert preview["url"] != row.output_data["output_url"] and preview["content_type"] == "image/png"


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def browser_page() -> Iterator[Any]:
    executable = chromium_path()
    if executable is None:
        reason = "no chromium binary (Debian: apt-get install -y chromium; `make test-deps` does it as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser test must run under CI: {reason}")
        print(f"\nskipping the browser test: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            yield page
        finally:
            browser.close()


def test_the_asset_page_shows_the_preview_and_lists_the_checks(studio: Studio, graded: uuid.UUID) -> None:
    """The partition (= job) on the asset's Partitions tab: its metadata, with the preview one
    click away ("Show Markdown" renders it); then the asset's Checks tab."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    # The UI's own call when an operator skips the "Join the Dagster community" dialog, which
    # would otherwise cover a fresh instance's pages a second after they load.
    studio.server.graphql("mutation SetNuxSeen { setNuxSeen }")
    with browser_page() as page:
        page.goto(f"{studio.server.url}/assets/color_grade?view=partitions&partition={graded}",
                  wait_until="networkidle")
        row = page.locator("tr", has_text="preview").filter(has_text="Show Markdown")
        row.get_by_text("Show Markdown").click()
        image = page.locator('img[src^="data:image/png"]').first
        image.wait_for(state="visible", timeout=20_000)
        page.wait_for_function("img => img.complete", arg=image.element_handle(), timeout=20_000)
        width = image.evaluate("img => img.naturalWidth")
        page.screenshot(path=str(SHOTS / "preview.png"))
        assert width > 0, "the preview image did not load"

        page.goto(f"{studio.server.url}/assets/color_grade?view=checks", wait_until="networkidle")
        for name in CHECKS["color-grade"]:
            page.get_by_text(name, exact=True).first.wait_for(state="visible", timeout=20_000)
        page.screenshot(path=str(SHOTS / "checks.png"))
        listed = page.locator("body").inner_text()
        assert all(name in listed for name in CHECKS["color-grade"]) and "Succeeded" in listed
