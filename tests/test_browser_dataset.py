"""Browser test of the dataset explorer: `python app.py --data-root <tmp>` in Debian's Chromium.

Evaluates a small dataset built in tmp_path, checks the metrics, curves and
error list appear, then clicks an error and expects the pair views to verify
that pair. Screenshots go to test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import cv2
import pytest

from dsn.tools.screenshot import CHROMIUM, CHROMIUM_ARGS
from dsn.ui.tabs.dataset import ERROR_COLUMNS

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"
ARTIFACTS = REPO / "test-artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed"),
]


def build_small_dataset(root: Path) -> Path:
    """Two writers, 3 genuine + 2 forged each: real CEDAR test files when present, else dsn.data.synth."""
    dataset = root / "mini"
    for writer in (11, 16):
        for class_name, count in (("genuine", 3), ("forged", 2)):
            folder = dataset / f"{writer:03d}" / class_name
            folder.mkdir(parents=True)
            for index in range(1, count + 1):
                source = DATASETS / "cedar" / f"{writer:03d}" / class_name / f"{index:02d}.png"
                if source.is_file():
                    shutil.copy(source, folder / source.name)
                    continue
                from dsn.data.synth import SyntheticWriter

                person = SyntheticWriter(writer)
                image = person.genuine(index) if class_name == "genuine" else person.forgery(index)
                cv2.imwrite(str(folder / f"{index:02d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    (root / "splits.json").write_text(json.dumps({"mini": {"train": [], "val": [], "test": [11, 16]}}))
    return dataset


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def app_url(tmp_path: Path):
    # the data root lies outside the working directory and the temp dir, as on a real server: Gradio serves
    # neither of those by itself, so every way of opening a pair must go through the app's own copies
    data = Path(tempfile.mkdtemp(prefix="dsn-test-data-", dir=Path.home()))
    build_small_dataset(data)
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DSN_CACHE_DIR": str(tmp_path / "cache"), "GRADIO_ANALYTICS_ENABLED": "False"}
    log = (tmp_path / "app.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "app.py", "--data-root", str(data), "--port", str(port)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            if server.poll() is not None:
                pytest.fail(f"app exited with {server.returncode}:\n{(tmp_path / 'app.log').read_text()[-3000:]}")
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("app did not start within 180 s")
                time.sleep(1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
        shutil.rmtree(data, ignore_errors=True)


@contextlib.contextmanager
def dataset_page(app_url: str):
    """A large Chromium page on the app's Dataset explorer tab."""
    playwright = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1800})
        page.set_default_timeout(240_000)
        try:
            page.goto(app_url)
            page.get_by_role("tab", name="Dataset explorer").click()
            yield page
        finally:
            browser.close()


def test_evaluate_small_dataset_and_open_an_error(app_url):
    with dataset_page(app_url) as page:
        page.locator("#dataset-evaluate").click()
        headline = page.locator("#dataset-headline")
        headline.wait_for()
        assert "EER" in headline.inner_text() and "FAR" in headline.inner_text()
        assert "2 writers" in page.locator("#dataset-status").inner_text()
        assert "10 images" in page.locator("#dataset-status").inner_text()
        page.locator("#dataset-roc .js-plotly-plot").wait_for()
        page.locator("#dataset-histogram .js-plotly-plot").wait_for()
        accepts, rejects = page.locator("#dataset-false-accepts"), page.locator("#dataset-false-rejects")
        accepts.locator("[role=gridcell]").first.wait_for()
        assert accepts.locator("img").count() >= 2  # thumbnails of the pairs
        assert page.locator("#dataset-writers").get_by_text("16", exact=True).count() >= 1
        page.screenshot(path=str(ARTIFACTS / "dataset-explorer.png"), full_page=True)

        # open the worst false reject (a genuine-genuine pair) in the pair views
        cells = rejects.locator("[role=gridcell]")
        table_distance = float(cells.nth(ERROR_COLUMNS.index("distance")).inner_text())
        cells.first.click()
        banner = page.locator("#verdict-banner")
        banner.wait_for()
        assert page.get_by_role("tab", name="Verify a pair").get_attribute("aria-selected") == "true"
        shown = float(re.search(r"distance ([0-9.]+)", banner.inner_text()).group(1))
        assert abs(shown - table_distance) <= 1e-3  # the same pair, the same distance (both rounded for display)
        page.locator("#reference-upload img").first.wait_for()
        page.screenshot(path=str(ARTIFACTS / "dataset-explorer-opened-pair.png"), full_page=True)
        page.get_by_role("tab", name="Dataset explorer").click()

        # a threshold picked with the slider is reported as the user's, not as the checkpoint's
        number = page.locator("#dataset-threshold input[type=number]")
        number.fill("0.3")
        number.press("Enter")
        page.wait_for_function(
            "() => document.querySelector('#dataset-metrics').textContent.includes('chosen by the user')", timeout=60_000
        )

        # open the worst false accept: its ground truth, names and the explorer's threshold come with it
        accept_cells = accepts.locator("[role=gridcell]")
        accept_cells.first.wait_for()
        query_name = accept_cells.nth(ERROR_COLUMNS.index("query")).inner_text()
        accept_cells.first.click()
        context = page.locator("#pair-context")
        context.wait_for()
        assert "known forgery" in context.inner_text() and query_name in context.inner_text()
        assert "threshold 0.300" in context.inner_text()
        # judged at the explorer's threshold, not the checkpoint's
        page.wait_for_function(
            "() => (document.querySelector('#verdict-banner') || {innerText: ''}).innerText.includes('threshold 0.300')", timeout=60_000
        )


def test_frequency_filters_and_the_embedding_map_open_a_pair(app_url):
    """The explorer's research views: EER per frequency filter, and two clicks on the map open that pair."""
    with dataset_page(app_url) as page:
        page.locator("#bands-run").click()
        page.locator("#bands-eer-plot .js-plotly-plot").wait_for()
        page.locator("#bands-table [role=gridcell]").first.wait_for()
        table = page.locator("#bands-table").inner_text()
        assert all(label in table for label in ("original", "LF:", "LMF:", "LHF:")), table
        page.locator("#map-run").click()
        page.locator("#embedding-map .js-plotly-plot").wait_for()
        page.wait_for_timeout(500)
        page.locator("#embedding-map").screenshot(path=str(ARTIFACTS / "embedding-map.png"))
        emit = "index => document.querySelector('#embedding-map .js-plotly-plot').emit('plotly_click', {points: [{customdata: index}]})"
        page.evaluate(emit, 0)
        page.wait_for_function("() => document.querySelector('#map-picked').innerText.includes('click a second point')")
        page.evaluate(emit, 4)  # writer 11's first genuine and its second forgery (images are listed genuine first)
        page.locator("#verdict-banner").wait_for()
        assert page.get_by_role("tab", name="Verify a pair").get_attribute("aria-selected") == "true"
        context = page.locator("#pair-context").inner_text()
        assert "Embedding map" in context and "same writer" in context and "forged" in context
        assert "Cannot move" not in page.locator("body").inner_text() and str(Path.home()) not in page.locator("body").inner_text()
