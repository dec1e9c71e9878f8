"""The app in a real browser (Debian Chromium via Playwright): every view renders, nothing throws."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from dsn.ui.screenshot import CHROMIUM, chromium, open_example, serve, show_view

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="playwright (the Python package) is not installed")

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
VIEWS = [
    ("Verdict", "distance-plot"),
    ("Patch correspondences", "correspondence-plot"),
    ("Detail vs semantics", "dsi-plot"),
    ("Attributions", None),
]


@pytest.fixture(scope="module")
def browser_session() -> Iterator[tuple[Page, list[str]]]:
    ARTIFACTS.mkdir(exist_ok=True)
    with serve() as (_, url), chromium() as browser:
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url)
        yield page, errors


@pytest.fixture
def page(browser_session: tuple[Page, list[str]]) -> Iterator[Page]:
    """The shared page; every test fails if the page threw a JavaScript error meanwhile."""
    page, errors = browser_session
    yield page
    assert not errors, f"JavaScript errors on the page: {errors}"


def test_example_pair_renders_every_view(page: Page) -> None:
    open_example(page, "writer 1: forgery")
    assert page.locator("#verdict-banner .word").inner_text() in ("Genuine", "Forged")
    for tab, plot in VIEWS:
        if plot is None:
            page.locator("#view-tabs").get_by_role("tab", name=tab).click()
            page.locator("#attr-method").click()
            page.get_by_role("option", name="Saliency").click()
            page.click("#attr-run")
            plot = "attr-plot"
        show_view(page, tab, plot)
        if tab == "Detail vs semantics":
            page.wait_for_selector("#frequency-plot .js-plotly-plot .main-svg")
        page.screenshot(path=str(ARTIFACTS / f"view-{plot}.png"), full_page=True)
    assert "took" in page.locator("#attr-stats").inner_text()


def test_clicking_a_patch_highlights_its_matches(page: Page) -> None:
    show_view(page, "Patch correspondences", "correspondence-plot")
    before = page.locator("#patch-select input").input_value()
    marker = page.locator("#correspondence-plot .scatterlayer .point").first
    box = marker.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_function("before => document.querySelector('#patch-select input').value !== before", arg=before, timeout=30_000)
    assert page.locator("#patch-select input").input_value().startswith("patch (")
    page.wait_for_function("() => document.querySelector('#correspondence-plot .gtitle').textContent.includes('selected')")
    page.screenshot(path=str(ARTIFACTS / "patch-click.png"), full_page=True)


def test_threshold_slider_redecides(page: Page) -> None:
    page.locator("#view-tabs").get_by_role("tab", name="Verdict").click()
    number = page.locator("#threshold input[type=number]")
    number.fill("0")
    number.press("Enter")
    page.wait_for_function("() => document.querySelector('#verdict-banner .word').textContent === 'Forged'", timeout=30_000)
    number.fill("3")
    number.press("Enter")
    page.wait_for_function("() => document.querySelector('#verdict-banner .word').textContent === 'Genuine'", timeout=30_000)


def test_drawn_signatures_can_be_verified(page: Page) -> None:
    for side, phase in (("reference", 0.0), ("query", 0.7)):
        page.locator(f"#{side}-tabs").get_by_role("tab", name="Draw").click()
        canvas = page.locator(f"#{side}-draw canvas").first
        canvas.wait_for()
        box = canvas.bounding_box()
        page.mouse.move(box["x"] + 0.15 * box["width"], box["y"] + 0.5 * box["height"])
        page.mouse.down()
        for k in range(40):
            t = k / 39
            y = 0.5 + 0.2 * math.sin(10 * t + phase)
            page.mouse.move(box["x"] + (0.15 + 0.7 * t) * box["width"], box["y"] + y * box["height"], steps=2)
        page.mouse.up()
    old = page.locator("#verdict-banner").inner_text()
    page.click("#verify-button")
    page.wait_for_function("old => document.querySelector('#verdict-banner').innerText !== old", arg=old, timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "drawn-pair.png"), full_page=True)


def test_missing_input_shows_an_error_and_the_page_survives(page: Page) -> None:
    page.locator("#query-tabs").get_by_role("tab", name="Upload").click()
    page.locator("#query-upload button[aria-label='Clear']").click()
    page.click("#verify-button")
    page.wait_for_selector("text=No query signature yet", timeout=30_000)
    open_example(page, "writer 2: genuine pair")
