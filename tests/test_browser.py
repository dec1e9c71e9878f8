"""The app in a real browser (Debian Chromium via Playwright): every view renders, nothing throws."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pytest

from dsn.tools.screenshot import CHROMIUM, chromium, open_example, serve, show_view

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.browser
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="playwright (the Python package) is not installed")

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
VIEWS = [
    ("Verdict", "distance-plot"),
    ("Patch correspondences", "correspondence-plot"),
    ("Detail vs semantics", "dsi-plot"),
    ("Attributions", None),
]


@pytest.fixture(scope="module")
def browser_session() -> Iterator[tuple[Browser, str]]:
    ARTIFACTS.mkdir(exist_ok=True)
    with serve() as (_, url), chromium() as browser:
        yield browser, url


@pytest.fixture
def page(browser_session: tuple[Browser, str]) -> Iterator[Page]:
    """A fresh page per test (tests do not depend on each other's order); fails on any JavaScript error."""
    browser, url = browser_session
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    yield page
    page.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def choose_attribution(page: Page, method: str) -> None:
    """Open the Attributions view and pick ``method`` (its label in the dropdown)."""
    page.locator("#view-tabs").get_by_role("tab", name="Attributions").click()
    page.locator("#attr-method").click()
    page.get_by_role("option", name=method).click()


def test_example_pair_renders_every_view(page: Page) -> None:
    open_example(page, "writer 1: forgery")
    assert page.locator("#verdict-banner .word").inner_text() in ("Genuine", "Forged")
    for tab, plot in VIEWS:
        if plot is None:
            choose_attribution(page, "Saliency")
            page.click("#attr-run")
            plot = "attr-plot"
        show_view(page, tab, plot)
        others = {"Patch correspondences": ["plan-plot", "share-plot"], "Detail vs semantics": ["frequency-plot"]}
        for other in others.get(tab, []):
            page.wait_for_selector(f"#{other} .js-plotly-plot .main-svg")
        page.screenshot(path=str(ARTIFACTS / f"view-{plot}.png"), full_page=True)
    # the plot and the stats line are separate outputs: wait for the stats to arrive too
    page.wait_for_function("() => document.querySelector('#attr-stats').innerText.includes('took')", timeout=60_000)


def test_integrated_gradients_reports_time_and_convergence(page: Page) -> None:
    open_example(page)
    choose_attribution(page, "Integrated Gradients")
    page.wait_for_function("() => document.querySelector('#attr-info').innerText.includes('heavy')")
    steps = page.locator("#attr-steps input[type=number]")
    steps.fill("4")
    steps.press("Enter")
    page.click("#attr-run")
    page.wait_for_function("() => document.querySelector('#attr-stats').innerText.includes('convergence')", timeout=120_000)
    assert "4 steps" in page.locator("#attr-stats").inner_text()


def test_clicking_a_patch_highlights_its_matches(page: Page) -> None:
    open_example(page)
    show_view(page, "Patch correspondences", "correspondence-plot")
    before = page.locator("#patch-select input").input_value()
    title = "() => document.querySelector('#correspondence-plot .gtitle').textContent"
    old_title = page.evaluate(title)
    marker = page.locator("#correspondence-plot .scatterlayer .point").first
    marker.scroll_into_view_if_needed()  # a mouse click only lands inside the viewport
    box = marker.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_function("before => document.querySelector('#patch-select input').value !== before", arg=before, timeout=30_000)
    chosen = page.locator("#patch-select input").input_value()  # e.g. "patch (2, 0) · token 14"
    assert chosen.startswith("patch (")
    label = chosen[len("patch ") : chosen.index(")") + 1]
    page.wait_for_function(f"old => {{ const t = ({title})(); return t !== old && t.includes('{label}'); }}", arg=old_title)
    page.screenshot(path=str(ARTIFACTS / "patch-click.png"), full_page=True)


def test_threshold_slider_redecides(page: Page) -> None:
    open_example(page, "writer 1: genuine pair")
    page.locator("#view-tabs").get_by_role("tab", name="Verdict").click()
    number = page.locator("#threshold input[type=number]")
    number.fill("0")
    number.press("Enter")
    page.wait_for_function("() => document.querySelector('#verdict-banner .word').textContent === 'Forged'", timeout=30_000)
    number.fill(number.get_attribute("max") or "4")
    number.press("Enter")
    page.wait_for_function("() => document.querySelector('#verdict-banner .word').textContent === 'Genuine'", timeout=30_000)


def test_missing_input_shows_an_error_and_the_page_survives(page: Page) -> None:
    open_example(page)
    page.locator("#query-tabs").get_by_role("tab", name="Upload").click()
    page.locator("#query-upload button[aria-label='Remove Image']").click()
    page.click("#verify-button")
    page.wait_for_selector("text=No query signature yet", timeout=30_000)
    open_example(page, "writer 2: genuine pair")


def replace_upload(page: Page, side: str, path: Path) -> None:
    page.locator(f"#{side}-tabs").get_by_role("tab", name="Upload").click()
    page.locator(f"#{side}-upload button[aria-label='Remove Image']").click()
    page.locator(f"#{side}-upload input[type=file]").set_input_files(str(path))


def test_a_refused_pair_leaves_no_earlier_verdict_on_screen(page: Page, tmp_path: Path) -> None:
    """A non-image named .png is refused at its input in our words; a blank page by the model step; neither keeps the old verdict."""
    not_an_image = tmp_path / "x.png"
    not_an_image.write_text("this is text, not a picture")
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((120, 300), 255, np.uint8))
    for bad, message in ((not_an_image, "'x.png' is not an image we can read"), (blank, "No ink found")):
        open_example(page, "writer 1: genuine pair")
        page.wait_for_selector("#verdict-banner .word")
        replace_upload(page, "query", bad)
        page.click("#verify-button")
        page.wait_for_selector(f"text={message}", timeout=60_000)
        page.wait_for_selector("#verdict-refused", timeout=30_000)
        assert page.locator("#verdict-banner").count() == 0, "the previous verdict is still on screen"
        shown = page.locator("body").inner_text()
        assert "preprocess" not in shown and "UnidentifiedImageError" not in shown and "/tmp" not in shown
        page.locator("#view-tabs").get_by_role("tab", name="Patch correspondences").click()
        assert page.locator("#correspondence-plot .js-plotly-plot").count() == 0, "the previous pair's figure is still shown"
        page.locator("#view-tabs").get_by_role("tab", name="Verdict").click()


