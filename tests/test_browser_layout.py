"""The app at a laptop and a phone size (Debian Chromium): no sideways scrolling on any tab, the verdict in
view after an example, and the example's ground truth said above it. Each test has its own page."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from dsn.tools.screenshot import CHROMIUM, chromium, open_example, serve

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.browser
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="playwright (the Python package) is not installed")

SIZES = {"laptop": (1366, 768), "phone": (390, 844)}
MAIN_TABS = ["Verify a pair", "Dataset explorer", "Reference set"]
VIEW_TABS = ["Verdict", "Patch correspondences", "Detail vs semantics", "Attributions"]


@pytest.fixture(scope="module")
def app_browser() -> Iterator[tuple[Browser, str]]:
    with serve() as (_, url), chromium() as browser:
        yield browser, url


@pytest.fixture(params=list(SIZES), ids=list(SIZES))
def page(request: pytest.FixtureRequest, app_browser: tuple[Browser, str]) -> Iterator[Page]:
    browser, url = app_browser
    width, height = SIZES[request.param]
    page = browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    page.wait_for_selector("#verify-button", timeout=120_000)
    yield page
    page.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def overflow(page: Page) -> int:
    """Pixels the page is wider than the window (0: no sideways scrolling)."""
    return int(page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth"))


def select_tab(page: Page, container: str, name: str) -> None:
    """Click a tab by its visible label (every tab is in the bar at both sizes)."""
    page.locator(container).get_by_role("tab", name=name, exact=True).click()
    page.wait_for_timeout(600)


def test_after_an_example_the_verdict_is_in_view_under_its_ground_truth(page: Page) -> None:
    open_example(page, "writer 1: forgery")
    page.wait_for_timeout(800)  # the scroll runs after the verdict arrives
    top, height = page.evaluate("() => [document.querySelector('#verdict-banner').getBoundingClientRect().top, window.innerHeight]")
    assert 0 <= top < height - 60, f"verdict at y={top:.0f} of a {height} px window"
    context = page.locator("#pair-context").inner_text()
    assert "forgery" in context and "writer1_forged.png" in context
    page.click("#verify-button")  # the user's own verification: the example's ground truth no longer applies
    page.wait_for_selector("#pair-context", state="detached", timeout=30_000)
    open_example(page, "paper vs phone: another person")  # a real pair, credited
    context = page.locator("#pair-context").inner_text()
    assert "another person writing the same name" in context and "Luo et al. 2023" in context, context


def test_no_tab_scrolls_sideways(page: Page) -> None:
    open_example(page)
    for view in VIEW_TABS:
        select_tab(page, "#view-tabs", view)
        assert overflow(page) <= 0, f"{view}: {overflow(page)} px too wide"
    for tab in MAIN_TABS[1:]:
        select_tab(page, "#main-tabs", tab)
        assert overflow(page) <= 0, f"{tab}: {overflow(page)} px too wide"


def test_a_reference_set_result_fits_the_screen_and_names_the_deciding_rule(page: Page) -> None:
    """Its four-column gallery and its tables made a phone scroll sideways by over 100 px once a comparison was shown."""
    examples = Path(__file__).resolve().parents[1] / "assets" / "examples"
    select_tab(page, "#main-tabs", "Reference set")
    references = [examples / name for name in ("writer1_reference.png", "writer1_genuine.png", "writer2_reference.png")]
    page.locator("#refset-references input[type=file]").set_input_files([str(path) for path in references])
    page.locator("#refset-query input[type=file]").set_input_files(str(examples / "writer1_forged.png"))
    page.click("#refset-compare")
    page.wait_for_selector("#refset-correspondence .js-plotly-plot", timeout=120_000)
    page.wait_for_timeout(300)  # the phone layout of the figure
    assert overflow(page) <= 0, f"{overflow(page)} px too wide"
    decision = page.locator("#refset-decision").inner_text()
    assert "rule (decides)" in decision and "chosen on validation writers" in decision, decision
    covered = page.evaluate(
        """() => { const g = document.querySelector('#refset-gallery'), box = (e) => e.getBoundingClientRect();
                   const over = (a, b) => Math.max(0, Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top))
                                          * Math.max(0, Math.min(a.right, b.right) - Math.max(a.left, b.left));
                   const label = box(g.querySelector('label, [data-testid=block-label]'));
                   return [...g.querySelectorAll('.thumbnail-item')].map((item) => {
                       const img = box(item.querySelector('img'));
                       return over(box(item.querySelector('.caption-label')), img) + over(label, img); }); }"""
    )
    assert len(covered) == 4 and max(covered) < 1, f"captions or the gallery's label cover a signature ({covered} px²)"


def test_a_missing_input_gets_a_message_and_no_old_verdict_stays(page: Page) -> None:
    open_example(page)
    page.locator("#query-upload button[aria-label='Remove Image']").click()
    page.click("#verify-button")
    page.wait_for_selector(".validation-error", timeout=30_000)
    assert "No query signature yet" in page.locator(".validation-error").first.inner_text()
    assert page.locator("#verdict-banner").count() == 0, "the previous pair's verdict must not sit beside the refusal"
    assert "No query signature yet" in page.locator("#verdict-refused").inner_text()
    badges = page.evaluate("() => [...document.querySelectorAll('#view-tabs .error, #verdict-area .error')].length")
    assert badges == 0, "no error badges over the views"


def test_every_view_has_a_visible_label_and_titles_are_not_cut(page: Page) -> None:
    """No view hides behind an unlabelled "..." menu, and a figure's title fits its figure at both sizes."""
    open_example(page)
    for tab in [*VIEW_TABS, "Check the explanations"]:
        assert page.locator("#view-tabs").get_by_role("tab", name=tab).is_visible(), f"{tab} is not a visible tab"
    assert not page.locator("#view-tabs .overflow-menu button").is_visible(), "a view hides behind the '...' menu"
    views = {"correspondence-plot": "Patch correspondences", "share-plot": "Patch correspondences", "plan-plot": "Patch correspondences"}
    views |= {"dsi-plot": "Detail vs semantics", "distance-plot": "Verdict"}
    for plot, tab in views.items():
        select_tab(page, "#view-tabs", tab)
        page.wait_for_selector(f"#{plot} .js-plotly-plot .gtitle", state="attached", timeout=60_000)
        page.wait_for_timeout(800)  # the phone layout redraws once after Plotly's first draw
        shown = page.evaluate(
            """id => { const gd = document.querySelector(`#${id} .js-plotly-plot`), box = (e) => e.getBoundingClientRect();
                       const rect = (r) => [r.left, r.top, r.right, r.bottom];
                       return { title: rect(box(gd.querySelector('.gtitle'))), figure: rect(box(gd)),
                                labels: [...gd.querySelectorAll('.annotation')].map((a) => rect(box(a))),
                                panels: [...gd.querySelectorAll('.nsewdrag')].map((d) => box(d).width) }; }""",
            plot,
        )
        left, _, right, _ = shown["figure"]
        for name, (x0, _, x1, _) in [("title", shown["title"]), *(("label", r) for r in shown["labels"])]:
            assert left - 1 <= x0 and x1 <= right + 1, f"{plot}: a {name} runs out of the figure"
        labels = shown["labels"]
        for i, a in enumerate(labels):  # panel labels must not run into one another
            for b in labels[i + 1 :]:
                overlap = min(a[2], b[2]) - max(a[0], b[0]) > 2 and min(a[3], b[3]) - max(a[1], b[1]) > 2
                assert not overlap, f"{plot}: two panel labels overlap"
        toolbar = page.locator(f"#{plot} .modebar-container")
        if page.viewport_size["width"] <= 600:
            assert not toolbar.is_visible(), f"{plot}: the toolbar covers the labels on a phone"
            if plot in ("dsi-plot", "share-plot"):  # image panels one per row, nearly as wide as the phone
                assert min(shown["panels"]) >= 0.6 * page.viewport_size["width"], f"{plot}: panels {shown['panels']}"