def test_drawn_signatures_can_be_verified(page: Page) -> None:
    """The two drawing canvases keep repainting in software GL and slow the page down: hence the long timeouts."""
    open_example(page)
    for side, phase in (("reference", 0.0), ("query", 0.7)):
        page.locator(f"#{side}-tabs").get_by_role("tab", name="Draw").click()
        canvas = page.locator(f"#{side}-draw canvas").first
        canvas.wait_for(state="visible", timeout=90_000)  # software-GL canvases are slow to appear on a busy machine
        canvas.scroll_into_view_if_needed()  # mouse events only land inside the viewport
        box = canvas.bounding_box()
        page.mouse.move(box["x"] + 0.15 * box["width"], box["y"] + 0.5 * box["height"])
        page.mouse.down()
        for k in range(10):  # a coarse zigzag is ink enough; each move repaints the canvas, slow in software GL
            t = k / 9
            y = 0.5 + 0.25 * math.sin(8 * t + phase)
            page.mouse.move(box["x"] + (0.15 + 0.7 * t) * box["width"], box["y"] + y * box["height"])
        page.mouse.up()
    old = page.locator("#verdict-banner").inner_text(timeout=90_000)  # software-GL canvases slow a busy machine down
    page.click("#verify-button")
    # the old verdict is cleared first, then the new one arrives
    page.wait_for_function(
        "old => { const b = document.querySelector('#verdict-banner'); return b && b.innerText !== old; }", arg=old, timeout=60_000
    )
    page.screenshot(path=str(ARTIFACTS / "drawn-pair.png"), full_page=True)


def test_closing_the_tab_stops_its_attribution(browser_session: tuple[Browser, str]) -> None:
    """Closing the page ends the visitor's session (Gradio's unload): their running attribution stops computing."""
    import time

    from dsn.ui.jobs import JOBS

    browser, url = browser_session
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(url)
    open_example(page)
    choose_attribution(page, "Integrated Gradients")
    steps = page.locator("#attr-steps input[type=number]")
    steps.fill("128")
    steps.press("Enter")
    page.click("#attr-run")
    deadline = time.monotonic() + 120
    while not [job for job in JOBS.running() if job.checks > 0] and time.monotonic() < deadline:
        time.sleep(0.1)
    (job,) = JOBS.running()
    page.close()
    assert job.finished.wait(90), "the attribution kept computing after its tab closed"
    assert job.reason == "left"


def test_the_checks_view_shows_every_method_and_the_frequency_filters(page: Page) -> None:
    open_example(page, "writer 1: forgery")
    page.locator("#view-tabs").get_by_role("tab", name="Check the explanations").click()
    steps = page.locator("#grid-steps input[type=number]")
    steps.fill("4")
    steps.press("Enter")
    page.click("#grid-run")
    page.wait_for_selector("#grid-plot .js-plotly-plot .main-svg", timeout=180_000)
    assert page.locator("#grid-plot g.imagelayer image").count() == 10  # five methods x two images
    page.locator("#band-choice").get_by_text("LF:", exact=False).click()
    page.wait_for_function("() => document.querySelector('#band-text').innerText.includes('distance')", timeout=60_000)
    text = page.locator("#band-text").inner_text()
    filtered, original = (float(x) for x in re.search(r"distance ([0-9.]+) \(original ([0-9.]+)\)", text).groups())
    assert filtered != original, text
    banner = float(re.search(r"distance ([0-9.]+)", page.locator("#verdict-banner").inner_text()).group(1))
    assert abs(original - banner) <= 1e-3  # the unfiltered distance is the verdict's
    page.click("#report-run")
    page.wait_for_selector("#report-files a", timeout=120_000)
    assert page.locator("#report-files a").count() == 2  # the HTML report and its JSON
    page.locator("#grid-plot").screenshot(path=str(ARTIFACTS / "checks-grid.png"))


def test_the_sanity_check_shows_its_estimate_and_step_by_step_progress(page: Page) -> None:
    """A check that runs for minutes says what it will cost, then where it is (the page is closed before it ends)."""
    open_example(page, "writer 1: forgery")
    page.locator("#view-tabs").get_by_role("tab", name="Check the explanations").click()
    estimate = page.locator("#grid-estimate").inner_text()
    assert re.search(r"sanity check \(one image, \d+ steps\): about \d+ s", estimate), estimate
    page.click("#sanity-run")
    page.wait_for_selector("text=/trained model: .* of 5 maps|step \\d+ of \\d+:/", timeout=120_000)


def test_the_reference_set_shows_whole_thumbnails_and_one_clear_refusal(page: Page, tmp_path: Path) -> None:
    page.locator("#main-tabs").get_by_role("tab", name="Reference set", exact=True).click()
    page.locator("#refset-references input[type=file]").set_input_files(
        [str(EXAMPLES / "writer1_reference.png"), str(EXAMPLES / "writer2_reference.png")]
    )
    page.locator("#refset-query input[type=file]").set_input_files(str(EXAMPLES / "writer1_genuine.png"))
    page.click("#refset-compare")
    page.wait_for_selector("#refset-gallery img", timeout=120_000)
    fits = page.evaluate("() => [...document.querySelectorAll('#refset-gallery img')].map((i) => getComputedStyle(i).objectFit)")
    assert fits and set(fits) == {"contain"}, fits
    cut = page.evaluate(
        "() => [...document.querySelectorAll('#refset-gallery .caption-label')].filter((c) => c.scrollWidth > c.clientWidth + 1).length"
    )
    assert cut == 0, f"{cut} captions are cut"
    not_an_image = tmp_path / "x.png"
    not_an_image.write_text("text")
    page.locator("#refset-query button[aria-label='Remove Image']").click()
    page.locator("#refset-query input[type=file]").set_input_files(str(not_an_image))
    page.click("#refset-compare")
    page.wait_for_selector("#refset-refused", timeout=60_000)
    assert page.locator("#refset-gallery img").count() == 0, "the previous comparison stays beside the refusal"
    errors = page.evaluate(
        "() => [...document.querySelectorAll('#refset-gallery .error, #refset-table .error, #refset-correspondence .error')].length"
    )
    assert errors == 0, "'Error' shown on every output"


def test_a_new_reference_upload_replaces_the_set(page: Page) -> None:
    page.locator("#main-tabs").get_by_role("tab", name="Reference set", exact=True).click()
    files = page.locator("#refset-references input[type=file]")
    files.set_input_files([str(EXAMPLES / "writer1_reference.png"), str(EXAMPLES / "writer2_reference.png")])
    page.wait_for_function("() => document.querySelector('#refset-references').innerText.includes('writer2_reference')")
    files.set_input_files([str(EXAMPLES / "writer3_reference.png")])
    page.wait_for_function("() => document.querySelector('#refset-references').innerText.includes('writer3_reference')")
    page.wait_for_timeout(1500)  # the replacing update follows the upload
    listed = page.locator("#refset-references").inner_text()
    assert "writer3_reference" in listed and "writer1_reference" not in listed and "writer2_reference" not in listed, listed


def test_a_slow_action_says_how_long_the_visitor_waited(page: Page) -> None:
    """Besides the server's compute time, the answer states the wall time from the press (queue and transfer included)."""
    open_example(page)
    choose_attribution(page, "Saliency")
    page.click("#attr-run")
    page.wait_for_function("() => document.querySelector('#attr-stats').innerText.includes('you waited')", timeout=120_000)
    text = page.locator("#attr-stats").inner_text()
    took, waited = (float(x) for x in re.search(r"took ([0-9.]+) s.* you waited ([0-9.]+) s", text, re.S).groups())
    assert waited >= took - 0.05, text  # the wait includes the computation
